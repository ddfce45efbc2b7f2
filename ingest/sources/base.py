"""What every source is: the :class:`Source` base class and the :class:`Chunk` it yields.

A chunk is a record batch plus where its rows came from (1-based row numbers and, for text
files, line numbers), so validation errors can point at ``file:line``. The helpers here are
shared by the adapters (file checks, re-batching, column-name checks, short messages).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa

from ..errors import SourceError

SourceKind = Literal["csv", "tsv", "parquet", "jsonl", "arrow", "sql", "frame"]
SOURCE_KINDS: tuple[str, ...] = ("csv", "tsv", "parquet", "jsonl", "arrow", "sql", "frame")
DEFAULT_BATCH_ROWS = 65_536


@dataclass
class Chunk:
    """One record batch of a source with the provenance of its rows.

    ``first_row`` is the 1-based number of the batch's first data row in the source (rows the
    reader rejected as malformed are counted too). ``lines`` holds, for text files, each row's
    1-based line number in the file.
    """

    batch: pa.RecordBatch
    first_row: int
    lines: np.ndarray | None = None
    row_numbers: np.ndarray | None = None
    """Each row's 1-based row number, when rows of the batch are not consecutive."""
    nul_free: bool = False
    """True when the reader knows no value of the batch holds a NUL character (a CSV block
    without a NUL byte), so validation can skip that check."""

    def rows(self) -> np.ndarray:
        if self.row_numbers is not None:
            return self.row_numbers
        return np.arange(self.first_row, self.first_row + self.batch.num_rows, dtype=np.int64)


@dataclass
class MalformedRow:
    """A row the reader could not parse (wrong field count, invalid JSON, ...)."""

    row: int | None
    line: int | None
    text: str
    reason: str


class Source(ABC):
    """A readable source of record batches. Iterate :meth:`chunks` once per read."""

    kind: str = ""
    has_lines: bool = False

    def __init__(self, name: str) -> None:
        self.name = name
        self._malformed: list[MalformedRow] = []
        self._malformed_lock = threading.Lock()
        self.tolerate_malformed = False
        """When True, malformed rows are recorded (see :meth:`take_malformed`), not raised."""

    @abstractmethod
    def chunks(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Chunk]:
        """Stream the source as chunks of at most ``batch_rows`` rows."""

    def batches(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        for c in self.chunks(batch_rows):
            yield c.batch

    def reader(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> pa.RecordBatchReader:
        """A RecordBatchReader over the source (its schema comes from the first batch)."""
        it = self.batches(batch_rows)
        first = next(it, None)
        if first is None:
            raise SourceError(f"{self.name}: no rows")

        def all_batches() -> Iterator[pa.RecordBatch]:
            yield first
            yield from it

        return pa.RecordBatchReader.from_batches(first.schema, all_batches())

    def take_malformed(self) -> list[MalformedRow]:
        """Malformed rows recorded since the last call (with ``tolerate_malformed``)."""
        with self._malformed_lock:
            out, self._malformed = self._malformed, []
        return out

    def _record_malformed(self, row: MalformedRow) -> None:
        with self._malformed_lock:
            self._malformed.append(row)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _check_file(path: Path) -> None:
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if not path.is_file():
        raise SourceError(f"{path}: not a file")


def _rebatch(batch: pa.RecordBatch, batch_rows: int) -> Iterator[pa.RecordBatch]:
    for start in range(0, batch.num_rows, batch_rows):
        yield batch.slice(start, batch_rows)


def numbered_chunks(name: str, batches: Iterator[pa.RecordBatch],
                    batch_rows: int) -> Iterator[Chunk]:
    """``batches`` cut to ``batch_rows`` rows, numbered from row 1, the column names of the
    first checked (the sources that hand over Arrow batches as they are)."""
    row = 1
    for batch in batches:
        if row == 1:
            check_column_names(name, batch.schema.names)
        for b in _rebatch(batch, batch_rows):
            yield Chunk(b, row)
            row += b.num_rows


def _short_text(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_column_names(name: str, names: list[str]) -> None:
    """SourceError naming a column that appears twice (or has no name) in a source."""
    seen: set[str] = set()
    for i, n in enumerate(names, start=1):
        if not str(n).strip():
            raise SourceError(f"{name}: column {i} has no name; every column needs one")
        if n in seen:
            raise SourceError(f"{name}: column {n!r} appears more than once; rename or drop "
                              "one of them before loading")
        seen.add(n)
