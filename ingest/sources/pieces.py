"""Pieces: a file source cut into parts that a worker can read on its own.

A distributed runner reads and validates each piece on a worker (read and convert as one
task) and the driver consumes the results in piece order (:mod:`ingest.piecewise`). A
piece gives exactly the chunks the sequential reader gives for its part of the file, so
rows, row and line numbers, errors and malformed rows are those of the local runner:

- Parquet: row ranges aligned to the batch size (a multiple of ``batch_rows`` rows each),
  read from the row groups that hold them, so every chunk is the batch
  ``ParquetFile.iter_batches`` gives (its batches run across row groups).
- CSV in block mode: the blocks of :meth:`CsvBlockReader._raw_blocks`, byte for byte: cut
  after the last newline before the same nominal offsets (the first block at most
  ``min(block_size, 4 MiB)`` bytes from the file's start, then ``block_size`` bytes), the
  header (and a byte order mark) before the first piece. The newline counts that number
  each piece's first line come from :func:`scan_range` over the nominal ranges, a map that
  only counts bytes, so the driver reads the header and the typing sample alone.

Other sources (SQL, frames, JSON Lines, Arrow IPC, CSV in multiline or stream mode) have no
pieces and keep the driver's sequential read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from ..errors import SourceError
from .base import Chunk, MalformedRow, Source, _short_text
from .csv_blocks import _FIRST_BLOCK

if TYPE_CHECKING:
    from .csv import CsvOptions

_SCAN_READ = 8 << 20
"""Bytes read at a time by :func:`scan_range`."""


@dataclass(frozen=True)
class Piece:
    """One part of a file: rows ``[start, stop)`` (0-based) of a Parquet file, or bytes
    ``[start, stop)`` of a CSV file starting on file line ``first_line``."""

    index: int
    start: int
    stop: int
    first_line: int = 0
    row_groups: tuple[int, ...] = ()
    """Parquet: the row groups holding the piece's rows."""
    group_start: int = 0
    """Parquet: the 0-based first row of ``row_groups[0]``."""


@dataclass
class PieceReader:
    """What a worker needs to read any piece of one source (picklable: no open file, no
    lock)."""

    kind: str
    path: str
    name: str
    batch_rows: int
    options: CsvOptions | None = None
    names: list[str] = field(default_factory=list)
    column_types: dict[str, pa.DataType] = field(default_factory=dict)
    tolerate_malformed: bool = False

    def read(self, piece: Piece) -> tuple[list[Chunk], list[MalformedRow]]:
        """The piece's chunks (in file order) and its malformed rows (recorded when
        ``tolerate_malformed``, else the first one is raised as the local reader raises it)."""
        try:
            if self.kind == "parquet":
                return self._parquet(piece), []
            return self._csv(piece)
        except FileNotFoundError as exc:
            raise SourceError(f"{self.name}: not found at {self.path} on this worker; the "
                              "workers read the file themselves, so it must be at the same "
                              "path on every node (shared storage)") from exc

    def _parquet(self, piece: Piece) -> list[Chunk]:
        import pyarrow.parquet as pq

        f = pq.ParquetFile(self.path)
        try:
            table = f.read_row_groups(list(piece.row_groups))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise SourceError(f"{self.name}: corrupt or unsupported Parquet data after row "
                              f"{piece.start}: {_short_text(str(exc).splitlines()[0])}"
                              ) from exc
        finally:
            f.close()
        table = table.slice(piece.start - piece.group_start, piece.stop - piece.start)
        out: list[Chunk] = []
        row = piece.start + 1
        for b in table.combine_chunks().to_batches(max_chunksize=self.batch_rows):
            if b.num_rows:
                out.append(Chunk(b, row))
                row += b.num_rows
        return out

    def _csv(self, piece: Piece) -> tuple[list[Chunk], list[MalformedRow]]:
        from .csv import CsvSource

        src = CsvSource(self.path, self.options)
        src.name = self.name
        src.column_types = dict(self.column_types)
        src.tolerate_malformed = self.tolerate_malformed
        with open(self.path, "rb") as f:
            f.seek(piece.start)
            block = f.read(piece.stop - piece.start)
        if len(block) != piece.stop - piece.start:
            raise SourceError(f"{self.name}: the file changed while it was read (it is "
                              f"shorter than {piece.stop:,} bytes now)")
        out, newlines = src._utf8_block(block, piece.first_line, src._transcodes())
        parsed = src._read_block(out, piece.first_line, newlines, self.names)
        chunks = list(src._emit(parsed, self.batch_rows))
        return chunks, src.take_malformed()


def reader_for(src: Source, batch_rows: int) -> PieceReader | None:
    """A :class:`PieceReader` for ``src``, or None when it cannot be read in pieces."""
    from .csv import CsvSource
    from .parquet import ParquetSource

    if isinstance(src, ParquetSource):
        return PieceReader("parquet", str(src.path.resolve()), src.name, batch_rows)
    if isinstance(src, CsvSource) and src._blockwise():
        return PieceReader("csv", str(src.path.resolve()), src.name, batch_rows,
                           options=src.options, names=src.header(),
                           column_types=dict(src.column_types),
                           tolerate_malformed=src.tolerate_malformed)
    return None


def parquet_pieces(path: str | Path, batch_rows: int) -> list[Piece]:
    """Row ranges of a Parquet file, from its footer alone: each a multiple of
    ``batch_rows`` rows (about a row group, at least one batch), with its row groups."""
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    try:
        md = f.metadata
        sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    finally:
        f.close()
    total = sum(sizes)
    if not total:
        return []
    groups = [i for i, n in enumerate(sizes) if n]
    per = batch_rows * max(1, round(total / len(groups) / batch_rows))
    ends = np.cumsum(sizes)
    starts = ends - np.asarray(sizes)
    out: list[Piece] = []
    for lo in range(0, total, per):
        hi = min(lo + per, total)
        gs = tuple(int(g) for g in np.flatnonzero((starts < hi) & (ends > lo)))
        out.append(Piece(len(out), lo, hi, row_groups=gs, group_start=int(starts[gs[0]])))
    return out


def csv_data_start(path: str | Path) -> tuple[int, int]:
    """(byte offset of the first data row: after the header line and its newline, the file
    size)."""
    size = Path(path).stat().st_size
    pos = 0
    with open(path, "rb") as f:
        while buf := f.read(1 << 20):
            nl = buf.find(b"\n")
            if nl >= 0:
                return pos + nl + 1, size
            pos += len(buf)
    return size, size


def csv_ranges(start: int, size: int, block_size: int) -> list[tuple[int, int]]:
    """The nominal byte ranges of the block reader after the header: the reads end at
    ``min(block_size, 4 MiB)`` and then every ``block_size`` bytes, counted from the file's
    start (header and byte order mark included), the last at the file's end."""
    out: list[tuple[int, int]] = []
    lo = 0
    end = min(block_size, _FIRST_BLOCK)
    while lo < size:
        hi = min(end, size)
        if hi > start:
            out.append((max(lo, start), hi))
        lo, end = hi, hi + block_size
    return out


def scan_range(path: str | Path, lo: int, hi: int) -> tuple[int, int]:
    """(newline bytes in bytes ``[lo, hi)`` of the file, offset of the last one or -1)."""
    count, last = 0, -1
    with open(path, "rb") as f:
        f.seek(lo)
        pos = lo
        while pos < hi:
            buf = f.read(min(_SCAN_READ, hi - pos))
            if not buf:
                raise SourceError(f"{path}: the file changed while it was read (it is "
                                  f"shorter than {hi:,} bytes now)")
            data = np.frombuffer(buf, dtype=np.uint8)
            nl = np.flatnonzero(data == 10)
            if len(nl):
                count += len(nl)
                last = pos + int(nl[-1])
            pos += len(buf)
    return count, last


def csv_pieces(start: int, size: int, ranges: list[tuple[int, int]],
               scans: list[tuple[int, int]]) -> list[Piece]:
    """The block reader's blocks as pieces: each nominal range ends a block after its last
    newline (a range without one extends the block), the last block ends at the file's end;
    a piece's first line is 2 plus the newlines before it."""
    out: list[Piece] = []
    lo, line, newlines = start, 2, 0
    for (_, _), (count, last) in zip(ranges, scans, strict=True):
        newlines += count
        if last >= 0 and last + 1 > lo:
            out.append(Piece(len(out), lo, last + 1, first_line=line))
            lo, line = last + 1, 2 + newlines
    if lo < size:
        out.append(Piece(len(out), lo, size, first_line=line))
    return out
