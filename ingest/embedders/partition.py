"""One partition's work of an embed step: (partition, fitted state) -> staged data.

Everything here is a pure function of a partition (read through a ``scan`` callable), an
:class:`EmbedJob` (fitted embedders, column names, picklable) and, for embedders that need
more than the row (the behaviour embedder's events), a context prepared once by the driver.
No store, transaction or metadata is touched: the local runner (:mod:`.runner`) calls these
fragment by fragment and stages the result with ``tx.stage``; a distributed runner can call
them per Lance fragment on other machines and stage with ``store.stage_partition``.

1. :func:`plan_partition` reads the stamps only (``row_stamp`` and each target's
   ``stamp_<column>``, :mod:`ingest.freshness`) and returns the scan positions of the stale
   rows, or None when every row is to be computed.
2. :func:`embed_partition` reads the inputs of those rows only (random access), transforms
   them and returns the data to stage (vectors, stamps and auxiliary columns such as text
   hashes) with the statistics the driver needs for the column mean.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..freshness import ROW_STAMP, stale_mask, stamp_column, stamps_of
from .base import Embedder, from_vector_array

Scan = Callable[..., Iterator[pa.RecordBatch]]
"""``scan(partition, columns=[...], batch_size=n, rows=positions_or_None)`` (``tx.scan`` or
``store.scan_partition``)."""


@dataclass(frozen=True)
class Target:
    """One output column of an embed step."""

    embedder: Embedder
    column: str
    dim: int
    aux: tuple[str, ...] = ()
    """Auxiliary columns the embedder writes beside its vectors (text hashes)."""

    @property
    def stamp(self) -> str:
        return stamp_column(self.column)


@dataclass(frozen=True)
class EmbedJob:
    """What every partition of one embed step does (picklable)."""

    key: str
    targets: tuple[Target, ...]
    inputs: tuple[str, ...]
    """Input columns that exist in the table (read for the rows computed)."""
    stale_only: bool
    """Compute only rows whose stamps say they are stale (else every row)."""
    present: tuple[str, ...] = ()
    """Target, stamp and auxiliary columns already in the table."""
    read_old: bool = True
    """Read the targets' old values of the rows rewritten (for the column mean; the text
    embedder keeps unchanged rows' vectors). False when every row is rewritten."""
    stamped: bool = True
    """The table has ``row_stamp`` (stamps copied from it; 0 otherwise)."""
    batch_size: int = 16_384


@dataclass
class PartitionWork:
    """What one partition stages, and the statistics the driver folds into the result."""

    data: pa.Table | Iterator[pa.RecordBatch] | None
    rows: np.ndarray | None
    """Scan positions the data is aligned with (None: every row of the partition)."""
    computed: int = 0
    skipped: int = 0
    added: list[np.ndarray] = field(default_factory=list)
    """Per target: sum of the vectors written (float64)."""
    added_n: list[int] = field(default_factory=list)
    removed: list[np.ndarray] = field(default_factory=list)
    """Per target: sum of the old vectors these rows had (rewritten rows only)."""
    removed_n: list[int] = field(default_factory=list)
    written: int = 0
    """Rows staged (set once the data was staged, which may consume a stream)."""


def plan_partition(scan: Scan, partition: Any, job: EmbedJob) -> np.ndarray | None:
    """Scan positions of the partition's rows that must be computed (None: all of them)."""
    if not job.stale_only:
        return None
    cols = [c for c in dict.fromkeys([*([ROW_STAMP] if job.stamped else []),
                                      *(t.stamp for t in job.targets)])
            if c in job.present or c == ROW_STAMP]
    if not any(t.stamp in cols for t in job.targets):
        return None  # no stamps yet: every row
    masks = []
    for batch in scan(partition, columns=cols, batch_size=262_144):
        m = np.zeros(batch.num_rows, dtype=bool)
        for t in job.targets:
            m |= stale_mask(batch, t.stamp)
        masks.append(m)
    mask = np.concatenate(masks) if masks else np.zeros(0, dtype=bool)
    return np.flatnonzero(mask)


def embed_partition(scan: Scan, partition: Any, job: EmbedJob,
                    rows: np.ndarray | None, context: Any = None,
                    progress: Callable[[int], None] | None = None) -> PartitionWork:
    """Compute the targets' values for ``rows`` (scan positions, None = every row) of one
    partition; see the module docstring. ``progress(n)`` is called after each batch."""
    nt = len(job.targets)
    work = PartitionWork(None, rows, added=[np.zeros(t.dim) for t in job.targets],
                         added_n=[0] * nt, removed=[np.zeros(t.dim) for t in job.targets],
                         removed_n=[0] * nt)
    if rows is not None and len(rows) == 0:
        return work
    planned = any(hasattr(t.embedder, "plan") for t in job.targets)
    read = [job.key, *job.inputs]
    read += [c for t in job.targets for c in (t.stamp, *t.aux) if c in job.present]
    if job.read_old or planned:
        read += [t.column for t in job.targets if t.column in job.present]
    if job.stamped:
        read.append(ROW_STAMP)
    read = list(dict.fromkeys(read))
    batches = scan(partition, columns=read, batch_size=job.batch_size, rows=rows)
    if rows is None and not planned:
        # every row rewritten: vectors stream into the partition's files
        work.data = _stream(batches, job, context, work, progress)
        return work
    chunks, positions, offset = [], [], 0
    for batch in batches:
        base = rows[offset:offset + batch.num_rows] if rows is not None else \
            np.arange(offset, offset + batch.num_rows)
        offset += batch.num_rows
        out, keep = _compute(batch, job, context, work, selective=True)
        if out is not None:
            chunks.append(out)
            positions.append(base[keep])
        if progress is not None:
            progress(batch.num_rows)
    if chunks:
        work.data = pa.concat_tables(chunks)
        work.rows = np.concatenate(positions)
    else:
        work.data, work.rows = None, np.zeros(0, np.int64)
    return work


def _stream(batches: Iterator[pa.RecordBatch], job: EmbedJob, context: Any,
            work: PartitionWork, progress: Callable[[int], None] | None
            ) -> Iterator[pa.RecordBatch]:
    for batch in batches:
        out, _ = _compute(batch, job, context, work, selective=False)
        assert out is not None
        yield from out.to_batches()
        if progress is not None:
            progress(batch.num_rows)


def _compute(batch: pa.RecordBatch, job: EmbedJob, context: Any, work: PartitionWork,
             *, selective: bool) -> tuple[pa.Table | None, np.ndarray]:
    """The staged columns of the batch's rows that change, and which rows those are."""
    n = batch.num_rows
    stamps = pa.array(stamps_of(batch), pa.int64())
    cols: dict[str, pa.Array] = {job.key: batch.column(job.key)}
    keep = np.zeros(n, dtype=bool) if selective else np.ones(n, dtype=bool)
    encoded = np.zeros(n, dtype=bool)
    for t in job.targets:
        old = batch.column(t.column) if t.column in batch.schema.names else None
        plan = getattr(t.embedder, "plan", None)
        if plan is None:
            vec = t.embedder.transform_rows(batch, context)
            encode = np.ones(n, dtype=bool)
            extra: dict[str, pa.Array] = {}
        else:
            vec, encode, extra = _planned(t, batch, old)
        if selective:
            keep |= encode | stale_mask(batch, t.stamp)
            for c, a in extra.items():
                if c in batch.schema.names:  # an auxiliary value that changes alone
                    keep |= ~_same(a, batch.column(c))
        cols[t.column] = vec
        cols[t.stamp] = stamps
        cols.update(extra)
        encoded |= encode
    for i, t in enumerate(job.targets):
        old = batch.column(t.column) if t.column in batch.schema.names else None
        _add(work, i, cols[t.column], old, t.dim, keep if selective else None)
    work.computed += int(encoded.sum())
    work.skipped += int((~encoded).sum())
    if not keep.any():
        return None, keep
    out = pa.table(cols)
    return (out.filter(pa.array(keep)) if selective and not keep.all() else out), keep


def _planned(t: Target, batch: pa.RecordBatch, old: pa.Array | None
             ) -> tuple[pa.Array, np.ndarray, dict[str, pa.Array]]:
    """An embedder with a content plan (text): encode only rows whose content changed; the
    others keep their old vector (rows without content get none)."""
    mask, extra = t.embedder.plan(batch, t.column)  # type: ignore[attr-defined]
    encode = np.asarray(mask, dtype=bool)
    hashes = next(iter(extra.values())) if extra else None
    has_content = np.ones(batch.num_rows, dtype=bool) if hashes is None else \
        np.asarray(hashes.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    vt = pa.list_(pa.float32(), t.dim)
    vectors = old.cast(vt) if old is not None else pa.nulls(batch.num_rows, vt)
    if old is not None:  # a row whose content is gone loses its vector
        vectors = _where(pa.array(has_content), vectors, pa.nulls(batch.num_rows, vt))
    if encode.any():
        idx = np.flatnonzero(encode)
        fresh = t.embedder.transform(batch.take(pa.array(idx)))
        vectors = _scatter(vectors, idx, fresh, t.dim)
    return vectors, encode, extra


def _where(cond: pa.Array, a: pa.Array, b: pa.Array) -> pa.Array:
    import pyarrow.compute as pc

    return pc.if_else(cond, a, b)


def _scatter(base: pa.Array, idx: np.ndarray, values: pa.Array, dim: int) -> pa.Array:
    """``base`` with the rows ``idx`` replaced by ``values`` (fixed-size-list vectors)."""
    n = len(base)
    x = from_vector_array(base, dim).copy()
    valid = _valid(base).copy()
    x[idx] = from_vector_array(values, dim)
    valid[idx] = True
    flat = pa.array(x.reshape(-1))
    if valid.all() or n == 0:
        return pa.FixedSizeListArray.from_arrays(flat, dim)
    return pa.FixedSizeListArray.from_arrays(flat, dim, mask=pa.array(~valid))


def _valid(arr: pa.Array) -> np.ndarray:
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _same(a: pa.Array, b: pa.Array) -> np.ndarray:
    from vectorstore.rows import values_equal

    return values_equal(a, b.cast(a.type) if a.type != b.type else b)


def _add(work: PartitionWork, i: int, vec: pa.Array, old: pa.Array | None, dim: int,
         keep: np.ndarray | None) -> None:
    """Fold the rows written (``keep``; None: all) into the target's mean statistics."""
    valid = _valid(vec)
    take = valid if keep is None else valid & keep
    work.added[i] += from_vector_array(vec, dim)[take].sum(axis=0, dtype=np.float64)
    work.added_n[i] += int(take.sum())
    if old is not None:
        was = _valid(old) if keep is None else _valid(old) & keep
        work.removed[i] += from_vector_array(old, dim)[was].sum(axis=0, dtype=np.float64)
        work.removed_n[i] += int(was.sum())
