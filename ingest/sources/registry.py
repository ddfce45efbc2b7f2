"""Choosing an adapter: the source kind of a path or URL, and :func:`open_source`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import SourceError
from .arrow_ipc import ArrowIpcSource
from .base import SOURCE_KINDS, Source
from .csv import CsvOptions, CsvSource
from .frames import FrameSource
from .jsonl import JsonLinesSource
from .parquet import ParquetSource
from .sql import SqlSource

_EXTENSIONS: dict[str, str] = {
    ".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".tab": "tsv",
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow", ".arrows": "arrow",
}


_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql", "oracle", "duckdb")


def detect_kind(location: str | Path) -> str:
    """The source kind of a path or URI: its extension, or a database URL's scheme."""
    text = str(location)
    scheme = text.split(":", 1)[0].split("+", 1)[0].lower() if "://" in text else ""
    if scheme in _SQL_SCHEMES:
        return "sql"
    suffixes = [s.lower() for s in Path(text).suffixes]
    for s in reversed(suffixes):
        if s in (".gz", ".bz2", ".zst"):
            continue
        if s in _EXTENSIONS:
            return _EXTENSIONS[s]
        break
    raise SourceError(f"{text}: cannot tell the source kind from the extension; "
                      f"give kind= one of {', '.join(SOURCE_KINDS)}")


def open_source(location: Any, *, kind: str | None = None, delimiter: str | None = None,
                quote_char: str | None = '"', encoding: str = "utf-8",
                null_values: list[str] | None = None, multiline: bool = False,
                query: str | None = None, table: str | None = None,
                name: str | None = None) -> Source:
    """Open a source: a file path, a database URL, an in-process frame, or a Source.

    ``kind`` forces the adapter (csv, tsv, parquet, jsonl, arrow, sql, frame); otherwise it is
    chosen from the extension or URL scheme. CSV options apply to csv/tsv only; ``query`` or
    ``table`` to SQL only.
    """
    if isinstance(location, Source):
        return location
    if not isinstance(location, str | Path):
        if kind not in (None, "frame"):
            raise SourceError(f"a {type(location).__name__} can only be read as kind='frame'")
        return FrameSource(location, name)
    if kind is not None and kind not in SOURCE_KINDS:
        raise SourceError(f"unknown source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    kind = kind or detect_kind(location)
    if kind == "sql":
        return SqlSource(str(location), query=query, table=table)
    if query is not None or table is not None:
        raise SourceError(f"{location}: query= and table= apply to SQL sources only")
    if kind in ("csv", "tsv"):
        opts = CsvOptions(
            delimiter=delimiter or ("\t" if kind == "tsv" else ","), quote_char=quote_char,
            encoding=encoding, null_values=list(null_values if null_values is not None else [""]),
            multiline=multiline)
        return CsvSource(location, opts)
    if kind == "parquet":
        return ParquetSource(location)
    if kind == "jsonl":
        return JsonLinesSource(location, encoding=encoding)
    if kind == "arrow":
        return ArrowIpcSource(location)
    raise SourceError(f"{location}: kind {kind!r} needs an in-process object, not a path")
