"""JSON Lines files, read in chunks of lines parsed by ``pyarrow.json``, with line numbers.

A chunk that fails to parse is re-parsed line by line to name the bad lines; a field that
changes type between lines is named with its line.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from ..errors import SourceError
from .base import DEFAULT_BATCH_ROWS, Chunk, MalformedRow, Source, _check_file, _short_text


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
