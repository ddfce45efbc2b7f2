"""The CSV block splitter: newline-aligned byte blocks, parsed in parallel, with exact lines.

A CSV/TSV file with one row per line is cut into newline-aligned byte blocks (transcoded to
UTF-8 when needed), each parsed by pyarrow's multithreaded reader, so every block knows its
first line. A block whose typed read fails is read again as strings, and validation reports
the value that does not fit with its exact line: the fast path is fast, the error path exact.
Malformed rows, bytes invalid in the encoding and quotes left open are reported with their
line.
"""

from __future__ import annotations

import io
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SourceError
from .base import Chunk, MalformedRow, Source, _short_text

if TYPE_CHECKING:
    from .csv import CsvOptions


_FAST_TYPES = (pa.int64(), pa.float64(), pa.string())
_FIRST_BLOCK = 4 << 20


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


class CsvBlockReader(Source):
    """Block mode of :class:`~ingest.sources.csv.CsvSource` (its base class): the file cut
    into newline-aligned UTF-8 byte blocks, each parsed by pyarrow's multithreaded reader and
    numbered with the file line of each row."""

    if TYPE_CHECKING:  # set or defined by CsvSource
        path: Path
        options: CsvOptions
        column_types: dict[str, pa.DataType]

        def header(self) -> list[str]: ...

        def _parse_options(self, handler: Any) -> Any: ...

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
        transcode = self._transcodes()
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
                    out, newlines = self._utf8_block(block, line, transcode)
                    yield out, line, newlines
                    line += newlines
                if not data:
                    return

    def _transcodes(self) -> bool:
        """Whether blocks are transcoded to UTF-8 (an encoding other than UTF-8 or ASCII)."""
        enc = self.options.encoding.lower().replace("-", "").replace("_", "")
        return enc not in ("utf8", "ascii", "usascii")

    def _utf8_block(self, block: bytes, line: int, transcode: bool) -> tuple[bytes, int]:
        """A newline-aligned block (starting on file line ``line``) as UTF-8, checked, with
        the number of newline bytes in it."""
        if transcode:
            try:
                out = block.decode(self.options.encoding).encode("utf-8")
            except UnicodeDecodeError as exc:
                raise self._encoding_error(block, line, exc) from None
        else:
            out = block
            if not _valid_utf8(block):
                try:
                    block.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise self._encoding_error(block, line, exc) from None
        return out, int(np.count_nonzero(np.frombuffer(out, dtype=np.uint8) == 10))

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
