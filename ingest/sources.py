"""Source adapters: files, databases and in-process frames -> Arrow record batches.

Every adapter streams: it holds one batch (plus the reader's own small buffers) at a time,
so a file of any size is read in bounded memory. Each yields :class:`Chunk` objects: a record
batch plus where its rows came from (1-based row numbers and, for text files, line numbers),
so validation errors can point at ``file:line``.

CSV/TSV files are cut into newline-aligned byte blocks, each parsed by pyarrow's
multithreaded reader, so every block knows its first line. Columns are read as strings until
the load's plan gives :attr:`CsvSource.column_types` (int64, float64, string); later blocks are
then read typed. A block whose typed read fails is read again as strings, and validation
reports the value that does not fit with its exact line: the fast path is fast, the error
path exact.
"""

from __future__ import annotations

import io
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from .errors import SourceError

SourceKind = Literal["csv", "tsv", "parquet", "jsonl", "arrow", "sql", "frame"]
SOURCE_KINDS: tuple[str, ...] = ("csv", "tsv", "parquet", "jsonl", "arrow", "sql", "frame")
DEFAULT_BATCH_ROWS = 65_536

_EXTENSIONS: dict[str, str] = {
    ".csv": "csv", ".txt": "csv", ".tsv": "tsv", ".tab": "tsv",
    ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl",
    ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow", ".arrows": "arrow",
}
_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql", "oracle", "duckdb")


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


# ---------------------------------------------------------------------------------- files
def _check_file(path: Path) -> None:
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if not path.is_file():
        raise SourceError(f"{path}: not a file")


def _rebatch(batch: pa.RecordBatch, batch_rows: int) -> Iterator[pa.RecordBatch]:
    for start in range(0, batch.num_rows, batch_rows):
        yield batch.slice(start, batch_rows)


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


_FAST_TYPES = (pa.int64(), pa.float64(), pa.string())
_FIRST_BLOCK = 4 << 20


class CsvSource(Source):
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
        if len(self.options.delimiter) != 1:
            raise SourceError(f"{self.name}: the delimiter must be one character, "
                              f"got {self.options.delimiter!r}")

    def _header(self) -> list[str]:
        import pyarrow.csv as pcsv

        o = self.options
        try:
            reader = pcsv.open_csv(
                self.path,
                read_options=pcsv.ReadOptions(encoding=o.encoding, block_size=1 << 16,
                                              use_threads=False),
                parse_options=self._parse_options(lambda row: "skip"),
                convert_options=pcsv.ConvertOptions(include_columns=[]),
            )
        except (pa.ArrowInvalid, OSError, LookupError) as exc:
            msg = str(exc).split("\n")[0]
            if "Empty CSV file" in msg:
                raise SourceError(f"{self.name}: empty file; a header row is required") from exc
            raise SourceError(f"{self.name}: cannot read the header: {msg}") from exc
        names = list(reader.schema.names)
        reader.close()
        return names

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

    def _blockwise(self) -> bool:
        """Whether rows can be cut at newline bytes: one row per line, ASCII-compatible
        encoding, and no bare carriage-return line ends (which pyarrow also splits at)."""
        import codecs

        o = self.options
        if o.multiline:
            return False
        try:
            enc = codecs.lookup(o.encoding).name
        except LookupError:
            return False
        if "a\n\r,\"".encode(enc, "replace") != b"a\n\r,\"" or enc.startswith(("utf-16",
                                                                                "utf-32")):
            return False
        with pa.input_stream(str(self.path)) as f:
            head = f.read(1 << 16)
        return head.count(b"\r") == head.count(b"\r\n")

    def _raw_blocks(self) -> Iterator[tuple[bytes, int, int]]:
        """(newline-aligned UTF-8 data bytes, line number of their first line, number of
        newline bytes in them), header skipped."""
        o = self.options
        enc = o.encoding.lower().replace("-", "").replace("_", "")
        transcode = enc not in ("utf8", "ascii", "usascii")
        line = 2
        tail = b""
        header_done = False
        size = min(o.block_size, _FIRST_BLOCK)  # the plan is typed from the first block
        with pa.input_stream(str(self.path)) as f:
            while True:
                data = f.read(size)
                size = o.block_size
                buf = tail + data if tail else data
                if not header_done:
                    if buf.startswith(b"\xef\xbb\xbf"):
                        buf = buf[3:]
                    nl = buf.find(b"\n")
                    if nl < 0 and data:
                        tail = buf
                        continue
                    buf = buf[nl + 1:] if nl >= 0 else b""
                    header_done = True
                if data:
                    cut = buf.rfind(b"\n")
                    if cut < 0:  # a line longer than a block: read on
                        tail = buf
                        continue
                    block, tail = buf[:cut + 1], buf[cut + 1:]
                else:
                    block, tail = buf, b""
                if block:
                    if transcode:
                        try:
                            out = block.decode(o.encoding).encode("utf-8")
                        except UnicodeDecodeError as exc:
                            bad = line + block[:exc.start].count(b"\n")
                            raise SourceError(f"{self.name}:{bad}: not valid "
                                              f"{o.encoding} text: {exc.reason}") from exc
                    else:
                        out = block
                    newlines = int(np.count_nonzero(np.frombuffer(out, dtype=np.uint8) == 10))
                    yield out, line, newlines
                    line += newlines
                if not data:
                    return

    def _parse_block(self, block: bytes, names: list[str], types: dict[str, pa.DataType],
                     threads: bool, handler: Any) -> pa.Table:
        import pyarrow.csv as pcsv

        o = self.options
        return pcsv.read_csv(
            io.BytesIO(block),
            read_options=pcsv.ReadOptions(column_names=names, use_threads=threads,
                                          encoding="utf8"),
            parse_options=self._parse_options(handler),
            convert_options=pcsv.ConvertOptions(
                column_types={n: types.get(n, pa.string()) for n in names},
                null_values=o.null_values, strings_can_be_null=True,
                quoted_strings_can_be_null=False))

    def _block_chunks(self, names: list[str], batch_rows: int) -> Iterator[Chunk]:
        """Blocks read and parsed one ahead in a worker thread, so that work overlaps with
        the consumer's validation and writing (pyarrow and numpy release the GIL). The first
        block is read alone: its chunks give the plan that types the next blocks."""
        from concurrent.futures import ThreadPoolExecutor

        raw = self._raw_blocks()

        def next_block() -> tuple[pa.Table, np.ndarray, list[MalformedRow]] | None:
            item = next(raw, None)
            return None if item is None else self._read_block(*item, names)

        try:
            block = next_block()
            if block is None:
                return
            yield from self._emit(block, batch_rows)
            with ThreadPoolExecutor(1, thread_name_prefix="kindred-csv") as pool:
                ahead = pool.submit(next_block)
                while (block := ahead.result()) is not None:
                    ahead = pool.submit(next_block)
                    yield from self._emit(block, batch_rows)
        finally:
            raw.close()

    def _emit(self, block: tuple[pa.Table, np.ndarray, list[MalformedRow]],
              batch_rows: int) -> Iterator[Chunk]:
        table, lines, bad = block
        if bad:
            if not self.tolerate_malformed:
                m = bad[0]
                raise SourceError(f"{self.name}:{m.line}: malformed CSV row {m.text!r}; "
                                  f"expected {m.reason}")
            for m in bad:
                self._record_malformed(m)
        rows = lines - 1
        start = 0
        if table.num_rows > batch_rows or table.column(0).num_chunks > 1:
            # the parser's ~1 MiB chunks, merged into batches of batch_rows: fewer, larger
            # batches for validation and the writer (one copy of the block)
            table = table.combine_chunks()
        for b in table.to_batches(max_chunksize=batch_rows):
            if b.num_rows:
                ln = lines[start:start + b.num_rows]
                yield Chunk(b, int(ln[0]) - 1, ln, rows[start:start + b.num_rows])
                start += b.num_rows

    def _read_block(self, block: bytes, first_line: int, newlines: int,
                    names: list[str]) -> tuple[pa.Table, np.ndarray, list[MalformedRow]]:
        """One block: its rows (typed when possible), their file lines, malformed rows."""
        types = {n: t for n, t in self.column_types.items()
                 if n in names and t in _FAST_TYPES}
        data = np.frombuffer(block, dtype=np.uint8)
        if any(t == pa.int64() for t in types.values()) and (b"x" in block or b"X" in block):
            # pyarrow reads 0x1F as an integer; validation refuses it, so read it as text
            x = np.flatnonzero((data[1:] | 0x20) == ord("x"))
            if (data[x] == ord("0")).any():
                types = {n: t for n, t in types.items() if t != pa.int64()}
        numbered: list[tuple[int | None, str, int, int]] = []

        def on_invalid(r: Any) -> str:
            numbered.append((r.number, r.text, r.expected_columns, r.actual_columns))
            return "skip"

        table = None
        if types:
            try:
                table = self._parse_block(block, names, types, True, on_invalid)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                table = None  # a value the typed read refuses: validation will name it
                numbered.clear()
                types = {}
        if table is None:
            try:
                table = self._parse_block(block, names, {}, True, on_invalid)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                last = first_line + block.count(b"\n")
                raise SourceError(f"{self.name}: lines {first_line}-{last}: malformed CSV: "
                                  f"{str(exc).splitlines()[0]}") from exc
        if any(n is None for n, *_ in numbered):  # threads do not number rows: once more
            numbered.clear()
            table = self._parse_block(block, names, types, False, on_invalid)
        # file line of each non-empty line (pyarrow skips empty lines and numbers the rest)
        total = table.num_rows + len(numbered)
        n_lines = newlines + (0 if block.endswith(b"\n") else 1)
        if total != n_lines:  # empty lines (or "\r" alone), which the parser skips
            ends = np.flatnonzero(data == 10)
            if not block.endswith(b"\n"):
                ends = np.append(ends, len(block))
            starts = np.concatenate([[0], ends[:-1] + 1])
            width = ends - starts
            cr = (width == 1) & (data[np.minimum(starts, len(data) - 1)] == 13)
            nonempty = np.flatnonzero((width > 0) & ~cr) + first_line
        else:
            nonempty = np.arange(first_line, first_line + total, dtype=np.int64)
        bad: list[MalformedRow] = []
        if numbered:
            idx = np.asarray([n - 1 for n, *_ in numbered], dtype=np.int64)
            for (_, text, exp, act), i in zip(numbered, idx.tolist(), strict=True):
                bad.append(MalformedRow(None, int(nonempty[i]), text,
                                        f"{exp} fields as in the header (the row has {act})"))
            keep = np.ones(len(nonempty), dtype=bool)
            keep[idx] = False
            nonempty = nonempty[keep]
        return table, nonempty[: table.num_rows].astype(np.int64), bad

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


class ParquetSource(Source):
    """A Parquet file read group by group with ``ParquetFile.iter_batches``."""

    kind = "parquet"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        super().__init__(str(self.path))

    def chunks(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Chunk]:
        import pyarrow.parquet as pq

        _check_file(self.path)
        try:
            f = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{self.name}: not a readable Parquet file: "
                              f"{str(exc).splitlines()[0]}") from exc
        row = 1
        try:
            for b in f.iter_batches(batch_size=batch_rows):
                yield Chunk(b, row)
                row += b.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{self.name}: corrupt Parquet data after row {row - 1}: "
                              f"{str(exc).splitlines()[0]}") from exc
        finally:
            f.close()


class ArrowIpcSource(Source):
    """An Arrow IPC file (Feather v2) or stream, memory-mapped and read batch by batch."""

    kind = "arrow"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        super().__init__(str(self.path))

    def _batches(self) -> Iterator[pa.RecordBatch]:
        mm = pa.memory_map(str(self.path))
        try:
            try:
                f = pa.ipc.open_file(mm)
            except pa.ArrowInvalid:
                mm.seek(0)
                yield from pa.ipc.open_stream(mm)
                return
            for i in range(f.num_record_batches):
                yield f.get_batch(i)
        finally:
            mm.close()

    def chunks(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Chunk]:
        _check_file(self.path)
        row = 1
        try:
            for batch in self._batches():
                for b in _rebatch(batch, batch_rows):
                    yield Chunk(b, row)
                    row += b.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{self.name}: not a readable Arrow IPC/Feather file: "
                              f"{str(exc).splitlines()[0]}") from exc


class JsonLinesSource(Source):
    """JSON Lines read in chunks of lines, each parsed by ``pyarrow.json``.

    The first chunk fixes the schema (a field first seen later is an error that says so);
    blank lines are skipped but counted, so rows keep their line numbers. A chunk that fails
    to parse is re-parsed line by line to find the bad lines (only on that error path).
    """

    kind = "jsonl"
    has_lines = True

    def __init__(self, path: str | Path, *, encoding: str = "utf-8",
                 block_lines: int | None = None) -> None:
        self.path = Path(path)
        super().__init__(str(self.path))
        self.encoding = encoding
        self.block_lines = block_lines

    def _line_blocks(self, n: int) -> Iterator[tuple[list[bytes], list[int]]]:
        lines: list[bytes] = []
        numbers: list[int] = []
        with open(self.path, "rb") as f:
            for i, raw in enumerate(f, start=1):
                if i == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                if self.encoding.lower().replace("-", "") not in ("utf8", "ascii"):
                    raw = raw.decode(self.encoding).encode("utf-8")
                if not raw.strip():
                    continue
                lines.append(raw.rstrip(b"\r\n"))
                numbers.append(i)
                if len(lines) >= n:
                    yield lines, numbers
                    lines, numbers = [], []
        if lines:
            yield lines, numbers

    @staticmethod
    def _parse(lines: list[bytes], schema: pa.Schema | None) -> pa.Table:
        import pyarrow.json as pj

        opts = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="infer")
        return pj.read_json(io.BytesIO(b"\n".join(lines)), parse_options=opts,
                            read_options=pj.ReadOptions(use_threads=False,
                                                        block_size=max(1 << 20,
                                                                       sum(map(len, lines)) + 1)))

    def chunks(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Chunk]:
        _check_file(self.path)
        schema: pa.Schema | None = None
        row = 1
        for lines, numbers in self._line_blocks(self.block_lines or batch_rows):
            try:
                table = self._parse(lines, schema)
                keep = np.asarray(numbers, dtype=np.int64)
                pos = np.arange(len(lines), dtype=np.int64)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                table, keep, pos = self._parse_line_by_line(lines, numbers, schema, row, exc)
            if schema is None:
                schema = table.schema
            elif table.schema != schema:
                extra = [n for n in table.schema.names if n not in schema.names]
                raise SourceError(
                    f"{self.name}: line {int(keep[0])}: field(s) {', '.join(extra)} first appear "
                    f"after line {int(numbers[0]) - 1}; declare them in the first rows of the "
                    "file or load them as a separate source")
            table = table.combine_chunks()
            for start in range(0, table.num_rows, batch_rows):
                part = table.slice(start, batch_rows)
                for b in part.to_batches():
                    ln = keep[start:start + b.num_rows]
                    rn = row + pos[start:start + b.num_rows]
                    yield Chunk(b, int(rn[0]) if len(rn) else row, ln, rn)
            row += len(lines)

    def _parse_line_by_line(self, lines: list[bytes], numbers: list[int], schema: pa.Schema | None,
                            row: int, exc: Exception,
                            ) -> tuple[pa.Table, np.ndarray, np.ndarray]:
        good: list[bytes] = []
        good_numbers: list[int] = []
        good_pos: list[int] = []
        for i, (text, number) in enumerate(zip(lines, numbers, strict=True)):
            try:
                self._parse([text], schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as line_exc:
                reason = str(line_exc).splitlines()[0]
                if not self.tolerate_malformed:
                    raise SourceError(f"{self.name}: line {number}: malformed JSON row: "
                                      f"{reason}") from exc
                self._record_malformed(MalformedRow(row + i, number,
                                                    text.decode("utf-8", "replace"), reason))
                continue
            good.append(text)
            good_numbers.append(number)
            good_pos.append(i)
        if not good:
            if schema is None:
                raise SourceError(f"{self.name}: no valid JSON row in the first "
                                  f"{len(lines)} lines") from exc
            empty = np.zeros(0, dtype=np.int64)
            return schema.empty_table(), empty, empty
        return (self._parse(good, schema), np.asarray(good_numbers, dtype=np.int64),
                np.asarray(good_pos, dtype=np.int64))


# ---------------------------------------------------------------------------------- SQL
def _sql_arrow_type(sqltype: Any) -> pa.DataType | None:
    import sqlalchemy as sa

    checks: list[tuple[type, pa.DataType]] = [
        (sa.Boolean, pa.bool_()), (sa.Integer, pa.int64()), (sa.Float, pa.float64()),
        (sa.Numeric, pa.float64()), (sa.DateTime, pa.timestamp("us")), (sa.Date, pa.date32()),
        (sa.LargeBinary, pa.binary()), (sa.String, pa.string()),
    ]
    for cls, t in checks:
        if isinstance(sqltype, cls):
            return t
    return None


class SqlSource(Source):
    """Rows of a SQL query or table, by SQLAlchemy URL, fetched with a server-side cursor.

    Rows come ``batch_rows`` at a time (``stream_results`` + ``fetchmany``), so a large table
    is never held whole. Column types come from the table's reflected types, or else from the
    first batch of values.
    """

    kind = "sql"

    def __init__(self, url: str, *, query: str | None = None, table: str | None = None) -> None:
        if (query is None) == (table is None):
            raise SourceError("a SQL source needs exactly one of query= or table=")
        self.url = url
        self.query = query
        self.table = table
        super().__init__(f"{_redact(url)} ({'table ' + table if table else 'query'})")

    def chunks(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Chunk]:
        import sqlalchemy as sa

        try:
            engine = sa.create_engine(self.url)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise SourceError(f"{self.name}: cannot use this database URL: {exc}") from exc
        try:
            with engine.connect() as conn:
                types: dict[str, pa.DataType] = {}
                if self.table is not None:
                    from vectorstore import check_name
                    from vectorstore.errors import InvalidName

                    try:
                        check_name(self.table, "SQL table name")
                        tbl = sa.Table(self.table, sa.MetaData(), autoload_with=conn)
                    except (InvalidName, sa.exc.NoSuchTableError) as exc:
                        raise SourceError(f"{self.name}: no such table {self.table!r}") from exc
                    for c in tbl.columns:
                        t = _sql_arrow_type(c.type)
                        if t is not None:
                            types[c.name] = t
                    stmt: Any = sa.select(tbl)
                else:
                    stmt = sa.text(self.query or "")
                result = conn.execution_options(stream_results=True,
                                                max_row_buffer=batch_rows).execute(stmt)
                names = list(result.keys())
                schema: pa.Schema | None = None
                row = 1
                while True:
                    rows = result.fetchmany(batch_rows)
                    if not rows:
                        break
                    batch = _rows_to_batch(self.name, names, rows, schema, types, row)
                    schema = schema or batch.schema
                    yield Chunk(batch, row)
                    row += batch.num_rows
        except sa.exc.SQLAlchemyError as exc:
            raise SourceError(f"{self.name}: {str(exc).splitlines()[0]}") from exc
        finally:
            engine.dispose()


def _rows_to_batch(name: str, names: list[str], rows: list[Any], schema: pa.Schema | None,
                   types: dict[str, pa.DataType], first_row: int) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    arrays = []
    for i, (col, values) in enumerate(zip(names, columns, strict=True)):
        target = schema.field(i).type if schema is not None else types.get(col)
        try:
            arr = pa.array(values, type=target)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise SourceError(f"{name}: rows {first_row}-{first_row + len(rows) - 1}, column "
                              f"{col!r}: values do not fit {target or 'one type'}: {exc}") from exc
        if pa.types.is_null(arr.type) and schema is None:
            arr = arr.cast(pa.string())  # an all-null first batch: keep the column as text
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, names=names)


def _redact(url: str) -> str:
    """The URL without its password, for messages (the password is remembered, so that no
    later message shows it either)."""
    from vectorstore.dsn import redact_location, remember_secrets_in

    remember_secrets_in(url)
    return redact_location(url)


# ---------------------------------------------------------------------------------- frames
class FrameSource(Source):
    """An in-process pandas or polars DataFrame, or a pyarrow Table / RecordBatch / reader."""

    kind = "frame"

    def __init__(self, obj: Any, name: str | None = None) -> None:
        super().__init__(name or f"<{type(obj).__module__.split('.')[0]}.{type(obj).__name__}>")
        self.obj = obj
        self._used = False

    def _batches(self) -> Iterator[pa.RecordBatch]:
        obj = self.obj
        mod = type(obj).__module__.split(".")[0]
        if isinstance(obj, pa.RecordBatchReader):
            if self._used:
                raise SourceError(f"{self.name}: a RecordBatchReader can be read only once")
            self._used = True
            yield from obj
        elif isinstance(obj, pa.Table):
            yield from obj.to_batches()
        elif isinstance(obj, pa.RecordBatch):
            yield obj
        elif mod == "pandas":
            import pandas as pd

            if not isinstance(obj, pd.DataFrame):
                raise SourceError(f"{self.name}: expected a pandas DataFrame")
            step = 65_536
            for start in range(0, len(obj), step):
                try:
                    t = pa.Table.from_pandas(obj.iloc[start:start + step], preserve_index=False)
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    raise SourceError(f"{self.name}: rows {start + 1}-{start + step}: "
                                      f"{exc}") from exc
                yield from t.to_batches()
        elif mod == "polars":
            import polars as pl

            if isinstance(obj, pl.LazyFrame):
                obj = obj.collect()
            yield from obj.to_arrow().to_batches()
        else:
            raise SourceError(f"cannot read a {type(obj).__name__}: expected a pandas or polars "
                              "DataFrame or a pyarrow Table, RecordBatch or RecordBatchReader")

    def chunks(self, batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[Chunk]:
        row = 1
        for batch in self._batches():
            for b in _rebatch(batch, batch_rows):
                yield Chunk(b, row)
                row += b.num_rows


# ---------------------------------------------------------------------------------- choose
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
