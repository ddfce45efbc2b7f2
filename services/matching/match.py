"""``match``: for one product, its current consumers and its best prospects, from stored vectors."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, computed_field

from vectorstore import TableInfo, VectorStore
from vectorstore.filters import Filter, Has, Not, all_of

from ..errors import MatchingError
from ._data import (
    CUSTOMER_KEY,
    CUSTOMERS,
    HOLDINGS,
    PRODUCTS,
    as_filter,
    holds,
    iter_blocks,
    vector_matrix,
)
from .assess import audience, predictability
from .bands import BASE_SAMPLE, base_edges, check_bands, probability_edges, with_bands
from .build import build_query
from .query import ProductQuery

DEFAULT_TOP_K = 100


class MatchSummary(BaseModel):
    """What a match did: method (and why, for auto), sizes, and the options it ran with.

    Named as the facade and the CLI name them (``column``, ``top``, ``where``); the keys
    ``vector_column``, ``top_k`` and ``filter`` repeat them in the JSON for one release.
    """

    product: str
    method: str
    column: str
    metric: str
    known_consumers: int
    eligible_prospects: int | None = Field(
        description="non-holders passing the filter (counted when audience_pct or min_score "
                    "alone sets the list length)")
    consumers_returned: int
    prospects_returned: int
    top: int | None
    audience_pct: float | None
    min_score: float | None
    where: str | None
    exact: bool
    ann_index: bool = Field(description="an ANN index existed on the column for this query")
    bands: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict,
        description="per list (consumers, prospects): each band's rows and score range")
    band_basis: str = Field(default="", description="what the band edges are based on")
    audience: dict[str, Any] | None = Field(
        default=None, description="propensity: expected conversions among the prospects "
                                  "returned and their lift over the base rate (95% intervals)")
    predictability: dict[str, Any] | None = Field(
        default=None, description="whether the method was shown to rank better than chance "
                                  "(None: not assessed for this method)")
    warnings: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)

    @computed_field(description="deprecated: the same as column (kept for one release)")
    def vector_column(self) -> str:
        return self.column

    @computed_field(description="deprecated: the same as top (kept for one release)")
    def top_k(self) -> int | None:
        return self.top

    @computed_field(description="deprecated: the same as where (kept for one release)")
    def filter(self) -> str | None:
        return self.where


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
          products_table: str = PRODUCTS, seed: int = 0, query: ProductQuery | None = None,
          learned_options: dict[str, Any] | None = None,
          propensity_options: dict[str, Any] | None = None, consumers: bool = True,
          prospects: bool = True, bands: Sequence[float] | None = None) -> MatchResult:
    """Rank the consumers (holders, most typical first) and prospects (non-holders, most
    likely first) of ``product``. Reads only: it writes nothing to the store (no index, no
    metadata, no cache); index upkeep is ``kindred index``, saved models ``kindred fit``.

    The number of prospects is ``top_k``, or ``audience_pct`` percent of the eligible
    non-holders (those passing ``filter``), the smaller of the two when both are given, else
    every eligible row at or above ``min_score``, else 100; ``min_score`` always cuts. The
    consumers list has the same length limit. Prospects come from the store's search with the
    filter ``not has(holdings, product)`` joined to ``filter``; the store applies filters before
    top-k, so ``k`` rows come back when ``k`` rows qualify. ``exact`` ignores any ANN index.
    ``columns`` are attributes copied into both lists. Raises NotEnoughData below
    ``min_consumers`` known consumers, UnknownProduct for a product nobody knows.

    ``method="propensity"`` ranks by calibrated probability: from the written
    ``propensity_<product>`` column when ``kindred fit`` wrote it (a scalar filter on the
    score; see :func:`services.matching.scores.top_from_column`), else from a model fitted in
    memory. Its summary carries ``audience``: the expected conversions among the prospects
    returned and their lift over the base rate, with 95% intervals.

    ``consumers=False`` or ``prospects=False`` skips that list (it comes back empty; one
    search instead of two); otherwise both searches run at once. Each list gets a ``band``
    column (:mod:`services.matching.bands`: edges from the whole base, or ``bands``, two
    descending score thresholds) and ``summary.bands`` reports each band's size and score
    range per list. ``summary.predictability`` says whether the method was shown to beat
    chance (auto, propensity), ``summary.warnings`` what to look at (leakage, chance).
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
                            seed=seed, read_only=True, propensity_options=propensity_options,
                            **(learned_options or {}))
    column = query.vector_column
    indexed = (not exact and query.searchable and store.capabilities.ann_index
               and any(ix.vector and column in ix.columns for ix in store.list_indexes(table)))
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
    basis, edges = _edges(store, info, query, product, edges)
    consumers_t, consumer_bands = with_bands(consumers_t, edges)
    prospects_t, prospect_bands = with_bands(prospects_t, edges)
    verdict = _predictability(query)
    warnings = [w["message"] for w in (query.details.get("leakage") or [])]
    if verdict is not None and not verdict["predictable"]:
        warnings.insert(0, verdict["message"])
    if query.probabilities and query.score_column is None:
        warnings.append(f"the propensity model was fitted for this call; `kindred fit "
                        f"{product}` saves it and writes the scores, which match then serves")
    audience_summary = None
    if query.probabilities and query.base_rate is not None:
        audience_summary = audience(np.asarray(prospects_t.column("score").to_numpy(),
                                               dtype=np.float64), query.base_rate)
    summary = MatchSummary(
        product=product, method=query.method, column=column, metric=str(query.metric)
        if not query.probabilities else "probability",
        known_consumers=query.n_consumers,
        eligible_prospects=eligible, consumers_returned=consumers_t.num_rows,
        prospects_returned=prospects_t.num_rows, top=top_k, audience_pct=audience_pct,
        min_score=min_score, where=filter if isinstance(filter, str) else
        (repr(filter) if filter is not None else None), exact=exact, ann_index=indexed,
        bands={"consumers": consumer_bands, "prospects": prospect_bands}, band_basis=basis,
        audience=audience_summary, predictability=verdict, warnings=warnings,
        details=_jsonable({k: v for k, v in query.details.items() if k != "base_edges"}))
    return MatchResult(consumers_t, prospects_t, summary, query)


def _predictability(query: ProductQuery) -> dict[str, Any] | None:
    if "predictability" in query.details:
        return query.details["predictability"]
    a = query.details.get("assessment")
    if not a:
        return None
    lo, hi = a["interval"]
    return predictability(query.method, float(a["roc_auc"]), float(lo), float(hi), a["source"])


def _edges(store: VectorStore, info: TableInfo, query: ProductQuery, product: str,
           fixed: tuple[float, float] | None) -> tuple[str, tuple[float, float] | None]:
    """Band edges and what they are based on (see :mod:`services.matching.bands`)."""
    if fixed is not None:
        return "fixed thresholds", fixed
    if query.probabilities and query.base_rate is not None:
        return (f"calibrated probability vs the base rate {query.base_rate:.4f} (high >= 2x, "
                "medium > 1x)"), probability_edges(query.base_rate)
    if "base_edges" not in query.details:  # once per query object
        query.details["base_edges"] = _sample_edges(store, info, query, product)
    e = query.details["base_edges"]
    return ("score distribution of a sample of the customers not holding the product (high: "
            "their top 10%, medium: the next 20%)"), (tuple(e) if e else None)


def _sample_edges(store: VectorStore, info: TableInfo, query: ProductQuery, product: str,
                  seed: int = 0) -> list[float] | None:
    n = store.count(info.name)
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(n, min(n, BASE_SAMPLE), replace=False))
    rows = store.take(info.name, pos, columns=[HOLDINGS, query.vector_column])
    rows = rows.filter(pc.and_(pc.is_valid(rows.column(query.vector_column)),
                               pa.array(~holds(rows, product))))
    if rows.num_rows == 0:
        return None
    X = vector_matrix(rows.column(query.vector_column), info.vector(query.vector_column).dim)
    e = base_edges(query.score(X))
    return list(e) if e is not None else None


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
    elif query.score_column is not None:
        from .scores import stored_entry, top_from_column

        entry = stored_entry(info, query.product) or {}
        rows, scores = top_from_column(store, table, query.score_column, filter, k, cols, entry,
                                       min_score)
    elif query.rows_model is not None:
        rows, scores = stream_top_k_rows(store, table, query, filter, k, cols)
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
    scored = ((b.batch, query.score(b.vectors)) for b in
              iter_blocks(store, table, query.vector_column, columns=columns, filter=filter))
    return _top_k(store, table, scored, k, columns)


def _top_k(store: VectorStore, table: str, scored: Iterator[tuple[Any, np.ndarray]], k: int,
           columns: Sequence[str]) -> tuple[pa.Table, np.ndarray]:
    """The ``k`` best (batch rows, scores) pairs of a stream, best first (k rows + one batch
    in memory)."""
    best_rows: pa.Table | None = None
    best: np.ndarray = np.zeros(0)
    for batch, s in scored:
        rows = pa.Table.from_batches([batch]).select(list(columns))
        if best_rows is not None:
            rows, s = pa.concat_tables([best_rows, rows]), np.concatenate([best, s])
        if len(s) > k:
            top = np.argpartition(-s, k - 1)[:k]
            rows, s = rows.take(pa.array(top)), s[top]
        best_rows, best = rows, s
    if best_rows is None:
        return store.table_info(table).schema.empty_table().select(list(columns)), best
    order = np.argsort(-best, kind="stable")
    return best_rows.take(pa.array(order)), best[order]


def stream_top_k_rows(store: VectorStore, table: str, query: ProductQuery,
                      filter: Filter | None, k: int, columns: Sequence[str]
                      ) -> tuple[pa.Table, np.ndarray]:
    """Exact top-``k`` by ``query.score_rows`` (a model of the attributes) over a streamed scan."""
    read = list(dict.fromkeys([*columns, *query.rows_model.columns]))
    scored = ((b, query.score_rows(b)) for b in store.scan(table, columns=read, filter=filter))
    return _top_k(store, table, scored, k, columns)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(d, default=lambda o: o.tolist() if hasattr(o, "tolist")
                                 else str(o)))
