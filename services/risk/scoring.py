"""Fit a detector on a table, score its rows in streamed batches, and write the scores back.

Write-back adds (once) and sets four columns, leaving every other column as it was:
``risk_score`` (float64, higher = more anomalous, on the scale of
:meth:`RiskDetector.risk_score`: a robust z-score of the detector's score against the fitted
customers', 0 = the median customer), ``risk_percentile`` (float64, the share 0-100 of the
fitted customers' scores at or below it), ``risk_flag`` (bool: ``risk_score > threshold``, the
threshold being the fit rows' risk-score quantile at ``1 - contamination`` or an explicit
``threshold`` on the same scale) and ``risk_model`` (the persisted model's id), with the
row's stamp in ``stamp_risk`` (:mod:`ingest.freshness`). Every value is a function of the row
and the model alone (no global rank), so scoring new or changed customers with the persisted
model (:func:`rescore` with ``stale_only``) never rewrites the others; ``risk top`` orders by
score, merging per-partition top-N lists. A non-finite score is never written: the run fails
first, with nothing written.
Memory: the fit rows and one partition's scores.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from ingest.datamodel import META_EMBEDDERS
from ingest.derived import TALLY, write_output
from ingest.progress import Progress
from ingest.runner import TaskContext
from vectorstore import Transaction, VectorStore
from vectorstore.schema import MetadataPatch

from .config import config_json
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

SCORE_SCALE = "robust z: (detector score - fitted median) / (1.4826 * fitted MAD)"
"""How ``risk_score`` reads, recorded with every run (see :meth:`RiskDetector.risk_score`)."""

RISK_FIELDS = (pa.field("risk_score", pa.float64()), pa.field("risk_percentile", pa.float64()),
               pa.field("risk_flag", pa.bool_()), pa.field("risk_model", pa.string()))
OUTPUT = "risk"
LEGACY_RANK = "risk_rank"
"""The global rank older versions stored: dropped by the next full scoring run."""


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
    rows_scored: int = 0
    """Rows this run scored and wrote (all of them, or the stale ones)."""
    mode: str = "all"
    """``all`` (every row scored) or ``stale`` (only rows new or changed since)."""


def fit(store: VectorStore, table: str, detector: Any = None, *, column: str | None = None,
        attributes: list[str] | None = None, fit_sample: int | float | None = None,
        seed: int = 0, batch_size: int = 65_536) -> tuple[RiskDetector, FeatureSource]:
    """Fit a detector on a table's vector column or numeric attributes (all rows or a sample)."""
    info = store.table_info(table)
    key = table_key(info)
    source = resolve_source(info, column, attributes)
    notes: list[str] = []
    X = fit_matrix(store, table, source, key, fit_sample=fit_sample, seed=seed,
                   batch_size=batch_size, notes=notes)
    det = RiskDetector.from_config(detector).fit(X)
    note = source_note(info, source, named=column is not None)
    det.messages_[:0] = [*notes, *([note] if note else [])]
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
        s = detector.to_risk_scale(detector.score_checked(X))  # iter_matrices checked X
        _refuse_non_finite(s, batch, key, table, detector)
        scores.append(s)
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
                 percentiles: np.ndarray | None = None,
                 metadata: MetadataPatch | None = None) -> int:
    """Set the risk columns on the rows with these keys, and merge ``metadata`` into the
    table's metadata, in one commit; returns the rows matched. A failure or a killed process
    writes nothing."""
    key = table_key(store.table_info(table))
    scores = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(scores).all():
        raise InvalidRiskInput(f"table {table!r}: {int((~np.isfinite(scores)).sum()):,} risk "
                               "score(s) are NaN or infinite; nothing was written")
    threshold = check_threshold(threshold)
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    data = pa.table({key: keys, "risk_score": scores,
                     "risk_percentile": pa.array(percentiles, pa.float64())
                     if percentiles is not None else pa.nulls(scores.size, pa.float64()),
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
                progress: Progress | None = None, runner: Any = None) -> RiskRun:
    """Fit, persist, score every row and write back ``risk_*``. ``detector`` is a name
    (``"iforest"``), a config or None for the default ensemble; ``fit_sample`` an int (rows)
    or a share; ``threshold`` overrides the contamination-based flag threshold;
    ``progress(done, total)`` is called after each scored batch. The fit runs here; the
    scoring runs per partition on ``runner`` (:mod:`ingest.runner`)."""
    if threshold is not None:
        check_threshold(threshold)
    t0 = time.perf_counter()
    det, source = fit(store, table, detector, column=column, attributes=attributes,
                      fit_sample=fit_sample, seed=seed, batch_size=batch_size)
    record = save_model(store, table, det, source)
    fit_s = time.perf_counter() - t0
    return _score_and_record(store, table, det, source, record, threshold, batch_size, fit_s,
                             progress, runner=runner)


def rescore(store: VectorStore, table: str, model_id: str | None = None, *,
            threshold: float | None = None, stale_only: bool = False,
            batch_size: int = 65_536, progress: Progress | None = None,
            runner: Any = None) -> RiskRun:
    """Score rows with the persisted model, without refitting: every row, or with
    ``stale_only`` only the rows new or changed since they were scored (when the table was
    scored by this model, with this threshold, on the same fitted source column; otherwise
    every row). ``progress(done, total)`` is called after each scored partition."""
    det, source, meta = load_model(store, table, model_id)
    record = dict(meta)  # load_model names the artifact it read
    return _score_and_record(store, table, det, source, record, threshold, batch_size, 0.0,
                             progress, stale_only=stale_only, runner=runner)


def _source_state(info: Any, source: FeatureSource) -> str | None:
    """The fitted state of the vector column scored (its re-fit makes every score stale)."""
    if not source.column:
        return None
    entry = (info.metadata.get(META_EMBEDDERS) or {}).get(source.column) or {}
    return entry.get("state_sha256")


def _score_and_record(store: VectorStore, table: str, det: RiskDetector, source: FeatureSource,
                      record: dict[str, Any], threshold: float | None, batch_size: int,
                      fit_s: float, progress: Progress | None = None, *,
                      stale_only: bool = False, runner: Any = None) -> RiskRun:
    t1 = time.perf_counter()
    thr = det.threshold_ if threshold is None else check_threshold(threshold)
    model_id = record["model_id"]
    with store.transaction(table) as tx:
        _ensure_columns(tx)
        info = tx.base
        key = table_key(info)
        old = dict(info.metadata.get(META_KEY) or {})
        same = (old.get("model_id") == model_id and old.get("threshold") == thr
                and old.get("source_state") == _source_state(info, source)
                and "risk_percentile" in info.schema.names)
        incremental = stale_only and same

        def compute(batch: pa.RecordBatch) -> dict[str, pa.Array]:
            X = source.matrix(batch, table, key)
            s = det.to_risk_scale(det.score_checked(X))
            _refuse_non_finite(s, batch, key, table, det)
            flags = s > thr
            counts = {"new": int(flags.sum()), "old": 0}
            if incremental and "risk_flag" in batch.schema.names:
                counts["old"] = int(pc.sum(pc.fill_null(batch.column("risk_flag"),
                                                        False)).as_py() or 0)
            return {TALLY: counts,
                    "risk_score": pa.array(s, pa.float64()),
                    "risk_percentile": pa.array(det.percentile(s), pa.float64()),
                    "risk_flag": pa.array(flags),
                    "risk_model": pa.repeat(pa.scalar(model_id, pa.string()), len(s))}

        inputs = [*source.columns, *(["risk_flag"] if incremental else [])]
        run = write_output(tx, OUTPUT, inputs, compute, fields=RISK_FIELDS,
                           stale_only=incremental, batch_size=batch_size, progress=progress,
                           runner=runner)
        tally = {"new": run.tally.get("new", 0), "old": run.tally.get("old", 0)}
        n_rows = run.rows + run.skipped
        if run.rows == 0 and n_rows == 0:
            raise RiskError(f"table {table!r} is empty: nothing to score")
        n_flagged = (int(old.get("n_flagged") or 0) - tally["old"] + tally["new"]) \
            if incremental else tally["new"]
        now = dt.datetime.now(dt.UTC).isoformat()
        if incremental:
            if run.rows:
                tx.set_metadata({(META_KEY, "n_rows"): n_rows,
                                 (META_KEY, "n_flagged"): n_flagged,
                                 (META_KEY, "refreshed_at"): now})
        else:
            tx.set_metadata({META_KEY: {
                "model_id": model_id, "artifact": record["artifact"],
                "sha256": record["sha256"], "detector": record["detector"],
                "config": record["config"], "source": record["source"],
                "source_state": _source_state(info, source),
                "members": list(det.member_kinds_), "threshold": thr,
                "contamination": det.config_.contamination if threshold is None else None,
                "score_scale": SCORE_SCALE, "n_rows": n_rows, "n_flagged": n_flagged,
                "scored_at": now, "refreshed_at": now}})
    if not incremental and LEGACY_RANK in store.table_info(table).schema.names:
        store.drop_columns(table, [LEGACY_RANK])  # a global rank cannot stay right
    score_s = time.perf_counter() - t1
    return RiskRun(table=table, model_id=model_id, detector=det.config_.kind,
                   members=list(det.member_kinds_), config=config_json(det.config_),
                   source=source.describe(), column=source.column, n_rows=n_rows,
                   n_fit_rows=det.n_fit_rows_, n_flagged=n_flagged, threshold=thr,
                   contamination=det.config_.contamination if threshold is None else None,
                   artifact=record["artifact"], messages=list(det.messages_),
                   fit_seconds=fit_s, score_seconds=score_s, rows_scored=run.rows,
                   mode=run.mode)


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


def _best(keys: pa.Array, scores: np.ndarray, n: int) -> tuple[pa.Array, np.ndarray]:
    """The ``n`` best of (key, score): highest score first, ties by key ascending."""
    if len(scores) > n:
        # every row scoring above the n-th best, plus the ties at it (ordered by key below)
        cut = np.partition(-scores, n - 1)[n - 1]
        keep = np.flatnonzero(-scores <= cut)
        keys, scores = keys.take(pa.array(keep)), scores[keep]
    order = pa.table({"k": keys, "s": scores}).sort_by([("s", "descending"), ("k", "ascending")])
    order = order.slice(0, n)
    return order.column("k").combine_chunks(), order.column("s").to_numpy()


def _top_partition(ctx: TaskContext, part: Any) -> tuple[pa.Array, np.ndarray]:
    """One partition's best ``n`` (key, risk_score) pairs: the per-partition list ``top``
    merges (a function of the partition alone, so it runs on any worker)."""
    key, n, flagged_only = ctx.shared
    assert ctx.store is not None
    best_k: pa.Array | None = None
    best_s = np.zeros(0)
    cols = [key, "risk_score", *(["risk_flag"] if flagged_only else [])]
    for b in ctx.store.scan_partition(part, columns=cols, batch_size=262_144):
        ok = pc.is_valid(b.column("risk_score"))
        if flagged_only:
            ok = pc.and_(ok, pc.fill_null(b.column("risk_flag"), False))
        b = b.filter(ok)
        if not b.num_rows:
            continue
        k = b.column(key) if best_k is None else pa.concat_arrays([best_k, b.column(key)])
        sc = np.concatenate([best_s, b.column("risk_score").to_numpy(zero_copy_only=False)])
        best_k, best_s = _best(k, sc, n)
    if best_k is None:
        return pa.array([], ctx.store.table_info(part.table).schema.field(key).type), best_s
    return best_k, best_s


def top(store: VectorStore, table: str, n: int = 20, *, columns: list[str] | None = None,
        flagged_only: bool = False, runner: Any = None) -> pa.Table:
    """The ``n`` most anomalous customers by ``risk_score`` (ties by key), most anomalous
    first, with their position in ``risk_rank`` (1 = most anomalous), computed at query time
    (no stored global rank). Each partition's best ``n`` (key and score only) is found on
    ``runner`` (:mod:`ingest.runner`), the lists are merged here, and only the ``n`` rows
    are then read in full; the same answer on every runner."""
    from ingest.freshness import is_derived
    from ingest.runner import runner_for
    from vectorstore.filters import In

    info = store.table_info(table)
    key = table_key(info)
    if "risk_score" not in info.schema.names or "risk_flag" not in info.schema.names:
        raise RiskError(f"table {table!r} has no risk scores yet: run risk scoring first")
    if columns is None:
        columns = [c for c in info.schema.names if c not in info.vectors and
                   (not is_derived(c) or c.startswith("risk_"))]
    cols = list(dict.fromkeys([key, *columns, *(f.name for f in RISK_FIELDS
                                                if f.name in info.schema.names)]))
    empty = pa.table({c: pa.array([], info.schema.field(c).type) for c in cols}
                     ).append_column("risk_rank", pa.array([], pa.int64()))
    if n <= 0:
        return empty
    run = runner_for(store, runner, step="risk top")
    parts = [p for p in store.partitions(table) if p.rows]
    lists = list(run.map(_top_partition, parts, shared=(key, n, flagged_only), store=store))
    if not lists or not sum(len(s_) for _, s_ in lists):
        return empty
    keys, _ = _best(pa.concat_arrays([k for k, _ in lists]),
                    np.concatenate([s_ for _, s_ in lists]), n)
    rows = store.to_arrow(table, columns=cols, filter=In(key, tuple(keys.to_pylist())))
    rows = rows.sort_by([("risk_score", "descending"), (key, "ascending")]).slice(0, n)
    return rows.append_column("risk_rank", pa.array(np.arange(1, rows.num_rows + 1)))


def _refuse_non_finite(s: np.ndarray, batch: pa.RecordBatch, key: str, table: str,
                       detector: RiskDetector) -> None:
    """InvalidRiskInput naming the first row of ``batch`` whose score is not finite (a
    non-finite score is never written or shown)."""
    bad = ~np.isfinite(s)
    if bad.any():
        row = batch.column(key)[int(np.flatnonzero(bad)[0])].as_py()
        raise InvalidRiskInput(
            f"table {table!r}: {key}={row!r} got a non-finite risk score from "
            f"{'+'.join(detector.member_kinds_)} ({int(bad.sum()):,} row(s) in its batch); "
            "nothing was written")
