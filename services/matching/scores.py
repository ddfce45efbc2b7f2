"""Precomputed propensity scores: written back once, served by ``match`` with scalar filters.

:func:`fit_and_write` fits a product's propensity model, persists it
(:mod:`services.matching.model_store`), scores every customer in streamed blocks, writes the
probabilities to ``propensity_<product>`` (:func:`write_scores`, the one write-back) and records
in ``metadata["propensity"][product]``: the column, model id, fit and score times, the verified
model record, the base rate, the cross-validated assessment, leakage warnings and a ladder of
score thresholds (a score at or just below the top 0.1%, 0.3%, 1%, ... of all customers, from
per-partition histograms of the scores: :func:`~services.matching.propensity.ladder_counts`).
Each partition is scored on the runner (:mod:`ingest.runner`), the model broadcast.

:func:`top_from_column` serves a top-k from the stored column without reading every eligible
row: it asks the store for the rows passing the filter *and* scoring at least the ladder's
threshold, the first rung expected to hold ``k`` rows under a filter keeping 1/30 of the
customers, and steps down the ladder only when fewer came back. Any row below the threshold
scores less than every row returned, so the answer is exact; with a scalar index on the score
column each step is an index lookup.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ingest.datamodel import META_CONSOLIDATION, META_EMBEDDERS, META_PROPENSITY
from vectorstore import PendingWrite, TableInfo, Transaction, VectorStore
from vectorstore.filters import Cmp, Filter, all_of

from ..errors import MatchingError
from ._data import CUSTOMER_KEY, CUSTOMERS, Progress, holdings_labeller
from .model_store import load_model, save_model
from .propensity import (
    SCORE_ROWS,
    PropensityModel,
    fit_propensity,
    ladder_counts,
    ladder_from_counts,
)

META_KEY = META_PROPENSITY
PREFIX = "propensity_"
LADDER = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
SPREAD = 30
"""The ladder's first rung holds ``SPREAD * k`` customers, so one lookup answers a filter that
keeps at least 1/30 of them; a narrower filter steps down the ladder."""
_PLAIN = re.compile(r"^[A-Za-z0-9_]{1,40}$")


def score_column(product: str) -> str:
    """The column holding ``product``'s probabilities (a digest keeps odd ids apart)."""
    if _PLAIN.match(product):
        return PREFIX + product
    slug = re.sub(r"[^A-Za-z0-9_]+", "_", product)[:24].strip("_") or "p"
    return f"{PREFIX}{slug}_{hashlib.sha256(product.encode()).hexdigest()[:8]}"


def artifact_name(table: str, product: str) -> str:
    """The prefix of ``product``'s model artifacts (``save_artifact`` appends the digest)."""
    return f"{table}.propensity.{hashlib.sha256(product.encode()).hexdigest()[:16]}"


def stored_entry(info: TableInfo, product: str) -> dict[str, Any] | None:
    """The metadata entry of ``product``'s written scores, if its column exists."""
    entry = (info.metadata.get(META_KEY) or {}).get(product)
    if not entry or entry.get("column") not in info.schema.names:
        return None
    return dict(entry)


def write_scores(tx: Transaction, column: str, batches: Iterable[pa.RecordBatch],
                 key: str = CUSTOMER_KEY) -> PendingWrite | None:
    """Stage keyed probabilities (``key``, ``score``) into ``column`` (added when missing)
    in the step's transaction; the pending write's result is known after the commit."""
    if column not in tx.info.schema.names:
        tx.add_columns([pa.field(column, pa.float64())])
    data = [pa.record_batch([b.column(0), b.column(1)], names=[key, column]) for b in batches]
    return tx.update(data, key=key) if data else None


def _ladder(scores: np.ndarray) -> list[list[float]]:
    """The ladder of one array of scores (as the per-partition counts would give it)."""
    return ladder_from_counts(ladder_counts(scores), LADDER)


def fit_and_write(store: VectorStore, product: str, *, table: str = CUSTOMERS, seed: int = 0,
                  options: dict[str, Any] | None = None,
                  progress: Progress | None = None, runner: Any = None) -> dict[str, Any]:
    """Fit, persist, score and write ``product``'s propensity; returns the metadata entry.

    The model is stored first (a content-addressed artifact nothing refers to until the
    commit); then the scores column, every customer's probability and
    ``metadata["propensity"][product]`` are one commit, so a failure or a kill leaves the
    table as it was and a re-run (the same fit, the same bytes) completes it. The scalar
    index on the column is built after the commit (an index, not data: a kill before it
    leaves the scores served by a scan until ``kindred index`` or the next fit builds it).
    """
    fitted_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    model = fit_propensity(store, table, holdings_labeller(product),
                           [CUSTOMER_KEY, "holdings"], product=product, seed=seed,
                           **(options or {}))
    name = artifact_name(table, product)
    record = save_model(store, name, model.models, {"product": product, "table": table})
    entry, _ = _score(store, table, product, model, stale_only=False, progress=progress,
                      runner=runner,
                      fitted={"model_id": record["sha256"][:16], "fitted_at": fitted_at,
                              "model": record, "state": model.state(),
                              "base_rate": model.base_rate,
                              "assessment": model.details["assessment"],
                              "leakage": model.details["leakage"]})
    if store.capabilities.scalar_index:
        store.create_scalar_index(table, entry["column"])
    return entry


def refresh_scores(store: VectorStore, product: str, *, table: str = CUSTOMERS,
                   stale_only: bool = True, progress: Progress | None = None,
                   runner: Any = None) -> dict[str, Any]:
    """Score ``product``'s propensity with its persisted model (no refit): the rows new or
    changed since they were scored (every row when the vector columns the model reads were
    re-fitted, or it reads features measured to a consolidation ``as_of`` that moved).
    Returns ``{"product", "column", "rows", "skipped", "mode"}``."""
    info = store.table_info(table)
    entry = stored_entry(info, product)
    if entry is None:
        raise MatchingError(f"product {product!r} has no fitted propensity model: run "
                            f"`kindred fit {product}` first")
    model = load_stored_model(store, entry)
    same = entry.get("sources") == _sources(info, model) and \
        entry.get("as_of") == _as_of(info, model)
    _, run = _score(store, table, product, model, stale_only=stale_only and same,
                    progress=progress, runner=runner)
    return {"product": product, "column": entry["column"], "rows": run.rows,
            "skipped": run.skipped, "mode": run.mode}


def _sources(info: TableInfo, model: PropensityModel) -> dict[str, str]:
    """The fitted states of the vector columns the model's lookalike features read."""
    emb = info.metadata.get(META_EMBEDDERS) or {}
    return {c: str((emb.get(c) or {}).get("state_sha256")) for c in model.spec.similarity}


def _as_of(info: TableInfo, model: PropensityModel) -> str | None:
    from ingest.freshness import AGING_FEATURES

    if not set(model.spec.columns) & set(AGING_FEATURES):
        return None
    return (info.metadata.get(META_CONSOLIDATION) or {}).get("as_of")


def _score(store: VectorStore, table: str, product: str, model: PropensityModel, *,
           stale_only: bool, progress: Progress | None,
           fitted: dict[str, Any] | None = None, runner: Any = None
           ) -> tuple[dict[str, Any], Any]:
    """Score and write in one commit: the stale rows (or all), the column's stamp, and the
    metadata entry (whole when ``fitted`` is given, else its counters)."""
    from ingest.derived import TALLY, write_output

    column = score_column(product)

    def compute(batch: pa.RecordBatch) -> dict[str, Any]:
        p = model.score_rows(batch)
        if not np.isfinite(p).all():  # never write or show a non-finite number
            raise MatchingError(f"product {product!r}: the model produced non-finite scores; "
                                "nothing was written")
        return {TALLY: ladder_counts(p), column: pa.array(p, pa.float64())}

    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    with store.transaction(table) as tx:
        info = tx.base
        run = write_output(tx, column, model.columns, compute,
                           fields=[pa.field(column, pa.float64())], stale_only=stale_only,
                           batch_size=SCORE_ROWS,
                           progress=progress, runner=runner)
        total = run.rows + run.skipped
        if fitted is not None:
            entry = {"column": column, **fitted, "scored_at": now, "refreshed_at": now,
                     "rows_scored": total, "sources": _sources(info, model),
                     "as_of": _as_of(info, model),
                     "thresholds": ladder_from_counts(run.tally, LADDER)}
            tx.set_metadata({(META_KEY, product): entry})
        else:
            entry = dict(stored_entry(info, product) or {})
            if run.rows:
                tx.set_metadata({(META_KEY, product, "rows_scored"): total,
                                 (META_KEY, product, "refreshed_at"): now})
            if run.rows and run.mode == "all":
                tx.set_metadata({(META_KEY, product, "thresholds"): ladder_from_counts(
                    run.tally, LADDER), (META_KEY, product, "sources"): _sources(info, model),
                    (META_KEY, product, "as_of"): _as_of(info, model)})
    return entry, run


def load_stored_model(store: VectorStore, entry: dict[str, Any]) -> PropensityModel:
    """The persisted model of a metadata entry, verified (checksum and versions)."""
    models = load_model(store, entry["model"])
    return PropensityModel.from_state(entry["state"], models)


def top_from_column(store: VectorStore, table: str, column: str, filter: Filter | None,
                    k: int, columns: Sequence[str], entry: dict[str, Any],
                    min_score: float | None = None) -> tuple[pa.Table, np.ndarray]:
    """The exact top ``k`` rows by the stored ``column`` among those passing ``filter``
    (rows without a score are never returned); ``entry`` is the product's metadata entry."""
    cols = list(dict.fromkeys([*columns, column]))
    rows = int(entry.get("rows_scored") or 0)
    # the first rung expects k rows when the filter keeps 1/SPREAD of the customers
    rungs: list[float | None] = [float(t) for f, t in entry.get("thresholds") or []
                                 if f < 1.0 and f * rows >= SPREAD * k]
    rungs.append(None)  # finally every scored row
    floor_min = min_score if min_score is not None else -np.inf
    got: pa.Table | None = None
    for t in rungs:
        floor = max(t, floor_min) if t is not None else floor_min
        cut = Cmp(column, ">=", float(floor)) if np.isfinite(floor) else Cmp(column, ">=", -1.0)
        got = store.to_arrow(table, columns=cols, filter=all_of([filter, cut]))
        if got.num_rows >= k or t is None or t <= floor_min:
            break
    assert got is not None
    s = np.asarray(got.column(column).to_numpy(zero_copy_only=False), dtype=np.float64)
    if len(s) > k:
        top = np.argpartition(-s, k - 1)[:k]
        got, s = got.take(pa.array(top)), s[top]
    order = np.argsort(-s, kind="stable")
    return got.take(pa.array(order)).select(list(columns)), s[order]
