"""Writing behaviour recommendations: every customer with a fitted recommender, or the stale ones.

:func:`recommend_behaviour` fits the recommender of :mod:`services.matching.behaviour` on every
event, stores it (content-addressed, before the commit that names it) and writes each
customer's top ``top_n`` to ``rec_products``/``rec_scores``. A customer's list is a function of
their own events and holdings and of the fitted state only: their factors are folded in from
their BM25-weighted counts with the fitted population's statistics, for the customers the
model was fitted on as for new ones. So :func:`refresh_behaviour` can recompute only the
customers new or changed since (their holdings, or consolidated new events) with the stored
recommender, and the others keep their lists.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from ingest.datamodel import CUSTOMERS
from vectorstore import VectorStore

from ..errors import MatchingError, NotEnoughData
from ._data import CUSTOMER_KEY, HOLDINGS, PRODUCT_KEY, PRODUCTS, Progress
from .behaviour import (
    BLOCK,
    Interactions,
    Recommender,
    finite_or_none,
    fit_recommender,
    history_rows,
)
from .interactions import read_interactions
from .recommend import META_KEY, OUTPUT, REC_FIELDS, REC_PRODUCTS, REC_SCORES, digest, lists


def _allowed(store: VectorStore, rec: Recommender, only_products: bool,
             products_table: str) -> np.ndarray:
    allowed = np.ones(len(rec.items), dtype=bool)
    if only_products and store.has_table(products_table):
        ids = store.to_arrow(products_table, columns=[PRODUCT_KEY]).column(PRODUCT_KEY)
        allowed = np.isin(np.asarray(rec.items, dtype=object), ids.to_pylist())
    if not allowed.any():
        raise MatchingError("no recommendable item: none of the event items is a product")
    return allowed


def _no_events() -> Interactions:
    z = np.zeros(0, np.int32)
    return Interactions(pa.array([], pa.string()), [], z, z, np.zeros(0, np.int64), z)


class _History:
    """Events as (counts, days, active days) per customer in a recommender's item space,
    computed once, looked up by customer id."""

    def __init__(self, rec: Recommender, inter: Interactions) -> None:
        import pandas as pd

        self.width = len(rec.items)
        if len(inter.customers) == 0:
            self.rows = pd.Index([])
            return
        self.counts, self.days, self.active = history_rows(rec, inter, inter.customers)
        self.rows = pd.Index(inter.customers.to_numpy(zero_copy_only=False))

    def get(self, ids: pa.Array) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
        n = len(ids)
        pos = self.rows.get_indexer(ids.to_numpy(zero_copy_only=False)) if len(self.rows) \
            else np.full(n, -1)
        known = pos >= 0
        if not known.any():
            empty = sp.csr_matrix((n, self.width), dtype=np.float64)
            return empty, empty, np.zeros(n)
        pick = sp.csr_matrix((np.ones(int(known.sum())), (np.flatnonzero(known), pos[known])),
                             shape=(n, len(self.rows)))
        return ((pick @ self.counts).tocsr(), (pick @ self.days).tocsr(),
                np.where(known, self.active[np.maximum(pos, 0)], 0.0))


class _Lists:
    """Top-n lists of customer rows (key, holdings) against their events' history."""

    def __init__(self, rec: Recommender, allowed: np.ndarray, top_n: int) -> None:
        self.rec, self.allowed, self.top_n = rec, allowed, min(top_n, int(allowed.sum()))
        self.items = pa.array(rec.items, pa.string())
        self.history = _History(rec, _no_events())

    def __call__(self, batch: pa.RecordBatch) -> dict[str, pa.Array]:
        import pandas as pd

        keys = batch.column(CUSTOMER_KEY)
        counts, days, active = self.history.get(keys)
        U = self.rec.factors(counts.tocsr())
        lp = self.rec.log_prior(batch if self.rec.attribute_columns else None)
        p_out, s_out = [], []
        for lo in range(0, batch.num_rows, BLOCK):
            sl = slice(lo, min(lo + BLOCK, batch.num_rows))
            sc = self.rec.scores(days[sl], active[sl], U[sl],
                                 log_prior=None if lp is None else lp[sl])
            sc[:, ~self.allowed] = -np.inf
            if HOLDINGS in batch.schema.names:  # held one-time products are never recommended
                hb = batch.column(HOLDINGS).slice(sl.start, sl.stop - sl.start)
                parents = pc.list_parent_indices(hb).to_numpy()
                j = pd.Index(self.rec.items).get_indexer(
                    pc.list_flatten(hb).to_numpy(zero_copy_only=False))
                ok = j >= 0
                ok[ok] &= ~self.rec.repeatable[j[ok]]
                sc[parents[ok], j[ok]] = -np.inf
            idx, top = self.rec.top(sc, self.top_n)
            rp, rs = lists(idx, top, self.items)
            p_out.append(rp)
            s_out.append(rs)
        return {REC_PRODUCTS: pa.concat_arrays(p_out), REC_SCORES: pa.concat_arrays(s_out)}


def _write(store: VectorStore, rec: Recommender, name: str, sha: str, *, top_n: int,
           only_products: bool, table: str, products_table: str, stale_only: bool,
           batch_size: int, progress: Progress | None, inter: Interactions | None = None,
           runner: Any = None) -> Any:
    from ingest.derived import write_output

    allowed = _allowed(store, rec, only_products, products_table)
    options = {"method": "behavior", "artifact": name, "sha256": sha, "top_n": top_n,
               "only_products": only_products,
               "items": digest(np.asarray(rec.items, dtype=str), allowed)}
    make = _Lists(rec, allowed, top_n)

    def prepare(keys: pa.Array | None) -> None:
        if inter is not None and keys is None:
            make.history = _History(rec, inter)
            return
        try:
            make.history = _History(rec, read_interactions(store, ids=keys))
        except NotEnoughData:
            make.history = _History(rec, _no_events())

    with store.transaction(table) as tx:
        old = tx.base.metadata.get(META_KEY) or {}
        same = {k: old.get(k) for k in options} == options
        has_holdings = HOLDINGS in tx.base.schema.names
        inputs = ([HOLDINGS] if has_holdings else []) + rec.attribute_columns
        run = write_output(tx, OUTPUT, inputs, make,
                           fields=REC_FIELDS, stale_only=stale_only and same,
                           batch_size=batch_size, progress=progress, prepare=prepare,
                           runner=runner)
        if run.rows or not same:
            import datetime as dt

            tx.set_metadata({META_KEY: {**options, "rows": run.rows + run.skipped,
                                        "refreshed_at": dt.datetime.now(dt.UTC).isoformat(
                                            timespec="seconds")}})
    return run


def recommend_behaviour(store: VectorStore, *, top_n: int = 10, table: str = CUSTOMERS,
                        only_products: bool = True, write: bool = True, seed: int = 0,
                        products_table: str = PRODUCTS, batch_size: int = 65_536,
                        progress: Any = None, runner: Any = None) -> dict[str, Any]:
    """Fit the recommender on every event, save it, and write each customer's top ``top_n``
    to ``rec_products``/``rec_scores`` (only products-table items when ``only_products`` and
    a products table exists). Held items that are not repeatable are never recommended.
    The fit runs here; each partition's lists are computed on ``runner``."""
    if not isinstance(top_n, int) or top_n <= 0:
        raise MatchingError(f"top_n must be a positive integer, got {top_n!r}")
    t0 = time.perf_counter()
    inter = read_interactions(store)
    rec, _ = fit_recommender(store, inter, seed=seed, products_table=products_table)
    allowed = _allowed(store, rec, only_products, products_table)
    t_fit = time.perf_counter() - t0
    rows = store.count(table)
    if write:
        name, sha = rec.save(store)
        run = _write(store, rec, name, sha, top_n=top_n, only_products=only_products,
                     table=table, products_table=products_table, stale_only=False,
                     batch_size=batch_size, progress=progress, inter=inter, runner=runner)
        rows = run.rows
    return {"method": "behavior", "customers": rows, "products": int(allowed.sum()),
            "top_n": top_n, "exclude_held": True, "written": write and rows > 0,
            "seconds_scoring": t_fit, "seconds_writing": time.perf_counter() - t0 - t_fit,
            "items": len(rec.items), "shrink": finite_or_none(rec.shrink),
            "w_factors": rec.w_factors, "mode": "all"}


def refresh_behaviour(store: VectorStore, *, table: str = CUSTOMERS,
                      products_table: str = PRODUCTS, stale_only: bool = True,
                      batch_size: int = 65_536, progress: Progress | None = None,
                      runner: Any = None) -> dict[str, Any]:
    """The recommendations of customers new or changed since, with the stored recommender
    (all customers when the products or options changed). Returns what was written."""
    meta = store.table_info(table).metadata.get(META_KEY) or {}
    if meta.get("method") != "behavior" or not meta.get("artifact"):
        raise MatchingError("no behaviour recommendations recorded: run `kindred recommend`")
    rec = Recommender.load(store, meta["artifact"])
    run = _write(store, rec, meta["artifact"], meta.get("sha256", ""),
                 top_n=int(meta.get("top_n", 10)),
                 only_products=bool(meta.get("only_products", True)), table=table,
                 products_table=products_table, stale_only=stale_only,
                 batch_size=batch_size, progress=progress, runner=runner)
    return {"method": "behavior", "rows": run.rows, "skipped": run.skipped, "mode": run.mode}


def refresh_recommendations(store: VectorStore, *, table: str = CUSTOMERS,
                            stale_only: bool = True, progress: Progress | None = None,
                            runner: Any = None) -> dict[str, Any]:
    """Bring ``rec_products`` up to date by the method and options it was written with."""
    from .recommend import recommend

    meta = store.table_info(table).metadata.get(META_KEY) or {}
    if meta.get("method") == "behavior":
        return refresh_behaviour(store, table=table, stale_only=stale_only, progress=progress,
                                 runner=runner)
    if meta.get("method") == "vector":
        r = recommend(store, vector_column=meta.get("vector_column"),
                      top_n=int(meta.get("top_n", 10)),
                      exclude_held=bool(meta.get("exclude_held")), table=table,
                      stale_only=stale_only, progress=progress, runner=runner)
        return {"method": "vector", "rows": r.customers, "skipped": 0, "mode": r.mode}
    raise MatchingError("no recommendations recorded: run `kindred recommend` first")


__all__ = ["recommend_behaviour", "refresh_behaviour", "refresh_recommendations"]
