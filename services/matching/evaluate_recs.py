"""Next-basket evaluation of recommendations, against what a user would do instead.

Each customer's last day of events is hidden (their *basket*: the items of that day); every
method sees only the earlier events and ranks items for each customer who has both a history
and a basket. Reported per method: hit@k (some basket item in the top ``k``), recall@k (share
of the basket in the top ``k``) and NDCG@k (binary relevance), averaged over those customers.
In the same run:

- ``popularity``: the ``k`` items with most events, the same list for everyone;
- ``popularity, excluding history``: the most popular items the customer has not had yet;
- ``implicit ALS (defaults)``: ``implicit.als.AlternatingLeastSquares()`` with its default
  parameters on the raw counts, recommending with its defaults (already-had items filtered);
- ``kindred``: :mod:`services.matching.behaviour` (history, a recency-weighted latent-class
  profile with an attribute prior, ALS factors, coverage-aware lists, repeatable items allowed
  again; all chosen on the training events' own last day), ranked as the written lists are.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from ingest.datamodel import EVENTS
from vectorstore import VectorStore

from ..errors import NotEnoughData
from ._data import PRODUCTS
from .behaviour import finite_or_none, fit_recommender
from .interactions import ITEM_COLUMNS, last_day_split, read_interactions
from .rec_blocks import _top, hits
from .recommend_prior import customer_rows


class RecMetricRow(BaseModel):
    method: str
    hit_at_k: float
    recall_at_k: float
    ndcg_at_k: float
    seconds: float


class RecommendationEvaluation(BaseModel):
    k: int
    customers: int
    """Customers evaluated: with events before their last day and items on it."""
    items: int
    rows: list[RecMetricRow]
    params: dict[str, Any]

    def row(self, method: str) -> RecMetricRow:
        return next(r for r in self.rows if r.method == method)

    def to_markdown(self) -> str:
        lines = [f"| method | hit@{self.k} | recall@{self.k} | NDCG@{self.k} |",
                 "|---|---|---|---|"]
        lines += [f"| {r.method} | {r.hit_at_k:.4f} | {r.recall_at_k:.4f} | {r.ndcg_at_k:.4f} |"
                  for r in self.rows]
        return "\n".join(lines)


def evaluate_next_basket(store: VectorStore, *, events: str = EVENTS,
                         item_columns: Sequence[str] = ITEM_COLUMNS, k: int = 10,
                         seed: int = 0, products_table: str = PRODUCTS
                         ) -> RecommendationEvaluation:
    """Hide each customer's last day of events and measure every method on it."""
    from implicit.als import AlternatingLeastSquares

    inter = read_interactions(store, events=events, item_columns=item_columns)
    train, test = last_day_split(inter)
    tr, te = inter.subset(train), inter.subset(test)
    counts, days, active = tr.matrices()
    basket = te.matrices()[1]
    users = np.flatnonzero((active > 0) & (np.diff(basket.indptr) > 0))
    if len(users) < 10:
        raise NotEnoughData(f"only {len(users)} customers have events on two or more days")
    truth = basket[users]
    rows: list[RecMetricRow] = []

    def add(method: str, top: np.ndarray, t0: float) -> None:
        m = hits(top, truth, k)
        rows.append(RecMetricRow(method=method, hit_at_k=float(m["hit"].mean()),
                                 recall_at_k=float(m["recall"].mean()),
                                 ndcg_at_k=float(m["ndcg"].mean()),
                                 seconds=round(time.perf_counter() - t0, 3)))

    t0 = time.perf_counter()
    pop = np.asarray(counts.sum(axis=0), dtype=np.float64).ravel()
    order = np.argsort(-pop, kind="stable")[:k]
    add("popularity", np.broadcast_to(order, (len(users), len(order))), t0)
    t0 = time.perf_counter()
    s = np.broadcast_to(pop, (len(users), len(pop))).copy()
    s[days[users].toarray() > 0] = -np.inf
    add("popularity, excluding history", _top(s, k)[0], t0)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        als = AlternatingLeastSquares(random_state=seed)
        als.fit(counts.astype(np.float32), show_progress=False)
        ids, _ = als.recommend(users, counts[users].astype(np.float32), N=k)
    add("implicit ALS (defaults)", np.asarray(ids), t0)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec, _ = fit_recommender(store, tr, seed=seed, k=k, products_table=products_table)
    # the customers' factors folded in, as the written recommendations have them
    attrs = customer_rows(store, inter.customers.take(pa.array(users)),
                          rec.attribute_columns) if rec.class_prior is not None else None
    top = rec.top(rec.scores(days[users], active[users], rec.factors(counts[users].tocsr()),
                             log_prior=rec.log_prior(attrs)), k)[0]
    add("kindred", top, t0)
    return RecommendationEvaluation(
        k=k, customers=len(users), items=len(inter.items), rows=rows,
        params={"events": events, "item_columns": list(item_columns), "seed": seed,
                "holdout": "each customer's last day of events",
                "kindred": {"shrink": finite_or_none(rec.shrink), "w_factors": rec.w_factors,
                            "half_life": finite_or_none(rec.half_life),
                            "diversify": rec.diversify,
                            "attributes": rec.attribute_columns,
                            "factors": rec.details["factors"],
                            "repeatable_items": rec.details["repeatable_items"]}})
