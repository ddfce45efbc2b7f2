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
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


# ---------------------------------------------------------------------------------- text checks
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


def _short_text(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def _line_break_in_last_row(table: pa.Table) -> bool:
    last = table.slice(table.num_rows - 1, 1)
    for col in last.columns:
        if pa.types.is_string(col.type):
            v = col[0].as_py()
            if v is not None and ("\n" in v or "\r" in v):
                return True
    return False


def _valid_utf8(data: bytes) -> bool:
    """Whether ``data`` is valid UTF-8 (Arrow's vectorised check, no copy of the bytes)."""
    buf = pa.py_buffer(data)
    offsets = pa.py_buffer(np.asarray([0, len(data)], dtype=np.int64).tobytes())
    arr = pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, buf])
    try:
        arr.cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


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


def _field_at(line: bytes, pos: int, o: CsvOptions) -> tuple[int, bytes]:
    """(0-based field index, the field's bytes) of byte ``pos`` of ``line``."""
    d, q = o.delimiter.encode(), (o.quote_char or "").encode()
    field, start, quoted = 0, 0, False
    for i in range(len(line)):
        ch = line[i:i + 1]
        if q and ch == q:
            quoted = not quoted
        elif ch == d and not quoted:
            if i >= pos:
                return field, line[start:i]
            field, start = field + 1, i + 1
    return field, line[start:]


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

    def _raw_blocks(self) -> Generator[tuple[bytes, int, int], None, None]:
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
                            raise self._encoding_error(block, line, exc) from None
                    else:
                        out = block
                        if not _valid_utf8(block):
                            try:
                                block.decode("utf-8")
                            except UnicodeDecodeError as exc:
                                raise self._encoding_error(block, line, exc) from None
                    newlines = int(np.count_nonzero(np.frombuffer(out, dtype=np.uint8) == 10))
                    yield out, line, newlines
                    line += newlines
                if not data:
                    return

    def _encoding_error(self, block: bytes, first_line: int,
                        exc: UnicodeDecodeError) -> SourceError:
        """The exact line, column and value of a byte that is not valid in the encoding."""
        start = block.rfind(b"\n", 0, exc.start) + 1
        end = block.find(b"\n", exc.start)
        line_bytes = block[start:end if end >= 0 else len(block)].rstrip(b"\r")
        line = first_line + block[:exc.start].count(b"\n")
        idx, value = _field_at(line_bytes, exc.start - start, self.options)
        try:
            names = self.header()
            column = repr(names[idx]) if idx < len(names) else f"#{idx + 1}"
        except SourceError:
            column = f"#{idx + 1}"
        shown = value.decode("utf-8", "backslashreplace")
        return SourceError(
            f"{self.name}:{line}: column {column}: value {_short_text(shown, 60)!r} is not "
            f"valid {self.options.encoding} text (byte 0x{block[exc.start]:02x}); declare the "
            "file's encoding (e.g. encoding = \"latin-1\" in the mapping's [source])")

    def _parse_block(self, block: bytes, names: list[str], types: dict[str, pa.DataType],
                     threads: bool, handler: Any) -> pa.Table:
        try:
            return self._parse_block_sized(block, names, types, threads, handler, 1 << 20)
        except pa.ArrowInvalid as exc:
            if "straddl" not in str(exc):
                raise
            # a row longer than pyarrow's 1 MiB parse block: parse the block in one piece
            return self._parse_block_sized(block, names, types, threads, handler,
                                           len(block) + 1)

    def _parse_block_sized(self, block: bytes, names: list[str], types: dict[str, pa.DataType],
                           threads: bool, handler: Any, block_size: int) -> pa.Table:
        import pyarrow.csv as pcsv

        o = self.options
        return pcsv.read_csv(
            io.BytesIO(block),
            read_options=pcsv.ReadOptions(column_names=names, use_threads=threads,
                                          encoding="utf8", block_size=block_size),
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

        def next_block() -> tuple[pa.Table, np.ndarray, list[MalformedRow], bool] | None:
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

    def _emit(self, block: tuple[pa.Table, np.ndarray, list[MalformedRow], bool],
              batch_rows: int) -> Iterator[Chunk]:
        table, lines, bad, nul_free = block
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
                yield Chunk(b, int(ln[0]) - 1, ln, rows[start:start + b.num_rows],
                            nul_free=nul_free)
                start += b.num_rows

    def _read_block(self, block: bytes, first_line: int, newlines: int, names: list[str],
                    ) -> tuple[pa.Table, np.ndarray, list[MalformedRow], bool]:
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
            # every row is numbered here (an unnumbered read was cleared above)
            idx = np.asarray([cast(int, n) - 1 for n, *_ in numbered], dtype=np.int64)
            for (_, text, exp, act), i in zip(numbered, idx.tolist(), strict=True):
                bad.append(MalformedRow(None, int(nonempty[i]), text,
                                        f"{exp} fields as in the header (the row has {act})"))
            keep = np.ones(len(nonempty), dtype=bool)
            keep[idx] = False
            nonempty = nonempty[keep]
        if len(nonempty) > table.num_rows:  # a quoted value took in the following lines
            raise self._open_quote_error(table, nonempty)
        if table.num_rows and _line_break_in_last_row(table):
            # a quote left open on the block's last line takes in only its line end
            raise self._open_quote_error(table.slice(table.num_rows - 1), nonempty[
                table.num_rows - 1: table.num_rows])
        return table, nonempty[: table.num_rows].astype(np.int64), bad, b"\x00" not in block

    def _open_quote_error(self, table: pa.Table, lines: np.ndarray) -> SourceError:
        """The first value holding a line break, in a file read one row per line."""
        first: tuple[int, str, str] | None = None
        for name in table.column_names:
            col = table.column(name)
            if not pa.types.is_string(col.type):
                continue
            hit = pc.fill_null(pc.match_substring_regex(col, "[\r\n]"), False)
            pos = pc.index(hit, True).as_py()
            if pos is not None and pos >= 0 and (first is None or pos < first[0]):
                first = (pos, name, col[pos].as_py())
        if first is None:
            return SourceError(f"{self.name}: lines {int(lines[0])}-{int(lines[-1])}: fewer "
                               "rows than lines; a quote is probably not closed")
        row, name, value = first
        q = self.options.quote_char or '"'
        head = value.splitlines()[0] if value.splitlines() else ""
        return SourceError(
            f"{self.name}:{int(lines[row])}: column {name!r}: the quoted value "
            f"{_short_text(q + head, 60)!r} is not closed on its line, so it would swallow the "
            f"lines after it; close the quote, or set multiline = true if values really "
            "contain line breaks")

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
            check_column_names(self.name, f.schema_arrow.names)
            for b in f.iter_batches(batch_size=batch_rows):
                yield Chunk(b, row)
                row += b.num_rows
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise SourceError(f"{self.name}: corrupt or unsupported Parquet data after row "
                              f"{row - 1}: {_short_text(str(exc).splitlines()[0])}") from exc
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
                if row == 1:
                    check_column_names(self.name, batch.schema.names)
                for b in _rebatch(batch, batch_rows):
                    yield Chunk(b, row)
                    row += b.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"{self.name}: not a readable Arrow IPC/Feather file: "
                              f"{str(exc).splitlines()[0]}") from exc

def _repair_null_lists(table: pa.Table) -> pa.Table:
    """``pyarrow.json`` gives a field whose lists hold only nulls (``[null, null]``) a child
    array shorter than its offsets say; rebuild such columns with a child of the right length
    so that later steps can read them."""
    for i, f in enumerate(table.schema):
        t = f.type
        if not ((pa.types.is_list(t) or pa.types.is_large_list(t))
                and pa.types.is_null(t.value_type)):
            continue
        chunks = []
        for arr in table.column(i).chunks:
            offsets = arr.offsets
            total = offsets[-1].as_py() if len(offsets) else 0
            cls = pa.LargeListArray if pa.types.is_large_list(t) else pa.ListArray
            chunks.append(cls.from_arrays(offsets, pa.nulls(total), mask=arr.is_null()))
        table = table.set_column(i, f, pa.chunked_array(chunks, t))
    return table


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
        table = pj.read_json(io.BytesIO(b"\n".join(lines)), parse_options=opts,
                             read_options=pj.ReadOptions(use_threads=False,
                                                         block_size=max(1 << 20,
                                                                        sum(map(len, lines)) + 1)))
        return _repair_null_lists(table)

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
        try:
            table = self._parse(good, schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as combined:
            raise self._type_change_error(str(combined), good_numbers) from None
        return (table, np.asarray(good_numbers, dtype=np.int64),
                np.asarray(good_pos, dtype=np.int64))

    def _type_change_error(self, message: str, numbers: list[int]) -> SourceError:
        """Every line parses alone but not together: a field changes type (number, then text;
        object, then number...). Names the line and the field."""
        import re

        first = message.splitlines()[0] if message else ""
        m = re.search(r"Column\((?P<col>[^)]*)\) changed from (?P<a>\w+) to (?P<b>\w+) in row "
                      r"(?P<row>\d+)", first)
        if m is None:
            return SourceError(f"{self.name}: lines {numbers[0]}-{numbers[-1]}: the rows do not "
                               f"fit one schema: {_short_text(first)}")
        row = int(m.group("row"))
        line = numbers[row] if row < len(numbers) else numbers[-1]
        col = m.group("col").lstrip("/").replace("/", ".")
        return SourceError(
            f"{self.name}:{line}: field {col!r} is {m.group('b')} here but {m.group('a')} on "
            "earlier lines; one field must hold one type of value (quote the numbers to load "
            "them as text, or fix the line)")


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


def _rows_to_batch(name: str, names: list[str], rows: Sequence[Any], schema: pa.Schema | None,
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
            if row == 1:
                check_column_names(self.name, batch.schema.names)
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
