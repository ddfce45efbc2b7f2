"""Behaviour recommendations: what each customer is likely to have next, from their events.

Items are the values of the events' item columns (``product_id`` values as they are, other
columns prefixed: ``category:travel``, as the behaviour embedder names them). The score of item
``i`` for customer ``u`` blends three signals:

- **own history** (repeatable items only): the share of the customer's active days with the
  item, weighted ``lambda_u = days_u / (days_u + shrink)``, so a customer with little history
  leans on the next signal;
- **behaviour profile**: a latent-class model of the customers' item-day counts (a mixture of
  :data:`CLASSES` multinomials fitted by EM): the item's share of a day under the customer's
  posterior over the classes. A customer without history gets the prior, i.e. the population's
  popularity, so cold customers are served popular items;
- **behaviour factors**: implicit-feedback ALS (the ``implicit`` library) on the customers x
  items matrix (BM25-weighted counts), folded in for any customer from the item factors,
  weighted by ``w_factors``.

An item is *repeatable* when the products table says so (a boolean ``repeatable`` column) or,
by default, when at least :data:`REPEAT_RATE` of the customers who had it had it on two or more
days (a mortgage instalment, groceries); an item that is not repeatable and was already had is
never recommended again (a term deposit once bought). ``shrink`` and ``w_factors`` are chosen
on a validation basket inside the training events (each customer's last training day), never
on the data being evaluated. The fitted state (items, item factors, popularity, repeat flags,
weights) is plain arrays saved as an ``.npz`` artifact (no pickle).
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from vectorstore import VectorStore
from vectorstore.errors import ArtifactCorrupt, ArtifactNotFound

from ..errors import MatchingError, NotEnoughData
from ._data import CUSTOMER_KEY, HOLDINGS, PRODUCT_KEY, PRODUCTS

EVENTS = "events"
ITEM_COLUMNS = ("product_id", "category")
REPEAT_RATE = 0.3
SHRINKS = (3.0, 10.0, 30.0, float("inf"))
FACTOR_WEIGHTS = (0.0, 0.03, 0.1, 0.3)
CLASSES = 8
EM_ITERATIONS = 40
ARTIFACT = "customers.recommender"
FORMAT = 1
BLOCK = 4_096


@dataclass
class Interactions:
    """Events as arrays: customer index, item index and day of every (customer, item, day)."""

    customers: pa.Array
    items: list[str]
    cust: np.ndarray
    item: np.ndarray
    day: np.ndarray
    count: np.ndarray

    def subset(self, keep: np.ndarray) -> Interactions:
        return Interactions(self.customers, self.items, self.cust[keep], self.item[keep],
                            self.day[keep], self.count[keep])

    def matrices(self) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
        """(event counts, distinct days) per customer x item, and active days per customer."""
        shape = (len(self.customers), len(self.items))
        counts = sp.csr_matrix((self.count.astype(np.float32), (self.cust, self.item)),
                               shape=shape)
        days = sp.csr_matrix((np.ones(len(self.cust), np.float32), (self.cust, self.item)),
                             shape=shape)
        counts.sum_duplicates()
        days.sum_duplicates()
        cd = np.unique(self.cust.astype(np.int64) * (1 << 32) + self.day.astype(np.int64))
        active = np.bincount((cd >> 32).astype(np.int64), minlength=shape[0]).astype(np.float64)
        return counts, days, active


def read_interactions(store: VectorStore, *, events: str = EVENTS,
                      item_columns: Sequence[str] = ITEM_COLUMNS,
                      batch_size: int = 262_144, filter: Any = None) -> Interactions:
    """Every (customer, item, day) of the events table with its event count, one streamed
    pass (memory: the distinct triples)."""
    if not store.has_table(events):
        raise MatchingError(f"behaviour recommendations need an {events!r} table")
    info = store.table_info(events)
    cols = [c for c in item_columns if c in info.schema.names]
    if not cols or "ts" not in info.schema.names:
        raise MatchingError(f"table {events!r} needs a ts column and one of "
                            f"{', '.join(item_columns)}")
    ids: list[pa.Array] = []
    items: list[pa.Array] = []
    days: list[np.ndarray] = []
    for b in store.scan(events, columns=[CUSTOMER_KEY, "ts", *cols], batch_size=batch_size,
                        filter=filter):
        day = pc.cast(pc.cast(b.column("ts"), pa.timestamp("s", "UTC")), pa.int64())
        day = np.asarray(day.to_numpy(zero_copy_only=False), dtype=np.int64) // 86_400
        for c in cols:
            v = pc.cast(b.column(c), pa.string())
            if c != PRODUCT_KEY:
                v = pc.binary_join_element_wise(f"{c}:", v, "")
            ok = pc.is_valid(v)
            ids.append(pc.filter(b.column(CUSTOMER_KEY), ok))
            items.append(pc.filter(v, ok))
            days.append(day[ok.to_numpy(zero_copy_only=False)])
    if not ids:
        raise NotEnoughData(f"table {events!r} has no events with an item")
    cust_enc = pc.dictionary_encode(pa.chunked_array(ids, pa.string())).combine_chunks()
    item_enc = pc.dictionary_encode(pa.chunked_array(items, pa.string())).combine_chunks()
    cust = np.asarray(cust_enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    item = np.asarray(item_enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    day = np.concatenate(days)
    n_items = len(item_enc.dictionary)
    span = int(day.max() - day.min() + 1) if len(day) else 1
    key = (cust * n_items + item) * span + (day - day.min())
    uniq, count = np.unique(key, return_counts=True)
    d = uniq % span + day.min()
    ci = uniq // span
    return Interactions(cust_enc.dictionary, item_enc.dictionary.to_pylist(),
                        (ci // n_items).astype(np.int32), (ci % n_items).astype(np.int32),
                        d.astype(np.int64), count.astype(np.int32))


def repeat_flags(store: VectorStore, inter: Interactions,
                 products_table: str = PRODUCTS) -> np.ndarray:
    """Per item: repeatable (the products table's ``repeatable`` column, else the data)."""
    _, days, _ = inter.matrices()
    had = np.asarray((days > 0).sum(axis=0)).ravel()
    again = np.asarray((days >= 2).sum(axis=0)).ravel()
    flags = again >= REPEAT_RATE * np.maximum(had, 1)
    if store.has_table(products_table) and \
            "repeatable" in store.table_info(products_table).schema.names:
        t = store.to_arrow(products_table, columns=[PRODUCT_KEY, "repeatable"])
        declared = dict(zip(t.column(PRODUCT_KEY).to_pylist(), t.column("repeatable").to_pylist(),
                            strict=True))
        for j, item in enumerate(inter.items):
            if declared.get(item) is not None:
                flags[j] = bool(declared[item])
    return flags


def _als(counts: sp.csr_matrix, factors: int, seed: int) -> tuple[Any, np.ndarray]:
    from implicit.als import AlternatingLeastSquares
    from implicit.nearest_neighbours import bm25_weight

    weighted = bm25_weight(counts, K1=100, B=0.8).tocsr().astype(np.float32)
    model = AlternatingLeastSquares(factors=factors, regularization=0.05, iterations=15,
                                    random_state=seed, num_threads=1)
    model.fit(weighted, show_progress=False)
    return model, weighted


def fit_classes(days: sp.csr_matrix, k: int = CLASSES, seed: int = 0,
                iterations: int = EM_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """EM for a mixture of multinomials over item-day counts: (class item shares, priors)."""
    rng = np.random.default_rng(seed)
    n = days.shape[0]
    R = rng.dirichlet(np.ones(k), size=n)
    X = days.tocsr().astype(np.float64)
    for _ in range(iterations):
        theta = np.asarray(X.T @ R).T + 0.1
        theta /= theta.sum(axis=1, keepdims=True)
        prior = R.mean(axis=0) + 1e-12
        R = posterior(X, theta, prior)
    return theta, prior


def posterior(X: sp.csr_matrix, theta: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Each customer's posterior over the classes given their item-day counts."""
    L = np.asarray(X @ np.log(theta).T) + np.log(prior)
    L -= L.max(axis=1, keepdims=True)
    R = np.exp(L)
    return R / R.sum(axis=1, keepdims=True)


@dataclass
class Recommender:
    """Fitted state: item ids and factors, popularity, repeat flags and blend weights."""

    items: list[str]
    item_factors: np.ndarray
    popularity: np.ndarray
    repeatable: np.ndarray
    shrink: float
    w_factors: float
    theta: np.ndarray
    prior: np.ndarray
    regularization: float = 0.05
    details: dict[str, Any] = field(default_factory=dict)

    def fold_in(self, weighted: sp.csr_matrix) -> np.ndarray:
        """Customer factors from their (BM25-weighted) rows: the ALS least-squares solution
        for fixed item factors (confidence ``1 + value`` on observed items)."""
        V = self.item_factors.astype(np.float64)
        f = V.shape[1]
        base = V.T @ V + self.regularization * np.eye(f)
        out = np.zeros((weighted.shape[0], f), np.float64)
        for u in range(weighted.shape[0]):
            lo, hi = weighted.indptr[u], weighted.indptr[u + 1]
            if lo == hi:
                continue
            idx, conf = weighted.indices[lo:hi], weighted.data[lo:hi].astype(np.float64)
            Vi = V[idx]
            A = base + (Vi.T * conf) @ Vi
            out[u] = np.linalg.solve(A, Vi.T @ (1.0 + conf))
        return out

    def scores(self, days: sp.csr_matrix, active: np.ndarray, user_factors: np.ndarray,
               shrink: float | None = None, w_factors: float | None = None) -> np.ndarray:
        """(customers, items) blended scores; -inf for had, not-repeatable items."""
        shrink = self.shrink if shrink is None else shrink
        w = self.w_factors if w_factors is None else w_factors
        n = days.shape[0]
        lam = (active / (active + shrink))[:, None] if np.isfinite(shrink) else \
            np.zeros((n, 1))
        rate = days.multiply(1.0 / np.maximum(active, 1.0)[:, None]).toarray()
        had = days.toarray() > 0
        personal = np.where(self.repeatable[None, :], rate, 0.0)
        profile = posterior(days.astype(np.float64), self.theta, self.prior) @ self.theta
        s = lam * personal + (1 - lam) * profile
        if w:
            s = s + w * (user_factors @ self.item_factors.T.astype(np.float64))
        s[had & ~self.repeatable[None, :]] = -np.inf
        return s.reshape(n, -1)

    # ------------------------------------------------------------------ persistence
    def save(self, store: VectorStore, name: str = ARTIFACT) -> None:
        buf = io.BytesIO()
        np.savez(buf, items=np.asarray(self.items, dtype=str), item_factors=self.item_factors,
                 popularity=self.popularity, repeatable=self.repeatable, theta=self.theta,
                 prior=self.prior)
        store.put_artifact(name, buf.getvalue(), {
            "format": FORMAT, "shrink": finite_or_none(self.shrink), "w_factors": self.w_factors,
            "regularization": self.regularization,
            "details": json.loads(json.dumps(self.details, default=str))})

    @classmethod
    def load(cls, store: VectorStore, name: str = ARTIFACT) -> Recommender:
        try:
            data, meta = store.get_artifact(name)
        except ArtifactNotFound:
            raise MatchingError("no behaviour recommender yet: run `kindred recommend` "
                                "first") from None
        except ArtifactCorrupt as exc:
            raise MatchingError(f"the saved recommender is damaged: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise MatchingError(f"the saved recommender has format {meta.get('format')!r}")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return cls(z["items"].astype(str).tolist(), z["item_factors"], z["popularity"],
                       z["repeatable"].astype(bool),
                       float("inf") if meta["shrink"] is None else float(meta["shrink"]),
                       float(meta["w_factors"]), z["theta"], z["prior"],
                       float(meta["regularization"]), dict(meta.get("details") or {}))


def finite_or_none(x: float) -> float | None:
    """``shrink`` is infinite when own history is not used: shown and stored as None."""
    return float(x) if np.isfinite(x) else None


def _top(s: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    n = min(n, s.shape[1])
    idx = np.argpartition(-s, n - 1, axis=1)[:, :n]
    top = np.take_along_axis(s, idx, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(top, order, axis=1)


def last_day_split(inter: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Masks over the triples: each customer's last active day (test) and the rest (train)."""
    last = np.full(len(inter.customers), -1, np.int64)
    np.maximum.at(last, inter.cust, inter.day)
    test = inter.day == last[inter.cust]
    return ~test, test


def hits(top: np.ndarray, truth: sp.csr_matrix, k: int) -> dict[str, np.ndarray]:
    """Per customer: hit@k, recall@k and NDCG@k of ranked item lists against a basket."""
    t = truth.tocsr()
    hit = np.zeros(len(top))
    rec = np.zeros(len(top))
    ndcg = np.zeros(len(top))
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    for u in range(len(top)):
        basket = t.indices[t.indptr[u]:t.indptr[u + 1]]
        if len(basket) == 0:
            continue
        rel = np.isin(top[u, :k], basket)
        hit[u] = rel.any()
        rec[u] = rel.sum() / len(basket)
        ndcg[u] = (rel * disc[:len(rel)]).sum() / disc[:min(len(basket), k)].sum()
    return {"hit": hit, "recall": rec, "ndcg": ndcg}


def fit_recommender(store: VectorStore, inter: Interactions, *, seed: int = 0,
                    factors: int = 64, k: int = 10,
                    products_table: str = PRODUCTS) -> tuple[Recommender, np.ndarray]:
    """Fit on ``inter`` (choosing the blend on each customer's last day of it); returns the
    recommender and the customers' factors (rows of ``inter.customers``)."""
    counts, days, active = inter.matrices()
    n_items = len(inter.items)
    if n_items < 2:
        raise NotEnoughData("behaviour recommendations need at least two items")
    f = max(2, min(factors, n_items // 2))
    repeatable = repeat_flags(store, inter, products_table)
    popularity = np.asarray(days.sum(axis=0)).ravel() / max(active.sum(), 1.0)
    # validation: each customer's last day inside these events
    train, val = last_day_split(inter)
    tr, va = inter.subset(train), inter.subset(val)
    tr_counts, tr_days, tr_active = tr.matrices()
    va_days = va.matrices()[1]
    users = np.flatnonzero((tr_active > 0) & (np.asarray(va_days.sum(axis=1)).ravel() > 0))
    choice = {"shrink": SHRINKS[0], "w_factors": 0.0, "validation": []}
    if len(users) >= 10:
        model, _ = _als(tr_counts, f, seed)
        tr_pop = np.asarray(tr_days.sum(axis=0)).ravel() / max(tr_active.sum(), 1.0)
        theta, prior = fit_classes(tr_days, seed=seed)
        rec = Recommender(inter.items, np.asarray(model.item_factors), tr_pop, repeatable, 1, 0,
                          theta, prior)
        U = np.asarray(model.user_factors)[users].astype(np.float64)
        best = -1.0
        for shrink in SHRINKS:
            for w in FACTOR_WEIGHTS:
                s = rec.scores(tr_days[users], tr_active[users], U, shrink, w)
                m = float(hits(_top(s, k)[0], va_days[users], k)["hit"].mean())
                choice["validation"].append({"shrink": finite_or_none(shrink), "w_factors": w, "hit": m})
                if m > best + 1e-9:
                    best, choice["shrink"], choice["w_factors"] = m, shrink, w
    model, _ = _als(counts, f, seed)
    theta, prior = fit_classes(days, seed=seed)
    rec = Recommender(inter.items, np.asarray(model.item_factors, dtype=np.float32), popularity,
                      repeatable, float(choice["shrink"]), float(choice["w_factors"]),
                      theta, prior, details={"factors": f, "validation": choice["validation"],
                               "repeatable_items": int(repeatable.sum()),
                               "items": n_items, "customers": len(inter.customers)})
    return rec, np.asarray(model.user_factors, dtype=np.float64)


@dataclass
class _BehaviourWork:
    """The broadcast state of behaviour scoring: the fitted recommender, every customer's
    history in its item space, their factors, and what may be recommended."""

    rec: Recommender
    customers: Any
    """pandas Index of the customer ids of ``days`` / ``factors`` rows."""
    days: sp.csr_matrix
    active: np.ndarray
    factors: np.ndarray
    allowed: np.ndarray
    top_n: int
    has_holdings: bool
    batch_size: int


def _behaviour_lists(w: _BehaviourWork, batch: pa.RecordBatch) -> list[pa.RecordBatch]:
    """Each customer's top items of one batch (keys, ``rec_products``, ``rec_scores``)."""
    import pandas as pd

    from .recommend import REC_PRODUCTS, REC_SCORES

    rec = w.rec
    keys = batch.column(CUSTOMER_KEY)
    pos = w.customers.get_indexer(keys.to_numpy(zero_copy_only=False))
    known = pos >= 0
    pick = sp.csr_matrix((np.ones(int(known.sum())), (np.flatnonzero(known), pos[known])),
                         shape=(batch.num_rows, max(w.days.shape[0], 1)))
    days = (pick @ w.days).tocsr() if w.days.shape[0] else \
        sp.csr_matrix((batch.num_rows, len(rec.items)), dtype=np.float64)
    active = np.where(known, w.active[np.maximum(pos, 0)], 0.0) if len(w.active) else \
        np.zeros(batch.num_rows)
    Ub = np.where(known[:, None], w.factors[np.maximum(pos, 0)], 0.0)
    item_index = pd.Index(rec.items)
    out = []
    for lo in range(0, batch.num_rows, BLOCK):
        sl = slice(lo, min(lo + BLOCK, batch.num_rows))
        sc = rec.scores(days[sl], active[sl], Ub[sl])
        sc[:, ~w.allowed] = -np.inf
        if w.has_holdings:
            hb = batch.column(HOLDINGS).slice(sl.start, sl.stop - sl.start)
            parents = pc.list_parent_indices(hb).to_numpy()
            j = item_index.get_indexer(pc.list_flatten(hb).to_numpy(zero_copy_only=False))
            ok = (j >= 0)
            ok[ok] &= ~rec.repeatable[j[ok]]
            sc[parents[ok], j[ok]] = -np.inf
        idx, top = _top(sc, min(w.top_n, int(w.allowed.sum())))
        finite = np.isfinite(top)
        lens = finite.sum(axis=1)
        offs = pa.array(np.concatenate([[0], np.cumsum(lens)]).astype(np.int32))
        names = pa.array(rec.items, pa.string()).take(pa.array(idx[finite]))
        out.append(pa.RecordBatch.from_arrays(
            [pa.concat_arrays([keys.slice(sl.start, sl.stop - sl.start)]),
             pa.ListArray.from_arrays(offs, names),
             pa.ListArray.from_arrays(offs, pa.array(top[finite].astype(np.float32)))],
            names=[CUSTOMER_KEY, REC_PRODUCTS, REC_SCORES]))
    return out


def _behaviour_partition(ctx: Any, part: Any) -> int:
    """Score one partition of customers and stage their lists; returns the rows scored."""
    w: _BehaviourWork = ctx.shared
    cols = [CUSTOMER_KEY, *([HOLDINGS] if w.has_holdings else [])]
    out: list[pa.RecordBatch] = []
    for batch in ctx.scan(part, columns=cols, batch_size=w.batch_size):
        out += _behaviour_lists(w, batch)
        ctx.progress(batch.num_rows)
    if out:
        ctx.stage(part, pa.Table.from_batches(out))
    return sum(b.num_rows for b in out)


def recommend_behaviour(store: VectorStore, *, top_n: int = 10, table: str = "customers",
                        only_products: bool = True, write: bool = True, seed: int = 0,
                        products_table: str = PRODUCTS, batch_size: int = 65_536,
                        progress: Any = None, runner: Any = None) -> dict[str, Any]:
    """Fit the recommender on every event, save it, and write each customer's top ``top_n``
    to ``rec_products``/``rec_scores`` (only products-table items when ``only_products`` and
    a products table exists). Held items that are not repeatable are never recommended.

    The fit runs here (the driver); the fitted state and every customer's history are
    broadcast, and each partition of customers is scored and staged on the runner."""
    import time

    import pandas as pd

    from ingest.runner import runner_for

    from ._data import Tally
    from .recommend import _ensure_rec_columns

    if not isinstance(top_n, int) or top_n <= 0:
        raise MatchingError(f"top_n must be a positive integer, got {top_n!r}")
    t0 = time.perf_counter()
    inter = read_interactions(store)
    rec, U = fit_recommender(store, inter, seed=seed, products_table=products_table)
    allowed = np.ones(len(rec.items), dtype=bool)
    if only_products and store.has_table(products_table):
        ids = store.to_arrow(products_table, columns=[PRODUCT_KEY]).column(PRODUCT_KEY)
        allowed = np.isin(np.asarray(rec.items, dtype=object), ids.to_pylist())
    if not allowed.any():
        raise MatchingError("no recommendable item: none of the event items is a product")
    _, days, active = history_rows(rec, inter, inter.customers)
    info = store.table_info(table)
    work = _BehaviourWork(rec, pd.Index(inter.customers.to_numpy(zero_copy_only=False)), days,
                          active, U, allowed, top_n, HOLDINGS in info.schema.names, batch_size)
    run = runner_for(store, runner, step="recommend")
    tally = Tally(progress, store.count(table) if progress is not None else None)
    if write:
        rec.save(store)
    with store.transaction(table) as tx:
        parts = [p for p in tx.partitions() if p.rows]
        if write and parts:
            _ensure_rec_columns(tx)
        rows = 0
        if write:
            rows = sum(run.map_partitions(tx, _behaviour_partition, shared=work,
                                          partitions=parts, progress=tally.add))
        else:
            for batch in store.scan(table, columns=[CUSTOMER_KEY, *(
                    [HOLDINGS] if work.has_holdings else [])], batch_size=batch_size):
                rows += sum(b.num_rows for b in _behaviour_lists(work, batch))
                tally.add(batch.num_rows)
        tally.finish()
        t_score = time.perf_counter() - t0
        t1 = time.perf_counter()
    return {"method": "behavior", "customers": rows, "products": int(allowed.sum()),
            "top_n": top_n, "exclude_held": True, "written": write and rows > 0,
            "seconds_scoring": t_score, "seconds_writing": time.perf_counter() - t1,
            "items": len(rec.items), "shrink": finite_or_none(rec.shrink),
            "w_factors": rec.w_factors}


def history_rows(rec: Recommender, inter: Interactions, ids: pa.Array
                 ) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """(counts, days, active days) of customers ``ids`` in ``rec``'s item space (customers
    without events get empty rows; items the recommender does not know are ignored)."""
    import pandas as pd

    counts, days, active = inter.matrices()
    rows = pd.Index(inter.customers.to_numpy(zero_copy_only=False)).get_indexer(
        ids.to_numpy(zero_copy_only=False))
    cols = pd.Index(rec.items).get_indexer(inter.items)
    keep = cols >= 0
    remap = sp.csr_matrix((np.ones(int(keep.sum())), (np.flatnonzero(keep), cols[keep])),
                          shape=(len(inter.items), len(rec.items)))
    known = rows >= 0
    pick = sp.csr_matrix((np.ones(int(known.sum())), (np.flatnonzero(known), rows[known])),
                         shape=(len(ids), max(counts.shape[0], 1)))
    if counts.shape[0] == 0:
        empty = sp.csr_matrix((len(ids), len(rec.items)), dtype=np.float64)
        return empty, empty, np.zeros(len(ids))
    act = np.where(known, active[np.maximum(rows, 0)], 0.0)
    return (pick @ counts @ remap).tocsr(), (pick @ days @ remap).tocsr(), act


def explain_one(rec: Recommender, counts: sp.csr_matrix, days: sp.csr_matrix,
                active: np.ndarray, n: int, exclude: np.ndarray | None = None
                ) -> list[dict[str, Any]]:
    """One customer's top ``n`` (rows of length 1) with the parts of each score and reasons;
    ``exclude``: items never to recommend (e.g. held one-time products)."""
    from implicit.nearest_neighbours import bm25_weight

    weighted = bm25_weight(counts.astype(np.float32), K1=100, B=0.8).tocsr() \
        if counts.nnz else counts
    U = rec.fold_in(weighted)
    s = rec.scores(days, active, U)[0]
    if exclude is not None:
        s[exclude] = -np.inf
    lam = float(active[0] / (active[0] + rec.shrink)) if np.isfinite(rec.shrink) else 0.0
    rate = days.toarray()[0] / max(active[0], 1.0)
    fac = (U @ rec.item_factors.T.astype(np.float64))[0]
    profile = (posterior(days.astype(np.float64), rec.theta, rec.prior) @ rec.theta)[0]
    order = [int(i) for i in np.argsort(-s, kind="stable")[:n] if np.isfinite(s[i])]
    out = []
    for i in order:
        history = lam * rate[i] if rec.repeatable[i] else 0.0
        parts = {"history": history, "profile": (1 - lam) * profile[i],
                 "factors": rec.w_factors * fac[i]}
        reasons = []
        if rate[i] > 0:
            reasons.append(f"had it on {rate[i]:.0%} of their {int(active[0])} active days "
                           "(repeatable)")
        if profile[i] > 1.2 * rec.popularity[i]:
            reasons.append(f"customers who behave like them have it on {profile[i]:.1%} of "
                           f"their days ({profile[i] / max(rec.popularity[i], 1e-12):.1f}x "
                           "the average)")
        if parts["factors"] > 0.01:
            reasons.append("similar customers' behaviour factors point to it")
        if not reasons:
            reasons.append(f"popular: on {rec.popularity[i]:.1%} of all customer-days")
        out.append({"item": rec.items[i], "score": float(s[i]), "repeatable": bool(
            rec.repeatable[i]), "parts": {k: round(float(v), 6) for k, v in parts.items()},
            "reasons": reasons})
    return out
