"""CSV/TSV files: options, the header, the text sniff, and the streaming (multiline) mode.

Columns are read as strings until the load's plan gives :attr:`CsvSource.column_types`
(int64, float64, string); later blocks are then read typed. Block mode, where the file is cut
into newline-aligned byte blocks, lives in :mod:`ingest.sources.csv_blocks`; with
``multiline`` or an encoding that is not ASCII-compatible the file is streamed here by
``pyarrow.csv.open_csv`` instead.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import SourceError
from .base import DEFAULT_BATCH_ROWS, Chunk, MalformedRow, _check_file, _rebatch, _short_text
from .csv_blocks import CsvBlockReader


@dataclass
class CsvOptions:
    """How to parse a delimited text file."""

    delimiter: str = ","
    quote_char: str | None = '"'
    escape_char: str | None = None
    encoding: str = "utf-8"
    null_values: list[str] = field(default_factory=lambda: [""])
    multiline: bool = False
    """Allow newlines inside quoted values (slower; line numbers are then not reported)."""
    block_size: int = 8 << 20
    """Bytes per block (block mode) or per pyarrow read block (stream mode)."""


_SNIFF = 1 << 16
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed data (decompress it first, e.g. gunzip)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data (decompress it first)"),
    (b"\xfd7zXZ\x00", "xz-compressed data (decompress it first)"),
    (b"PK\x03\x04", "a zip archive (extract the file first)"),
    (b"PAR1", "a Parquet file (name it .parquet or pass kind='parquet')"),
    (b"ARROW1", "an Arrow IPC file (name it .arrow or pass kind='arrow')"),
    (b"SQLite format 3\x00", "an SQLite database (read it with a sqlite:/// URL)"),
)
_BINARY = np.zeros(256, dtype=bool)
_BINARY[[*range(0, 9), *range(14, 27), *range(28, 32)]] = True


def sniff_text(name: str, head: bytes, encoding: str) -> None:
    """SourceError when the first bytes of a text source are a known binary format, or
    mostly control bytes (random or binary data named ``.csv``)."""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            raise SourceError(f"{name}: this is {what}, not {encoding} text")
    if head[:3] == b"\xef\xbb\xbf" or head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return
    enc = encoding.lower().replace("-", "").replace("_", "")
    if enc.startswith(("utf16", "utf32")):
        return
    data = np.frombuffer(head, dtype=np.uint8)
    share = float(_BINARY[data].mean()) if len(data) else 0.0
    if share > 0.05:
        raise SourceError(f"{name}: this is binary data ({share:.0%} of its first "
                          f"{len(data):,} bytes are control characters), not {encoding} text")


def _first_line(path: Path, head: bytes, limit: int = 16 << 20) -> bytes:
    """The first line's bytes (without the newline), reading on past ``head`` if needed."""
    nl = head.find(b"\n")
    if nl >= 0:
        return head[:nl].rstrip(b"\r")
    with pa.input_stream(str(path)) as f:
        data = f.read(limit)
    nl = data.find(b"\n")
    if nl < 0 and len(data) >= limit:
        raise SourceError(f"{path}: line 1 (the header) is longer than {limit >> 20} MiB")
    return (data[:nl] if nl >= 0 else data).rstrip(b"\r")


def _check_csv_options(name: str, o: CsvOptions) -> None:
    """SourceError for options pyarrow would refuse with a bare ValueError."""
    for label, value, optional in (("delimiter", o.delimiter, False),
                                   ("quote_char", o.quote_char, True),
                                   ("escape_char", o.escape_char, True)):
        if optional and not value:
            continue
        if not isinstance(value, str) or len(value) != 1:
            raise SourceError(f"{name}: {label} must be one character, got {value!r}")
        if value in "\r\n":
            raise SourceError(f"{name}: {label} cannot be a line break")
    chars = [c for c in (o.delimiter, o.quote_char, o.escape_char) if c]
    if len(set(chars)) != len(chars):
        raise SourceError(f"{name}: the delimiter, quote_char and escape_char must differ, got "
                          f"{o.delimiter!r}, {o.quote_char!r}, {o.escape_char!r}")
    if not isinstance(o.block_size, int) or o.block_size < 1:
        raise SourceError(f"{name}: block_size must be a positive number of bytes")


class CsvSource(CsvBlockReader):
    """CSV/TSV with a header row.

    A UTF-8 byte order mark is skipped; other ASCII-compatible encodings are transcoded block
    by block. Rows with the wrong number of fields are malformed rows with their line number.
    Block mode (the default) needs one row per line; with ``multiline`` or an encoding that
    is not ASCII-compatible (UTF-16...) the file is streamed by ``pyarrow.csv.open_csv`` as
    strings, single-threaded.
    """

    kind = "csv"

    def __init__(self, path: str | Path, options: CsvOptions | None = None) -> None:
        self.path = Path(path)
        super().__init__(str(self.path))
        self.options = options or CsvOptions()
        self.has_lines = not self.options.multiline
        self.column_types: dict[str, pa.DataType] = {}
        """Columns to read typed (int64, float64 or string) from the next block on; a
        column not named here is read as strings. Set by the pipeline from its plan."""
        _check_csv_options(self.name, self.options)

    def _header(self) -> list[str]:
        """The header row's names, parsed from the first line alone (a long first data row
        never matters), after sniffing that the file is text at all."""
        import pyarrow.csv as pcsv

        o = self.options
        with pa.input_stream(str(self.path)) as f:
            head = f.read(_SNIFF)
        if not head:
            raise SourceError(f"{self.name}: empty file; a header row is required")
        sniff_text(self.name, head, o.encoding)
        if self._ascii_compatible():
            line = _first_line(self.path, head)
            if line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            try:
                text = line.decode(o.encoding)
            except (UnicodeDecodeError, LookupError) as exc:
                raise SourceError(f"{self.name}: line 1: the header is not valid {o.encoding} "
                                  f"text ({exc})") from None
            source: Any = io.BytesIO(text.encode("utf-8") + b"\n")
            encoding = "utf8"
        else:
            source, encoding = self.path, o.encoding
        try:
            reader = pcsv.open_csv(
                source,
                read_options=pcsv.ReadOptions(encoding=encoding, block_size=1 << 20,
                                              use_threads=False),
                parse_options=self._parse_options(lambda row: "skip"),
                convert_options=pcsv.ConvertOptions(include_columns=[]),
            )
        except (pa.ArrowInvalid, OSError, LookupError, UnicodeDecodeError) as exc:
            msg = str(exc).split("\n")[0]
            if "Empty CSV file" in msg:
                raise SourceError(f"{self.name}: empty file; a header row is required") from exc
            raise SourceError(f"{self.name}: line 1: cannot read the header: "
                              f"{_short_text(msg)}") from exc
        names = list(reader.schema.names)
        reader.close()
        return names

    def _ascii_compatible(self) -> bool:
        import codecs

        try:
            enc = codecs.lookup(self.options.encoding).name
        except LookupError:
            raise SourceError(f"{self.name}: unknown encoding {self.options.encoding!r}") from None
        return "a\n\r,\"".encode(enc, "replace") == b"a\n\r,\"" and \
            not enc.startswith(("utf-16", "utf-32"))

    def _parse_options(self, handler: Any) -> Any:
        import pyarrow.csv as pcsv

        o = self.options
        return pcsv.ParseOptions(
            delimiter=o.delimiter, quote_char=o.quote_char or False,
            escape_char=o.escape_char or False, newlines_in_values=o.multiline,
            invalid_row_handler=handler,
        )

    def header(self) -> list[str]:
        """The column names of the header row (checked: non-empty, unique)."""
        _check_file(self.path)
        names = self._header()
        empty = [i + 1 for i, n in enumerate(names) if not n.strip()]
        if empty:
            raise SourceError(f"{self.name}: line 1: header field {empty[0]} is empty; "
                              "a header row naming every column is required")
        seen: set[str] = set()
        for n in names:
            if n in seen:
                raise SourceError(f"{self.name}: line 1: column {n!r} appears twice in the header")
            seen.add(n)
        return names

    def chunks(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Chunk]:
        names = self.header()
        if self._blockwise():
            yield from self._block_chunks(names, batch_rows)
        else:
            yield from self._stream_chunks(names, batch_rows)

    def sample(self, rows: int) -> pa.RecordBatch | None:
        """Up to ``rows`` first data rows as strings, to decide column types (block mode;
        None otherwise, or when the first block has no readable row). Malformed rows are
        left to :meth:`chunks`, which reports them."""
        names = self.header()
        if not self._blockwise():
            return None
        raw = self._raw_blocks()
        try:
            item = next(raw, None)
        finally:
            raw.close()
        if item is None:
            return None
        try:
            table = self._parse_block(item[0], names, {}, True, lambda row: "skip")
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None
        if table.num_rows == 0:
            return None
        return table.slice(0, rows).combine_chunks().to_batches()[0]

    def _stream_chunks(self, names: list[str], batch_rows: int) -> Iterator[Chunk]:
        import pyarrow.csv as pcsv

        o = self.options
        skipped_lines: list[int] = []
        failed: list[MalformedRow] = []

        def on_invalid(row: Any) -> str:
            line = row.number
            reason = (f"{row.expected_columns} fields as in the header "
                      f"(the row has {row.actual_columns})")
            if not self.tolerate_malformed:
                failed.append(MalformedRow(None, line, row.text, reason))
                return "error"
            if line is not None:
                skipped_lines.append(line)
            self._record_malformed(MalformedRow(None, line, row.text, reason))
            return "skip"

        try:
            reader = pcsv.open_csv(
                self.path,
                read_options=pcsv.ReadOptions(encoding=o.encoding, block_size=o.block_size,
                                              use_threads=False),
                parse_options=self._parse_options(on_invalid),
                convert_options=pcsv.ConvertOptions(
                    column_types={n: pa.string() for n in names}, null_values=o.null_values,
                    strings_can_be_null=True, quoted_strings_can_be_null=False),
            )
        except (pa.ArrowInvalid, OSError) as exc:
            raise self._parse_error(failed, exc) from exc
        good = 0  # data rows yielded so far
        try:
            for batch in reader:
                for b in _rebatch(batch, batch_rows):
                    kept = np.arange(good, good + b.num_rows, dtype=np.int64)
                    if self.has_lines:
                        lines = _line_numbers(kept, skipped_lines)
                        yield Chunk(b, int(lines[0]) - 1 if len(lines) else good + 1, lines,
                                    lines - 1)
                    else:
                        yield Chunk(b, good + 1 + len(skipped_lines))
                    good += b.num_rows
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise self._parse_error(failed, exc) from exc
        finally:
            reader.close()

    def _parse_error(self, failed: list[MalformedRow], exc: Exception) -> SourceError:
        if failed:
            m = failed[0]
            where = f":{m.line}" if m.line is not None else ""
            return SourceError(f"{self.name}{where}: malformed CSV row {m.text!r}; expected "
                               f"{m.reason}")
        return SourceError(f"{self.name}: malformed CSV: {str(exc).splitlines()[0]}")


def _line_numbers(kept: np.ndarray, skipped: list[int]) -> np.ndarray:
    """1-based file lines of good data rows, given their 0-based index among good rows.

    Without malformed rows, good row k is on line k + 2 (line 1 is the header). Each skipped
    line at or before a row pushes it down one line: L = k + 2 + #skipped(<= L), solved by a
    fixed-point iteration that is monotone and converges in a few vectorised steps.
    """
    lines = kept + 2
    if not skipped:
        return lines
    skip = np.sort(np.asarray(skipped, dtype=np.int64))
    for _ in range(len(skip) + 1):
        nxt = kept + 2 + np.searchsorted(skip, lines, side="right")
        if np.array_equal(nxt, lines):
            break
        lines = nxt
    return lines
