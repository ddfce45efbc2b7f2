"""The ``embed`` runner: one commit per step, only the rows that need it.

:func:`embed_columns` writes one or more vector columns of a table in ONE commit of a staged
step (``store.transaction``): the columns (and their stamp and auxiliary columns), the values
partition by partition, and ``metadata["embedders"][column]`` naming the fitted state (stored
as an artifact just before the commit). A vector column is registered if and only if its data
is committed; a failure or a killed process writes nothing to the table (at most an
unreferenced artifact, swept by ``optimize``). Every input problem (unknown column, empty
table, dimension conflict, missing model...) is raised before anything is written.

Which rows: when the embedder's state is the one the column was written with (the same
checksum) and the table carries change stamps (:mod:`ingest.freshness`), only the rows that
are stale for the column are read and transformed (``mode="stale"``): new customers, and rows
whose source columns changed since; the others keep their vectors, untouched. Otherwise (a new
column, a new state, a table without stamps) every row is computed (``mode="all"``), and an
embedder with a content plan (the text embedder's hashes) still re-encodes only the rows whose
content changed. A column that reads an aging feature is computed in full when the
consolidation's ``as_of`` moved, and one built from other vector columns when their states
changed. Each partition's work is :func:`ingest.embedders.partition.embed_partition`, run
on the step's runner (:mod:`ingest.runner`: in this process by default, one Ray task per
Lance fragment with ``runner="ray"``, one model per actor for a stateful embedder such as the
text encoder); the stale rows are planned here, from the stamp columns.

Memory: one partition's new vectors (streamed into its files when every row is rewritten),
the fitted state, and, for the behaviour embedder, the events of the rows computed.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from vectorstore import Transaction, VectorColumn, VectorStore, check_name

from ..datamodel import META_CONSOLIDATION, META_EMBEDDERS
from ..freshness import AGING_FEATURES, ROW_STAMP, STAMP_TYPE, stamp_column
from .base import (
    Embedder,
    EmbedResult,
    Progress,
    check_columns,
    check_table,
    check_target,
    metadata_entry,
    save_state,
)
from .data import FitData
from .errors import EmbeddingError
from .partition import EmbedJob, PartitionWork, Target, embed_partition, plan_partition

CONSOLIDATION = META_CONSOLIDATION


def embed(store: VectorStore, table: str, embedder: Embedder, column: str | None = None, *,
          fit: bool = True, stale_only: bool | None = None, batch_size: int = 16_384,
          progress: Progress | None = None, runner: Any = None) -> EmbedResult:
    """Fit ``embedder`` on ``table`` (unless ``fit=False``), write its vectors into ``column``.

    The vector column is added if missing (an existing one must have the same dimension and
    metric). ``stale_only``: None (default) computes only the stale rows when the state is
    the column's own and the table has change stamps, else every row; False every row; True
    refuses when only a full run is possible. ``progress(rows_done, total)`` is called after
    each batch (rows read out of the rows to read). If anything fails part-way (including an
    exception raised by ``progress``), the table is left exactly as it was.
    """
    column = column or embedder.default_column or f"vec_{embedder.kind}"
    return embed_columns(store, table, [(embedder, column)], fit=fit, stale_only=stale_only,
                         batch_size=batch_size, progress=progress, runner=runner)[0]


def embed_columns(store: VectorStore, table: str, targets: Sequence[tuple[Embedder, str]], *,
                  fit: bool = True, stale_only: bool | None = None, batch_size: int = 16_384,
                  progress: Progress | None = None, runner: Any = None) -> list[EmbedResult]:
    """:func:`embed` for several (embedder, column) pairs over one scan, in ONE commit: the
    columns appear together or not at all (e.g. a column and its magnitude-preserving
    companion). An embedder with a content plan must be the only target."""
    t0 = time.perf_counter()
    if not targets:
        raise EmbeddingError("nothing to embed: no (embedder, column) given")
    if len(targets) > 1 and any(hasattr(e, "plan") for e, _ in targets):
        raise EmbeddingError("an embedder with an incremental plan is embedded on its own")
    names = [c for _, c in targets]
    if len(set(names)) != len(names):
        raise EmbeddingError(f"the same column is named twice: {names}")
    info = check_table(store, table)
    for emb, column in targets:
        check_name(column, "vector column name")
        check_columns(info, emb.input_columns(info))
        if fit:
            emb.fit(FitData.from_store(store, table, batch_size=max(batch_size, 65_536),
                                       related=emb.related_tables()))
        else:
            emb._check_fitted()
    with store.transaction(table) as tx:
        step = _Step(store, tx, [(e, c) for e, c in targets], stale_only, batch_size)
        works = step.run(progress, runner)
        results = step.record(works, fit)
    seconds = time.perf_counter() - t0
    for result in results:
        result.seconds = seconds
    return results


class _Step:
    """One embed step inside its transaction: plan, compute partition by partition, record."""

    def __init__(self, store: VectorStore, tx: Transaction, targets: list[tuple[Embedder, str]],
                 stale_only: bool | None, batch_size: int) -> None:
        self.store, self.tx, self.table = store, tx, tx.name
        info = tx.info
        key = info.key
        assert key is not None
        self.key = key
        self.entries = dict(info.metadata.get(META_EMBEDDERS) or {})
        self.as_of = (info.metadata.get(CONSOLIDATION) or {}).get("as_of")
        self.blobs = {c: e.to_bytes() for e, c in targets}
        inputs: list[str] = []
        for emb, _ in targets:
            inputs += [c for c in emb.input_columns(info) if c not in inputs]
        self.inputs = [c for c in inputs if c in tx.base.schema.names]
        self.stamped = ROW_STAMP in info.schema.names
        self.targets: list[Target] = []
        self.existed: list[bool] = []
        for emb, column in targets:
            vc = VectorColumn(column, int(emb.dim_), emb.metric)
            exists = check_target(info, column, vc.dim, vc.metric)
            aux = [f for f in _aux_fields(emb, column)]
            self.targets.append(Target(emb, column, vc.dim, tuple(f.name for f in aux)))
            self.existed.append(exists)
            new = [f for f in aux if f.name not in tx.info.schema.names]
            stamp = stamp_column(column)
            if stamp not in tx.info.schema.names:
                new.append(pa.field(stamp, STAMP_TYPE))
            if new or not exists:
                tx.add_columns(new, vectors=[] if exists else [vc])
        self.reasons = self._full_reasons()
        if stale_only and self.reasons:
            raise EmbeddingError(f"{self.table}: only a full run is possible ("
                                 f"{'; '.join(self.reasons)})")
        self.stale = stale_only is not False and not self.reasons
        present = tuple(c for t in self.targets for c in (t.column, t.stamp, *t.aux)
                        if c in tx.base.schema.names)
        planned = any(hasattr(t.embedder, "plan") for t in self.targets)
        self.job = EmbedJob(self.key, tuple(self.targets), tuple(self.inputs), self.stale,
                            present, read_old=self.stale or planned, stamped=self.stamped,
                            batch_size=batch_size)

    def _full_reasons(self) -> list[str]:
        """Why every row must be computed (none: only the stale ones)."""
        import hashlib

        out = []
        if not self.stamped:
            out.append("the table has no change stamps")
        for t, existed in zip(self.targets, self.existed, strict=True):
            entry = self.entries.get(t.column) or {}
            if not existed or not entry:
                out.append(f"{t.column} is new")
                continue
            if entry.get("state_sha256") != hashlib.sha256(self.blobs[t.column]).hexdigest():
                out.append(f"{t.column} gets a new fitted state")
            elif set(self.inputs) & set(AGING_FEATURES) and entry.get("as_of") != self.as_of:
                out.append(f"{t.column} reads features measured to as_of, which moved")
            elif (entry.get("sources") or {}) != self._sources():
                out.append(f"the vector columns {t.column} is made from were re-fitted")
        return out

    def _sources(self) -> dict[str, str]:
        """The fitted states of the vector columns the targets read."""
        return {c: str((self.entries.get(c) or {}).get("state_sha256"))
                for c in self.inputs if c in self.entries}

    # ------------------------------------------------------------------ the work
    def run(self, progress: Progress | None, runner: Any = None) -> list[PartitionWork]:
        from ..runner import runner_for

        tx, job = self.tx, self.job
        run = runner_for(self.store, runner, step="embed")
        parts = [p for p in tx.partitions() if p.rows]
        plans = [(p, plan_partition(tx.scan, p, job)) for p in parts]
        total = sum(p.rows if r is None else len(r) for p, r in plans)
        context = self._context(plans)
        done = [0]

        def tick(n: int) -> None:
            done[0] += n
            if progress is not None:
                progress(min(done[0], total), total)  # a distributed runner reports whole partitions

        embedders = [t.embedder for t in self.targets]
        gpu = any(str(getattr(e, "device", "cpu")).startswith("cuda") for e in embedders)
        todo = [(p, r) for p, r in plans if r is None or len(r)]
        works = list(run.map_partitions(
            tx, _embed_task, shared=_EmbedTask(job, context, {p.id: r for p, r in todo}),
            partitions=[p for p, _ in todo], progress=tick,
            stateful=any(getattr(e, "stateful", False) for e in embedders),
            resources={"num_gpus": 1} if gpu and run.distributed else None))
        self.total_rows = sum(p.rows for p in parts)
        return works

    def _context(self, plans: list[tuple[Any, np.ndarray | None]]) -> Any:
        needs = [t for t in self.targets
                 if type(t.embedder).prepare is not Embedder.prepare]
        if not needs:
            return None
        if all(r is None for _, r in plans):
            keys = None
        else:
            chunks = [b.column(self.key) for p, r in plans
                      for b in self.tx.scan(p, columns=[self.key], rows=r)
                      if r is None or len(r)]
            keys = pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())
        return needs[0].embedder.prepare(self.store, self.table, keys)

    # ------------------------------------------------------------------ the record
    def record(self, works: list[PartitionWork], fitted: bool) -> list[EmbedResult]:
        tx = self.tx
        computed = sum(w.computed for w in works)
        written = sum(w.written for w in works)
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        results = []
        for i, (t, existed) in enumerate(zip(self.targets, self.existed, strict=True)):
            entry = self.entries.get(t.column) or {}
            mean, n = self._mean(works, i, t, existed, entry)
            mode = "stale" if self.stale else ("fit" if fitted else "all")
            result = EmbedResult(self.table, t.column, computed, self.total_rows - computed,
                                 t.dim, state_sha256=str(entry.get("state_sha256", "")),
                                 rows_written=written, mode=mode)
            if self.stale or (existed and entry and not self.reasons):
                if written:  # same state: the entry's statistics move, the state stays
                    tx.set_metadata({(META_EMBEDDERS, t.column, "mean"): mean,
                                     (META_EMBEDDERS, t.column, "vectors"): n,
                                     (META_EMBEDDERS, t.column, "refreshed_at"): now})
            elif written or not existed or not entry:
                name, sha = save_state(self.store, self.table, t.column, t.embedder)
                extra = {"vectors": n, "refreshed_at": now, "sources": self._sources()}
                if set(self.inputs) & set(AGING_FEATURES):
                    extra["as_of"] = self.as_of
                tx.set_metadata({(META_EMBEDDERS, t.column): metadata_entry(
                    self.table, t.column, t.embedder, name, sha, mean, extra)})
                result.state_sha256 = sha
            results.append(result)
        return results

    def _mean(self, works: list[PartitionWork], i: int, t: Target, existed: bool,
              entry: dict[str, Any]) -> tuple[list[float], int]:
        added = np.sum([w.added[i] for w in works], axis=0) if works else np.zeros(t.dim)
        added_n = sum(w.added_n[i] for w in works)
        if not self.job.read_old:  # every row rewritten
            total, n = added, added_n
        else:
            base, base_n = np.zeros(t.dim), 0
            if existed and isinstance(entry.get("mean"), list) and len(entry["mean"]) == t.dim:
                recorded = entry.get("vectors")
                if isinstance(recorded, int):
                    base_n = recorded
                else:
                    base_n = self.store.count(self.table) - self.store.null_count(
                        self.table, t.column)
                base = np.asarray(entry["mean"], np.float64) * base_n
            removed = np.sum([w.removed[i] for w in works], axis=0) if works else 0.0
            total = base - removed + added
            n = base_n - sum(w.removed_n[i] for w in works) + added_n
        mean = (np.asarray(total, np.float64) / max(n, 1)) if n else np.zeros(t.dim)
        return [float(x) for x in np.broadcast_to(mean, (t.dim,))], int(n)


@dataclass(frozen=True)
class _EmbedTask:
    """The broadcast state of one embed step's per-partition work."""

    job: EmbedJob
    context: Any
    """What the embedders' ``prepare`` read on the driver (the behaviour embedder's events)."""
    rows: dict[int, np.ndarray | None]
    """Per partition id: the scan positions to compute (None: every row)."""


def _embed_task(ctx: Any, part: Any) -> PartitionWork:
    """One partition of an embed step, wherever the runner runs it: compute
    (:func:`embed_partition`), stage, and return the statistics without the data."""
    task: _EmbedTask = ctx.shared
    work = embed_partition(ctx.scan, part, task.job, task.rows.get(part.id), task.context,
                           ctx.progress)
    if work.data is not None:
        ctx.stage(part, work.data, rows=work.rows)  # a stream is consumed here
        work.written = (work.data.num_rows if isinstance(work.data, pa.Table)
                        else work.computed)
    work.data = None
    work.rows = None
    return work


def _aux_fields(embedder: Embedder, column: str) -> list[pa.Field]:
    fn = getattr(embedder, "aux_fields", None)
    return list(fn(column)) if fn is not None else []
