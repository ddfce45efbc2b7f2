"""``match``: for one product, its current consumers and its best prospects, from stored vectors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

from vectorstore import TableInfo, VectorStore
from vectorstore.filters import Filter, Has, Not, all_of

from ..errors import MatchingError
from ._data import CUSTOMER_KEY, CUSTOMERS, HOLDINGS, PRODUCTS, as_filter, iter_blocks
from .bands import check_bands, with_bands
from .index import DEFAULT_THRESHOLD, ensure_index
from .query import ProductQuery, build_query

DEFAULT_TOP_K = 100


class MatchSummary(BaseModel):
    """What a match did: method (and why, for auto), sizes, and the options it ran with."""

    product: str
    method: str
    vector_column: str
    metric: str
    known_consumers: int
    eligible_prospects: int | None = Field(
        description="non-holders passing the filter (counted when audience_pct or min_score "
                    "alone sets the list length)")
    consumers_returned: int
    prospects_returned: int
    top_k: int | None
    audience_pct: float | None
    min_score: float | None
    filter: str | None
    exact: bool
    ann_index: bool = Field(description="an ANN index existed on the column for this query")
    bands: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict,
        description="per list (consumers, prospects): each similarity band's rows and score range")
    details: dict[str, Any] = Field(default_factory=dict)


@dataclass
class MatchResult:
    """Two ranked Arrow tables (``customer_id, score, rank`` + attributes) and a summary."""

    consumers: pa.Table
    prospects: pa.Table
    summary: MatchSummary
    query: ProductQuery

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the summary and both lists as lists of row dicts."""
        return {"summary": self.summary.model_dump(mode="json"),
                "consumers": self.consumers.to_pylist(),
                "prospects": self.prospects.to_pylist()}


def match(store: VectorStore, product: str, *, method: str = "centroid",
          vector_column: str | None = None, top_k: int | None = None,
          audience_pct: float | None = None, min_score: float | None = None,
          filter: Filter | str | None = None, exact: bool = False, min_consumers: int = 20,
          columns: Sequence[str] = (), table: str = CUSTOMERS,
          products_table: str = PRODUCTS, index_threshold: int | None = DEFAULT_THRESHOLD,
          seed: int = 0, query: ProductQuery | None = None,
          learned_options: dict[str, Any] | None = None, consumers: bool = True,
          prospects: bool = True, bands: Sequence[float] | None = None) -> MatchResult:
    """Rank the consumers (holders, most typical first) and prospects (non-holders, most
    likely first) of ``product``.

    The number of prospects is ``top_k``, or ``audience_pct`` percent of the eligible
    non-holders (those passing ``filter``), the smaller of the two when both are given, else
    every eligible row at or above ``min_score``, else 100; ``min_score`` always cuts. The
    consumers list has the same length limit. Prospects come from the store's search with the
    filter ``not has(holdings, product)`` joined to ``filter``; the store applies filters before
    top-k, so ``k`` rows come back when ``k`` rows qualify. Without ``exact`` an ANN index is
    created first once the table passes ``index_threshold`` rows (None: never). ``columns``
    are attributes copied into both lists. Raises NotEnoughData below ``min_consumers`` known
    consumers (lookalike methods), UnknownProduct for a product nobody knows.

    ``consumers=False`` or ``prospects=False`` skips that list (it comes back empty; one
    search instead of two); otherwise both searches run at once. Each list gets a ``band``
    column (see :func:`assign_bands`; ``bands``: two descending score thresholds, default the
    list's own tertiles) and ``summary.bands`` reports each band's size and score range per
    list.
    """
    _check_options(top_k, audience_pct)
    edges = check_bands(bands)
    info = store.table_info(table)  # read once, passed down
    user = as_filter(info, filter)
    attrs = [c for c in dict.fromkeys(columns) if c != CUSTOMER_KEY]
    info.check_columns([CUSTOMER_KEY, HOLDINGS, *attrs])
    if query is None:
        query = build_query(store, product, method, vector_column=vector_column, table=table,
                            products_table=products_table, min_consumers=min_consumers,
                            seed=seed, **(learned_options or {}))
    column = query.vector_column
    indexed = False
    if not exact and index_threshold is not None:
        indexed = ensure_index(store, table, column, threshold=index_threshold,
                               info=info).indexed
    prospect_filter = all_of([Not(Has(HOLDINGS, product)), user])
    consumer_filter = all_of([Has(HOLDINGS, product), user])
    # counts only when the list length depends on them (a search returns at most what exists)
    need_counts = audience_pct is not None or (top_k is None and min_score is not None)
    eligible = store.count(table, prospect_filter) if need_counts and prospects else None
    holders = store.count(table, consumer_filter) if need_counts and consumers else None
    k_prospects = _k(eligible, top_k, audience_pct, min_score) if prospects else 0
    k_consumers = _k(holders, top_k, None, min_score) if consumers else 0

    def rank(flt: Filter | None, k: int) -> pa.Table:
        return _ranked(store, info, query, flt, k, attrs, exact, min_score)

    if k_consumers and k_prospects:  # the two searches overlap (both release the GIL)
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(rank, consumer_filter, k_consumers)
            prospects_t = rank(prospect_filter, k_prospects)
            consumers_t = pending.result()
    else:
        prospects_t = rank(prospect_filter, k_prospects)
        consumers_t = rank(consumer_filter, k_consumers)
    consumers_t, consumer_bands = with_bands(consumers_t, edges)
    prospects_t, prospect_bands = with_bands(prospects_t, edges)
    summary = MatchSummary(
        product=product, method=query.method, vector_column=column, metric=str(query.metric),
        known_consumers=query.n_consumers,
        eligible_prospects=eligible, consumers_returned=consumers_t.num_rows,
        prospects_returned=prospects_t.num_rows, top_k=top_k, audience_pct=audience_pct,
        min_score=min_score, filter=filter if isinstance(filter, str) else
        (repr(filter) if filter is not None else None), exact=exact, ann_index=indexed,
        bands={"consumers": consumer_bands, "prospects": prospect_bands},
        details=_jsonable(query.details))
    return MatchResult(consumers_t, prospects_t, summary, query)


def _check_options(top_k: int | None, audience_pct: float | None) -> None:
    if top_k is not None and (not isinstance(top_k, int) or top_k <= 0):
        raise MatchingError(f"top_k must be a positive integer, got {top_k!r}")
    if audience_pct is not None and not 0 < audience_pct <= 100:
        raise MatchingError(f"audience_pct must be in (0, 100], got {audience_pct!r}")


def _k(eligible: int | None, top_k: int | None, audience_pct: float | None,
       min_score: float | None) -> int:
    limits = []
    if top_k is not None:
        limits.append(top_k)
    if audience_pct is not None and eligible is not None:
        limits.append(math.ceil(eligible * audience_pct / 100))
    if not limits:
        limits.append(eligible if min_score is not None and eligible is not None
                      else DEFAULT_TOP_K)
    if eligible is not None:
        limits.append(eligible)
    return max(0, min(limits))


def _ranked(store: VectorStore, info: TableInfo, query: ProductQuery, filter: Filter | None,
            k: int, attrs: list[str], exact: bool, min_score: float | None) -> pa.Table:
    table = info.name
    cols = [CUSTOMER_KEY, *attrs]
    if k == 0:
        rows, scores = info.schema.empty_table().select(cols), np.zeros(0)
    elif query.searchable:
        res = store.search(table, query.vector, k=k, vector_column=query.vector_column,
                           filter=filter, columns=cols, exact=exact)
        rows, scores = res.select(cols), query.from_store(res)
    else:
        rows, scores = stream_top_k(store, table, query, filter, k, cols)
    if min_score is not None:
        keep = scores >= min_score
        rows, scores = rows.filter(pa.array(keep)), scores[keep]
    out = pa.table({CUSTOMER_KEY: rows.column(CUSTOMER_KEY),
                    "score": pa.array(scores, pa.float64()),
                    "rank": pa.array(np.arange(1, len(scores) + 1), pa.int64())})
    for c in attrs:
        out = out.append_column(c, rows.column(c))
    return out


def stream_top_k(store: VectorStore, table: str, query: ProductQuery, filter: Filter | None,
                 k: int, columns: Sequence[str]) -> tuple[pa.Table, np.ndarray]:
    """Exact top-``k`` by ``query.score`` over a streamed scan (memory: k rows + one block)."""
    best_rows: pa.Table | None = None
    best: np.ndarray = np.zeros(0)
    for block in iter_blocks(store, table, query.vector_column, columns=columns, filter=filter):
        s = query.score(block.vectors)
        rows = pa.Table.from_batches([block.batch]).select(list(columns))
        if best_rows is not None:
            rows = pa.concat_tables([best_rows, rows])
            s = np.concatenate([best, s])
        if len(s) > k:
            top = np.argpartition(-s, k - 1)[:k]
            rows, s = rows.take(pa.array(top)), s[top]
        best_rows, best = rows, s
    if best_rows is None:
        return store.table_info(table).schema.empty_table().select(list(columns)), best
    order = np.argsort(-best, kind="stable")
    return best_rows.take(pa.array(order)), best[order]


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(d, default=lambda o: o.tolist() if hasattr(o, "tolist")
                                 else str(o)))
