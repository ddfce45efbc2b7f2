"""Fit a detector on a table, score every row in streamed batches, and write the scores back.

Write-back adds (once) and sets four columns by key, leaving every other column as it was:
``risk_score`` (float64, higher = more anomalous, on the scale of
:meth:`RiskDetector.risk_score`: a robust z-score of the detector's score against the fitted
customers', 0 = the median customer), ``risk_rank`` (int64, 1 = most anomalous, ties broken
by key), ``risk_flag`` (bool: ``risk_score > threshold``, the threshold being the fit rows'
risk-score quantile at ``1 - contamination`` or an explicit ``threshold`` on the same scale)
and ``risk_model`` (the persisted model's id). A non-finite score is never written: the run
fails first, with nothing written. Memory: the fit rows, one scan batch, and the keys and
scores of the table (about 30 bytes a row).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from ingest.runner import PartitionContext, Runner, TaskContext, runner_for
from vectorstore import Partition, Transaction, VectorStore, col
from vectorstore.filters import In

from .config import config_json, parse_detector
from .detector import RiskDetector
from .errors import InvalidRiskInput, RiskError
from .features import (
    FeatureSource,
    fit_matrix,
    iter_matrices,
    resolve_source,
    source_note,
    table_key,
)
from .persistence import META_KEY, load_model, save_model

Progress = Callable[[int, int | None], None]
"""Called after each scored batch with (rows scored so far, total rows if known)."""

SCORE_SCALE = "robust z: (detector score - fitted median) / (1.4826 * fitted MAD)"
"""How ``risk_score`` reads, recorded with every run (see :meth:`RiskDetector.risk_score`)."""

RISK_FIELDS = (pa.field("risk_score", pa.float64()), pa.field("risk_rank", pa.int64()),
               pa.field("risk_flag", pa.bool_()), pa.field("risk_model", pa.string()))


class RiskRun(BaseModel):
    """What one scoring run did (JSON-serialisable for ``--json``)."""

    table: str
    model_id: str
    detector: str
    members: list[str]
    """The detectors that scored: the detector itself, or the ensemble members used."""
    config: str
    source: str
    column: str | None
    """The vector column scored (None for attributes)."""
    n_rows: int
    n_fit_rows: int
    n_flagged: int
    threshold: float
    """Flag threshold on the risk-score scale: ``risk_flag = risk_score > threshold``."""
    contamination: float | None
    """The share of fitted customers the threshold flags (None for an explicit threshold)."""
    artifact: str | None
    messages: list[str]
    fit_seconds: float
    score_seconds: float


def fit(store: VectorStore, table: str, detector: Any = None, *, column: str | None = None,
        attributes: list[str] | None = None, fit_sample: int | float | None = None,
        seed: int = 0, batch_size: int = 65_536) -> tuple[RiskDetector, FeatureSource]:
    """Fit a detector on a table's vector column or numeric attributes (all rows or a sample)."""
    info = store.table_info(table)
    key = table_key(info)
    source = resolve_source(info, column, attributes)
    X = fit_matrix(store, table, source, key, fit_sample=fit_sample, seed=seed,
                   batch_size=batch_size)
    det = RiskDetector(parse_detector(detector)).fit(X)
    note = source_note(info, source, named=column is not None)
    if note:
        det.messages_.insert(0, note)
    return det, source


def score_stream(store: VectorStore, table: str, detector: RiskDetector, source: FeatureSource,
                 *, extra: tuple[str, ...] = (), batch_size: int = 65_536,
                 progress: Progress | None = None) -> tuple[pa.Table, np.ndarray]:
    """Score every row of ``table`` batch by batch: (key and ``extra`` columns, scores).

    ``progress(done, total)`` is called after each batch (``total`` is the table's row count
    when the scan started, or None if the store could not tell)."""
    key = table_key(store.table_info(table))
    total = _row_count(store, table) if progress is not None else None
    kept, scores, done = [], [], 0
    for batch, X in iter_matrices(store, table, source, key, extra=extra, batch_size=batch_size):
        scores.append(_checked_scores(detector, X, batch, table, key))
        # copied: a scanned batch's columns can share one allocation with its vectors
        names = [key, *[c for c in extra if c != key]]
        kept.append(pa.RecordBatch.from_arrays(
            [pa.concat_arrays([batch.column(c)]) for c in names], names=names))
        done += X.shape[0]
        if progress is not None:
            progress(done, total)
    if not kept:
        raise RiskError(f"table {table!r} is empty: nothing to score")
    return pa.Table.from_batches(kept), np.concatenate(scores)


def _row_count(store: VectorStore, table: str) -> int | None:
    try:
        return int(store.count(table))
    except Exception:  # a count is only a hint for progress reporting
        return None


def _ensure_columns(tx: Transaction) -> None:
    schema = tx.info.schema
    missing = []
    for f in RISK_FIELDS:
        if f.name in schema.names:
            if schema.field(f.name).type != f.type:
                raise RiskError(f"table {tx.name!r} has a column {f.name!r} of type "
                                f"{schema.field(f.name).type}; risk scoring writes {f.type}")
        else:
            missing.append(f)
    if missing:
        tx.add_columns(missing)


def write_scores(store: VectorStore, table: str, keys: pa.Array | pa.ChunkedArray,
                 scores: np.ndarray, *, threshold: float, model_id: str,
                 metadata: dict[str, Any] | None = None) -> int:
    """Set the four risk columns on the rows with these keys, and merge ``metadata`` into the
    table's metadata, in one commit; returns the rows matched.

    The columns are attached fragment by fragment (vectors and other columns are not
    rewritten); a failure or a killed process writes nothing.
    """
    key = table_key(store.table_info(table))
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        raise InvalidRiskInput(f"table {table!r}: {int((~np.isfinite(scores)).sum()):,} risk "
                               "score(s) are NaN or infinite; nothing was written")
    threshold = check_threshold(threshold)
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    rank = risk_ranks(keys, scores)
    data = pa.table({key: keys, "risk_score": scores, "risk_rank": rank,
                     "risk_flag": scores > threshold,
                     "risk_model": pa.repeat(pa.scalar(model_id, pa.string()), scores.size)})
    with store.transaction(table) as tx:
        _ensure_columns(tx)
        pending = tx.update(data, key=key)
        if metadata:
            tx.set_metadata(metadata)
    assert pending.result is not None
    return pending.result.updated + pending.result.unchanged


def check_threshold(threshold: float) -> float:
    """A finite flag threshold, or RiskError (NaN would flag nobody, silently)."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise RiskError(f"the flag threshold must be a number, got {threshold!r}") from None
    if not np.isfinite(value):
        raise RiskError(f"the flag threshold must be a finite number, got {threshold!r}")
    return value


def score_table(store: VectorStore, table: str, detector: Any = None, *,
                column: str | None = None, attributes: list[str] | None = None,
                fit_sample: int | float | None = None, seed: int = 0,
                threshold: float | None = None, batch_size: int = 65_536,
                progress: Progress | None = None,
                runner: Runner | str | None = None) -> RiskRun:
    """Fit, persist, score every row and write back ``risk_*``. ``detector`` is a name
    (``"iforest"``), a config or None for the default ensemble; ``fit_sample`` an int (rows)
    or a share; ``threshold`` overrides the contamination-based flag threshold;
    ``progress(done, total)`` is called after each scored batch."""
    if threshold is not None:
        check_threshold(threshold)
    t0 = time.perf_counter()
    det, source = fit(store, table, detector, column=column, attributes=attributes,
                      fit_sample=fit_sample, seed=seed, batch_size=batch_size)
    record = save_model(store, table, det, source)
    fit_s = time.perf_counter() - t0
    return _score_and_record(store, table, det, source, record, threshold, batch_size, fit_s,
                             progress, runner)


def rescore(store: VectorStore, table: str, model_id: str | None = None, *,
            threshold: float | None = None, batch_size: int = 65_536,
            progress: Progress | None = None, runner: Runner | str | None = None) -> RiskRun:
    """Score every row (new customers included) with the persisted model, without refitting;
    ``progress(done, total)`` is called after each scored batch."""
    det, source, meta = load_model(store, table, model_id)
    record = {**meta, "artifact": meta.get("artifact") or f"{table}.risk.{meta['model_id']}"}
    return _score_and_record(store, table, det, source, record, threshold, batch_size, 0.0,
                             progress, runner)


@dataclass
class _ScoreWork:
    """The broadcast state of per-partition scoring: the fitted detector and what to write."""

    detector: RiskDetector
    source: FeatureSource
    table: str
    key: str
    threshold: float
    model_id: str
    batch_size: int


def _score_partition(ctx: PartitionContext, part: Partition) -> tuple[pa.Array, np.ndarray]:
    """Score one partition and stage ``risk_score``, ``risk_flag`` and ``risk_model`` for its
    rows; returns its keys and scores (for the rank and the counts)."""
    w: _ScoreWork = ctx.shared
    key = w.key
    cols = list(dict.fromkeys([key, *w.source.columns]))
    keys: list[pa.Array] = []
    scores: list[np.ndarray] = []
    if part.rows:
        for batch in ctx.scan(part, columns=cols, batch_size=w.batch_size):
            if not batch.num_rows:
                continue
            X = w.source.matrix(batch, w.table, key)
            s = _checked_scores(w.detector, X, batch, w.table, key)
            keys.append(pa.concat_arrays([batch.column(key)]))  # own buffers, not the scan's
            scores.append(s)
            ctx.progress(batch.num_rows)
    k = pa.concat_arrays(keys) if keys else pa.array([], pa.string())
    sc = np.concatenate(scores) if scores else np.zeros(0)
    if len(sc):
        ctx.stage(part, pa.table({
            key: k, "risk_score": sc, "risk_flag": sc > w.threshold,
            "risk_model": pa.repeat(pa.scalar(w.model_id, pa.string()), len(sc))}))
    return k, sc


def _checked_scores(detector: RiskDetector, X: np.ndarray, batch: pa.RecordBatch, table: str,
                    key: str) -> np.ndarray:
    s = detector.to_risk_scale(detector.score_checked(X))  # matrix() checked X
    bad = ~np.isfinite(s)
    if bad.any():
        row = batch.column(key)[int(np.flatnonzero(bad)[0])].as_py()
        raise InvalidRiskInput(
            f"table {table!r}: {key}={row!r} got a non-finite risk score from "
            f"{'+'.join(detector.member_kinds_)} ({int(bad.sum()):,} row(s) in its batch); "
            "nothing was written")
    return s


def risk_ranks(keys: pa.Array | pa.ChunkedArray, scores: np.ndarray) -> np.ndarray:
    """``risk_rank``: 1 = the highest score, ties broken by key (ascending)."""
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    order = pc.sort_indices(pa.table({"s": scores, "k": keys}),
                            sort_keys=[("s", "descending"), ("k", "ascending")]).to_numpy()
    rank = np.empty(scores.size, dtype=np.int64)
    rank[order] = np.arange(1, scores.size + 1, dtype=np.int64)
    return rank


def _score_and_record(store: VectorStore, table: str, det: RiskDetector, source: FeatureSource,
                      record: dict[str, Any], threshold: float | None, batch_size: int,
                      fit_s: float, progress: Progress | None = None,
                      runner: Runner | str | None = None) -> RiskRun:
    """Score every partition (on the runner) and write the four columns and the run's
    metadata in one commit. The rank is the one global step: the driver ranks the scores
    the partitions returned and stages ``risk_rank`` partition by partition."""
    t1 = time.perf_counter()
    run = runner_for(store, runner, step="risk score")
    info = store.table_info(table)
    key = table_key(info)
    thr = check_threshold(det.threshold_ if threshold is None else float(threshold))
    work = _ScoreWork(det, source, table, key, thr, record["model_id"], batch_size)
    total = _row_count(store, table) if progress is not None else None
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    with store.transaction(table) as tx:
        _ensure_columns(tx)
        parts = [p for p in tx.partitions() if p.rows]
        outs = list(run.map_partitions(tx, _score_partition, shared=work, partitions=parts,
                                       progress=tick))
        n_rows = sum(len(sc) for _, sc in outs)
        if n_rows == 0:
            raise RiskError(f"table {table!r} is empty: nothing to score")
        keys = pa.chunked_array([k for k, _ in outs], outs[0][0].type)
        scores = np.concatenate([sc for _, sc in outs])
        rank = risk_ranks(keys, scores)
        start = 0
        for part, (k, sc) in zip(parts, outs, strict=True):
            if len(sc):
                tx.stage(part, pa.table({key: k, "risk_rank": rank[start:start + len(sc)]}))
            start += len(sc)
        n_flagged = int((scores > thr).sum())
        tx.set_metadata({META_KEY: {
            "model_id": record["model_id"], "artifact": record["artifact"],
            "sha256": record["sha256"], "detector": record["detector"],
            "config": record["config"], "source": record["source"],
            "members": list(det.member_kinds_), "threshold": thr,
            "contamination": det.config_.contamination if threshold is None else None,
            "score_scale": SCORE_SCALE, "n_rows": n_rows,
            "n_flagged": n_flagged, "scored_at": dt.datetime.now(dt.UTC).isoformat()}})
    score_s = time.perf_counter() - t1
    return RiskRun(table=table, model_id=record["model_id"], detector=det.config_.kind,
                   members=list(det.member_kinds_), config=config_json(det.config_),
                   source=source.describe(), column=source.column, n_rows=n_rows,
                   n_fit_rows=det.n_fit_rows_, n_flagged=n_flagged, threshold=thr,
                   contamination=det.config_.contamination if threshold is None else None,
                   artifact=record["artifact"], messages=list(det.messages_),
                   fit_seconds=fit_s, score_seconds=score_s)


def score_new(store: VectorStore, table: str, rows: pa.Table | pa.RecordBatch,
              model_id: str | None = None) -> pa.Table:
    """Score customers that are not (yet) in the table with the persisted model, no refit.

    ``rows`` needs the model's feature columns; returns them with ``risk_score`` (the
    written scale), ``risk_flag`` and ``risk_percentile`` (share of fit rows at or below).
    """
    det, source, meta = load_model(store, table, model_id)
    key = store.table_info(table).key
    missing = [c for c in source.columns if c not in rows.schema.names]
    if missing:
        raise RiskError(f"rows to score lack the model's feature column(s) {missing}")
    scores = det.risk_score(source.matrix(rows, table, key))
    out = rows if isinstance(rows, pa.Table) else pa.Table.from_batches([rows])
    recorded = store.table_info(table).metadata.get(META_KEY) or {}
    same = recorded.get("model_id") == meta["model_id"]
    thr = float(recorded["threshold"]) if same and "threshold" in recorded else det.threshold_
    return (out.append_column("risk_score", pa.array(scores))
            .append_column("risk_flag", pa.array(scores > thr))
            .append_column("risk_percentile", pa.array(det.percentile(scores))))


def top(store: VectorStore, table: str, n: int = 20, *, columns: list[str] | None = None,
        flagged_only: bool = False, runner: Runner | str | None = None) -> pa.Table:
    """The ``n`` most anomalous customers (highest ``risk_score``, ties by key: the order of
    ``risk_rank``), most anomalous first; with ``flagged_only``, those of them flagged.

    On a store with partitions each partition gives its own top ``n`` (on the runner) and
    the lists are merged, so no global sort is needed; elsewhere ``risk_rank <= n`` is read.
    """
    info = store.table_info(table)
    if "risk_rank" not in info.schema.names:
        raise RiskError(f"table {table!r} has no risk scores yet: run risk scoring first")
    if columns is None:
        columns = [c for c in info.schema.names if c not in info.vectors]
    cols = list(dict.fromkeys([*columns, *(f.name for f in RISK_FIELDS)]))
    key = info.key
    if key is None or not store.capabilities.partitions:
        flt = col("risk_rank") <= int(n)
        if flagged_only:
            flt = flt & (col("risk_flag") == True)  # noqa: E712 (a filter expression)
        return store.to_arrow(table, columns=cols, filter=flt).sort_by("risk_rank")
    run = runner_for(store, runner, step="risk top")
    lists = list(run.map(_top_of_partition, store.partitions(table), shared=(key, int(n)),
                         store=store))
    best = _top_n(pa.concat_tables(lists) if lists else
                  pa.table({key: pa.array([], info.schema.field(key).type),
                            "risk_score": pa.array([], pa.float64())}), key, int(n))
    ids = best.column(key).to_pylist()
    if not ids:
        return store.to_arrow(table, columns=cols, filter=col("risk_rank") < 0)
    rows = store.to_arrow(table, columns=list(dict.fromkeys([*cols, key])),
                          filter=In(key, tuple(ids)))
    order = pc.index_in(pa.array(ids, rows.schema.field(key).type), value_set=rows.column(key))
    rows = rows.take(order)
    if flagged_only:
        rows = rows.filter(pc.fill_null(rows.column("risk_flag"), False))
    return rows.select(cols)


def _top_n(t: pa.Table, key: str, n: int) -> pa.Table:
    """The ``n`` rows of highest ``risk_score`` (ties: lowest key first)."""
    order = pc.sort_indices(t, sort_keys=[("risk_score", "descending"), (key, "ascending")],
                            null_placement="at_end")
    return t.take(order[:n])


def _top_of_partition(ctx: TaskContext, part: Partition) -> pa.Table:
    """One partition's ``n`` most anomalous rows (key and score)."""
    key, n = ctx.shared
    assert ctx.store is not None
    t = pa.Table.from_batches(list(ctx.store.scan_partition(part, columns=[key, "risk_score"])))
    t = t.filter(pc.is_valid(t.column("risk_score"))) if t.num_rows else t
    if t.num_rows == 0:
        return t
    return _top_n(t, key, n).combine_chunks()
