"""Write a derived output (risk scores, propensities, recommendations) for the rows that need it.

The same shape as the embed runner, for outputs that are a per-row function of the row and a
persisted model: per partition, :func:`output_partition` reads the stale rows (or all) with
the model's inputs, calls ``compute`` (the model) and returns the columns to stage with the
output's stamp (the ``row_stamp`` read, :mod:`ingest.freshness`). :func:`write_output` runs
it partition by partition inside the caller's transaction, so the output, its stamp and the
caller's metadata are one commit. A row's value never depends on the other rows, so scoring
one row never rewrites another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from vectorstore import Transaction

from .freshness import ROW_STAMP, STAMP_TYPE, stale_mask, stamp_column, stamps_of

Compute = Callable[[pa.RecordBatch], dict[str, pa.Array]]
"""Rows (key, ``row_stamp``, the inputs and the old values asked for) -> output columns.
An optional ``FRESH`` entry (bool per row) marks rows that could not be computed yet (an
input missing): they are written with a null stamp, so they stay stale. An optional
``TALLY`` entry (a dict of counts) is not written: the counts are summed over every batch of
every partition, wherever it ran, into :attr:`OutputRun.tally` (``compute`` may run in
another process, so a count kept in a closure would be lost there)."""
FRESH = "__fresh__"
TALLY = "__tally__"


@dataclass(frozen=True)
class OutputJob:
    """What every partition does for one output (picklable when ``compute`` is)."""

    key: str
    output: str
    inputs: tuple[str, ...]
    stale_only: bool
    stamped: bool
    has_stamp: bool
    batch_size: int = 65_536

    @property
    def stamp(self) -> str:
        return stamp_column(self.output)


@dataclass
class OutputRun:
    """What one :func:`write_output` did."""

    output: str
    rows: int
    """Rows computed and written."""
    skipped: int
    mode: str
    """``stale`` (only rows changed since) or ``all``."""
    tally: dict[str, int] = field(default_factory=dict)
    """The ``TALLY`` counts ``compute`` returned, summed."""


def stale_rows(scan: Callable[..., Iterator[pa.RecordBatch]], partition: Any, job: OutputJob
               ) -> np.ndarray | None:
    """Scan positions of the partition's rows stale for the output (None: every row)."""
    if not job.stale_only or not job.has_stamp:
        return None
    cols = [job.stamp] + ([ROW_STAMP] if job.stamped else [])
    masks = [stale_mask(b, job.stamp) for b in scan(partition, columns=cols,
                                                     batch_size=262_144)]
    return np.flatnonzero(np.concatenate(masks)) if masks else np.zeros(0, np.int64)


def output_partition(scan: Callable[..., Iterator[pa.RecordBatch]], partition: Any,
                     job: OutputJob, rows: np.ndarray | None, compute: Compute,
                     progress: Callable[[int], None] | None = None,
                     tally: dict[str, int] | None = None) -> pa.Table | None:
    """The output columns (key, values, stamp) of ``rows`` of one partition (None: none);
    ``progress(n)`` after each batch; ``compute``'s ``TALLY`` counts are added to ``tally``."""
    if rows is not None and len(rows) == 0:
        return None
    read = list(dict.fromkeys([job.key, *job.inputs, *([ROW_STAMP] if job.stamped else [])]))
    parts = []
    for batch in scan(partition, columns=read, batch_size=job.batch_size, rows=rows):
        if batch.num_rows == 0:
            continue
        values = compute(batch)
        fresh = values.pop(FRESH, None)
        counts = values.pop(TALLY, None)
        if counts and tally is not None:
            for k, v in counts.items():
                tally[k] = tally.get(k, 0) + int(v)
        stamps = pa.array(stamps_of(batch), STAMP_TYPE)
        if fresh is not None:
            stamps = pa.array(stamps_of(batch), STAMP_TYPE,
                              mask=~np.asarray(fresh, dtype=bool))
        parts.append(pa.table({job.key: batch.column(job.key), **values, job.stamp: stamps}))
        if progress is not None:
            progress(batch.num_rows)
    return pa.concat_tables(parts) if parts else None


def write_output(tx: Transaction, output: str, inputs: Sequence[str], compute: Compute, *,
                 fields: Sequence[pa.Field] = (), stale_only: bool = True,
                 batch_size: int = 65_536,
                 progress: Callable[[int, int | None], None] | None = None,
                 prepare: Callable[[pa.Array | None], None] | None = None,
                 runner: Any = None) -> OutputRun:
    """Compute ``output`` for the stale rows (every row unless ``stale_only``) partition by
    partition and stage it in ``tx``; ``fields`` are the output columns, added if missing.
    ``prepare(keys)`` is called once before any row is computed with the keys of the rows
    about to be (None: every row), for a model that needs more than the row (events).

    The stale rows are planned here (they read the stamp columns only); each partition's
    compute (:func:`output_partition`) runs on ``runner`` (:mod:`ingest.runner`: the local
    runner by default, Ray workers with ``ray``), after ``prepare``, with ``compute`` as the
    broadcast state, and its data is attached to ``tx``'s one commit."""
    from .runner import runner_for

    run = runner_for(tx.store, runner, step=f"writing {output}")
    info = tx.info
    key = info.key
    assert key is not None
    stamp = stamp_column(output)
    has_stamp = stamp in tx.base.schema.names
    missing = [f for f in fields if f.name not in info.schema.names]
    if stamp not in info.schema.names:
        missing.append(pa.field(stamp, STAMP_TYPE))
    if missing:
        tx.add_columns(missing)
    job = OutputJob(key, output, tuple(c for c in inputs if c in tx.base.schema.names),
                    stale_only and has_stamp, ROW_STAMP in tx.base.schema.names, has_stamp,
                    batch_size)
    parts = [p for p in tx.partitions() if p.rows]
    plans = [(p, stale_rows(tx.scan, p, job)) for p in parts]
    total = sum(p.rows if r is None else len(r) for p, r in plans)
    if prepare is not None:
        if all(r is None for _, r in plans):
            prepare(None)
        else:
            chunks = [b.column(key) for p, r in plans if r is None or len(r)
                      for b in tx.scan(p, columns=[key], rows=r)]
            prepare(pa.concat_arrays(chunks) if chunks else pa.array([], info.schema.field(
                key).type))
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(min(done[0], total), total)  # a distributed runner reports whole partitions

    todo = [(p, r) for p, r in plans if r is None or len(r)]
    shared = _OutputTask(job, compute, {p.id: r for p, r in todo})
    written = 0
    tally: dict[str, int] = {}
    for n_rows, counts in run.map_partitions(tx, _output_task, shared=shared,
                                             partitions=[p for p, _ in todo], progress=tick):
        written += n_rows
        for k, v in counts.items():
            tally[k] = tally.get(k, 0) + v
    n = sum(p.rows for p in parts)
    return OutputRun(output, written, n - written, "stale" if job.stale_only else "all",
                     tally)


@dataclass(frozen=True)
class _OutputTask:
    """The broadcast state of one output's per-partition work."""

    job: OutputJob
    compute: Compute
    rows: dict[int, np.ndarray | None]
    """Per partition id: the scan positions to compute (None: every row)."""


def _output_task(ctx: Any, part: Any) -> tuple[int, dict[str, int]]:
    """One partition of :func:`write_output` (wherever the runner runs it): compute, stage;
    returns the rows written and the ``TALLY`` counts."""
    task: _OutputTask = ctx.shared
    rows = task.rows.get(part.id)
    tally: dict[str, int] = {}
    data = output_partition(ctx.scan, part, task.job, rows, task.compute, ctx.progress, tally)
    if data is None:
        return 0, tally
    ctx.stage(part, data, rows=rows)
    return data.num_rows, tally


__all__ = ["FRESH", "TALLY", "Compute", "OutputJob", "OutputRun", "output_partition", "stale_rows",
           "write_output"]
