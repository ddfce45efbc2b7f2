"""Ingest of a file in pieces on a distributed runner: each worker reads and validates a
piece (:mod:`ingest.sources.pieces`), the driver applies the results in piece order.

The read and :func:`~ingest.validate.convert_chunk` of a piece are one task, so the driver
never reads the file's rows (only its header, the typing sample and, for CSV, its first
block, as the local path does before the write). The results come back in piece order with
the piece's malformed rows, so :meth:`ingest.pipeline._Load.stream` sees the same
(converted chunk, malformed rows) sequence as on the local runner.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

from .runner import Runner, TaskContext
from .sources import CsvSource, MalformedRow, ParquetSource, Source
from .sources.pieces import (
    Piece,
    PieceReader,
    csv_data_start,
    csv_pieces,
    csv_ranges,
    parquet_pieces,
    reader_for,
    scan_range,
)
from .validate import Converted, Plan, convert_chunk

_log = logging.getLogger(__name__)
Item = tuple[Converted | None, list[MalformedRow]]
"""A converted chunk (None for a piece without rows) and the malformed rows recorded
before it."""


@dataclass
class PieceResult:
    """What a worker returns for a piece: its converted chunks and malformed rows."""

    index: int
    converted: list[Converted]
    malformed: list[MalformedRow]


def _piece_task(ctx: TaskContext, piece: Piece) -> PieceResult:
    """Read one piece and convert its chunks against the plan, on any worker."""
    plan, reader = ctx.shared
    chunks, malformed = reader.read(piece)
    return PieceResult(piece.index, [convert_chunk(plan, c) for c in chunks], malformed)


def _scan_task(ctx: TaskContext, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Newline counts (and the last newline) of consecutive byte ranges of the file."""
    return [scan_range(ctx.shared, lo, hi) for lo, hi in ranges]


def _probe_task(ctx: TaskContext, _: int) -> int | None:
    """The file's size as a worker sees it (None: the worker cannot see the file)."""
    try:
        return os.stat(ctx.shared).st_size
    except OSError:
        return None


def plan_pieces(src: Source, runner: Runner, batch_rows: int
                ) -> tuple[PieceReader, list[Piece]] | None:
    """How to read the source in pieces and its pieces (call once the plan has set a CSV's
    column types), or None when it cannot be read in pieces, or the runner's workers do not
    see the file at the driver's path (then the driver reads it, as before)."""
    if not isinstance(src, ParquetSource | CsvSource):
        return None
    reader = reader_for(src, batch_rows)
    if reader is None:
        return None
    size = os.stat(reader.path).st_size
    seen = list(runner.map(_probe_task, range(runner.parallelism), shared=reader.path))
    if any(s != size for s in seen):
        _log.info("%s: the %s workers do not see this file at %s; the driver reads it",
                  src.name, runner.name, reader.path)
        return None
    if reader.kind == "parquet":
        return reader, parquet_pieces(reader.path, batch_rows)
    assert reader.options is not None
    start, size = csv_data_start(reader.path)
    ranges = csv_ranges(start, size, reader.options.block_size)
    per = max(1, math.ceil(len(ranges) / (4 * runner.parallelism)))
    groups = [ranges[i:i + per] for i in range(0, len(ranges), per)]
    scans = [s for g in runner.map(_scan_task, groups, shared=reader.path) for s in g]
    return reader, csv_pieces(start, size, ranges, scans)


def piece_items(runner: Runner, plan: Plan, reader: PieceReader, pieces: list[Piece]
          ) -> Iterator[Item]:
    """The results of ``pieces`` as (converted chunk, malformed rows) items, in order."""
    for res in runner.map(_piece_task, pieces, shared=(plan, reader)):
        if not res.converted:
            yield None, res.malformed
            continue
        yield res.converted[0], res.malformed
        for conv in res.converted[1:]:
            yield conv, []
