"""The facade's product-matching steps: match, fit, product queries, explanations,
recommendations and their evaluation (the bodies behind :meth:`Kindred.match`, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ingest.datamodel import CUSTOMERS, EVENTS, PRODUCTS
from vectorstore import VectorStore

from ..admin import Progress
from ..errors import EvaluationError, ServiceError
from ..models import CustomerRecommendations, RecommendedItem, StepResult
from ._common import (
    _check_fresh,
    _finite,
    _for_step,
    default_vector_column,
    named,
    named_one,
    require_table,
)

INDEX_MIN_ROWS = 5_000
"""The row count from which :meth:`Kindred.index` builds ANN indexes by default."""

if TYPE_CHECKING:
    from ..matching import Explanation, MatchResult, ProductQuery, RecommendSummary
    from ..matching.evaluate import EvaluationReport



def match(store: VectorStore, product: str, *, method: str = "centroid",
          vector_column: str | None = None, top: int | None = None,
          audience_pct: float | None = None, min_score: float | None = None,
          where: str | None = None, exact: bool = False, columns: Sequence[str] = (),
          min_consumers: int = 20, query: ProductQuery | None = None, consumers: bool = True,
          prospects: bool = True, bands: Sequence[float] | None = None,
          propensity_options: dict[str, Any] | None = None) -> MatchResult:
    """:meth:`services.facade.Kindred.match`."""
    from ..matching import match

    _finite(min_score=min_score, audience_pct=audience_pct,
            **{f"bands[{i}]": b for i, b in enumerate(bands or ())})
    if top is not None and audience_pct is not None:
        raise ServiceError("give top or audience_pct, not both: each sets the list length")
    require_table(store, CUSTOMERS, "ingest customers first")
    if method != "propensity":
        vector_column = vector_column or default_vector_column(store, CUSTOMERS)
    columns = named(store, CUSTOMERS, columns) or ()
    if method == "propensity":
        from ..matching.scores import score_column

        _check_fresh(store, CUSTOMERS, score_column(product))
    else:
        _check_fresh(store, CUSTOMERS, vector_column)
    if isinstance(where, str):
        from ingest.names import resolve_filter_names

        info = store.table_info(CUSTOMERS)
        where = resolve_filter_names(where, info.schema.names, info.metadata)
    result = match(store, product, method=method, vector_column=vector_column,
                   top_k=top, audience_pct=audience_pct, min_score=min_score, filter=where,
                   exact=exact, columns=columns, min_consumers=min_consumers, query=query,
                   consumers=consumers, prospects=prospects, bands=bands,
                   propensity_options=propensity_options)
    hint = index_hint(store, result.summary.column, searched=not exact
                      and method != "propensity" and not result.summary.ann_index)
    if hint:
        result.summary.warnings.append(hint)
    return result


def index_hint(store: VectorStore, column: str | None, *, searched: bool,
               min_rows: int | None = None) -> str | None:
    """The line ``match`` adds when it searched ``column`` exactly because nothing indexed
    it, on a table big enough that ``index`` would build one: match only reads (index upkeep
    belongs to ``index``, ``refresh`` and ``prewarm``), so it says what to run instead."""
    if not searched or column is None or not store.capabilities.ann_index:
        return None
    n = store.count(CUSTOMERS)
    if n < (INDEX_MIN_ROWS if min_rows is None else min_rows):
        return None
    return (f"no ANN index on {column}: an exact search of {n:,} rows; run `kindred index` "
            "(Kindred.index) to build one")


def fit(store: VectorStore, products: Sequence[str], *, method: str = "propensity",
        vector_column: str | None = None, exclude: Sequence[str] = (),
        types: Sequence[str] | dict[str, str] = (), seed: int = 0,
        propensity_options: dict[str, Any] | None = None,
        progress: Progress | None = None, runner: Any = None) -> StepResult:
    """:meth:`services.facade.Kindred.fit`."""
    from ingest.column_kinds import parse_kinds

    from ..matching import build_query
    from ..matching.scores import fit_and_write

    require_table(store, CUSTOMERS, "ingest customers first")
    if method not in ("propensity", "learned"):
        raise ServiceError(f"fit: method must be propensity or learned, got {method!r}")
    try:
        kinds = parse_kinds(types)
    except ValueError as exc:
        raise ServiceError(str(exc)) from None
    out: dict[str, Any] = {}
    for product in products:
        if method == "learned":
            q = build_query(store, product, "learned", seed=seed,
                            vector_column=vector_column
                            or default_vector_column(store, CUSTOMERS))
            out[product] = {"method": "learned", "vector_column": q.vector_column,
                            "cached": q.details.get("cached"), "C": q.details.get("C")}
            continue
        opts = {**(propensity_options or {}), "exclude": list(exclude), "types": kinds}
        entry = fit_and_write(store, product, seed=seed, options=opts,
                              progress=_for_step(progress, f"fit {product}"),
                              runner=runner)
        out[product] = {"method": "propensity", "column": entry["column"],
                        "model_id": entry["model_id"], "rows_scored": entry["rows_scored"],
                        "base_rate": entry["base_rate"],
                        "assessment": entry["assessment"], "leakage": entry["leakage"],
                        "features": entry["state"]["details"]["features"],
                        "dropped": entry["state"]["details"]["dropped"]}
    return StepResult(step="fit", table=CUSTOMERS, details={"products": out})


def product_query(store: VectorStore, product: str, *, method: str = "centroid",
                  vector_column: str | None = None, min_consumers: int = 20,
                  **learned_options: Any) -> ProductQuery:
    """:meth:`services.facade.Kindred.product_query`."""
    from ..matching import build_query

    vector_column = vector_column or default_vector_column(store, CUSTOMERS)
    return build_query(store, product, method, vector_column=vector_column,
                       min_consumers=min_consumers, **learned_options)


def explain(store: VectorStore, customer_id: str, product: str, *,
            vector_column: str | None = None, k: int = 5) -> Explanation:
    """:meth:`services.facade.Kindred.explain`."""
    from ..matching import explain

    require_table(store, CUSTOMERS, "ingest customers first")
    vector_column = vector_column or default_vector_column(store, CUSTOMERS)
    _check_fresh(store, CUSTOMERS, vector_column)
    return explain(store, customer_id, product, vector_column=vector_column, k=k)


def recommend(store: VectorStore, runner: Any, *, top_n: int = 3,
              vector_column: str | None = None, exclude_held: bool = True,
              method: str | None = None, only_products: bool = True,
              progress: Progress | None = None) -> RecommendSummary | StepResult:
    """:meth:`services.facade.Kindred.recommend`."""
    from ..matching import recommend
    from ..matching.rec_write import recommend_behaviour

    if method is None:  # a shared vector column means customer . product
        method = "vector" if vector_column or not store.has_table(EVENTS) \
            else "behavior"
    rows_done = _for_step(progress, "recommend")
    if method == "behavior":
        require_table(store, EVENTS, "ingest events first")
        d = recommend_behaviour(store, top_n=top_n, only_products=only_products,
                                progress=rows_done, runner=runner)
        return StepResult(step="recommend", table=CUSTOMERS, details=d)
    if method != "vector":
        raise ServiceError(f"recommend: method must be behavior or vector, got {method!r}")
    require_table(store, PRODUCTS, "ingest products first")
    _check_fresh(store, CUSTOMERS, vector_column)
    return recommend(store, vector_column=vector_column, top_n=top_n,
                     exclude_held=exclude_held, progress=rows_done, runner=runner)


def recommendations(store: VectorStore, customer_id: str, *, top_n: int = 10,
                    only_products: bool = True) -> CustomerRecommendations:
    """:meth:`services.facade.Kindred.recommendations`."""
    import numpy as np

    from vectorstore.filters import Cmp

    from ..matching.behaviour import (
        Recommender,
        explain_one,
        fit_recommender,
        history_rows,
        saved_recommender,
    )
    from ..matching.interactions import read_interactions

    require_table(store, CUSTOMERS, "ingest customers first")
    require_table(store, EVENTS, "ingest events first")
    me = store.to_arrow(CUSTOMERS, columns=["customer_id", "holdings"]
                        if "holdings" in store.table_info(CUSTOMERS).schema.names
                        else ["customer_id"], filter=Cmp("customer_id", "=", customer_id))
    if me.num_rows == 0:
        raise ServiceError(f"table 'customers' has no customer {customer_id!r}")
    saved = saved_recommender(store, CUSTOMERS)
    if saved is not None:
        rec, source = Recommender.load(store, saved), "saved recommender"
    else:
        rec, _ = fit_recommender(store, read_interactions(store))
        source = "fitted now (run `kindred recommend` to save one)"
    mine = read_interactions(store, filter=Cmp("customer_id", "=", customer_id)) \
        if store.count(EVENTS, Cmp("customer_id", "=", customer_id)) else None
    ids = me.column("customer_id").combine_chunks()
    if mine is None:
        empty = np.zeros(1)
        import scipy.sparse as sp

        z = sp.csr_matrix((1, len(rec.items)))
        counts, days, active = z, z, empty
    else:
        counts, days, active = history_rows(rec, mine, ids)
    exclude = np.zeros(len(rec.items), dtype=bool)
    if only_products and store.has_table(PRODUCTS):
        pids = store.to_arrow(PRODUCTS, columns=["product_id"]).column("product_id")
        exclude |= ~np.isin(np.asarray(rec.items, dtype=object), pids.to_pylist())
    held = me.column("holdings")[0].as_py() if "holdings" in me.column_names else None
    for p in held or []:
        if p in rec.items and not rec.repeatable[rec.items.index(p)]:
            exclude[rec.items.index(p)] = True
    attrs = store.to_arrow(CUSTOMERS, columns=rec.attribute_columns, filter=Cmp(
        "customer_id", "=", customer_id)) if rec.attribute_columns else None
    items = explain_one(rec, counts, days, active, top_n, exclude, attrs)
    return CustomerRecommendations(
        customer_id=customer_id, active_days=int(active[0]), holdings=held or [],
        source=source, recommendations=[RecommendedItem(**item) for item in items])


def evaluate_recommendations(store: VectorStore, *, k: int = 10, seed: int = 0) -> Any:
    """:meth:`services.facade.Kindred.evaluate_recommendations`."""
    from ..matching.evaluate_recs import evaluate_next_basket

    require_table(store, EVENTS, "ingest events first")
    return evaluate_next_basket(store, k=k, seed=seed)


def evaluate_matching(store: VectorStore, product: str | None = None, *,
                      label: str | None = None, positive: Any = None,
                      vector_columns: Sequence[str] | None = None,
                      methods: Sequence[str] = ("centroid", "learned", "propensity"),
                      holdout: float = 0.2, seed: int = 0, repeats: int = 3,
                      split_column: str | None = None, test_value: Any = "test",
                      test_size: float = 0.3, exclude: Sequence[str] = (),
                      learned_options: dict[str, Any] | None = None,
                      propensity_options: dict[str, Any] | None = None,
                      progress: Progress | None = None) -> EvaluationReport:
    """:meth:`services.facade.Kindred.evaluate_matching`."""
    lo = dict(learned_options or {})
    po = {**(propensity_options or {}), **({"exclude": list(exclude)} if exclude else {})}
    from ..matching.evaluate import evaluate_holdout, evaluate_labels

    require_table(store, CUSTOMERS, "ingest customers first")
    if (product is None) == (label is None):
        raise EvaluationError("evaluate matching needs exactly one of a product (holdout) "
                              "or a label column")
    rows_done = _for_step(progress, "evaluate matching")
    if label is not None:
        label = named_one(store, CUSTOMERS, label)
        return evaluate_labels(store, label, positive=positive,
                               vector_columns=vector_columns, methods=methods, seed=seed,
                               repeats=repeats, split_column=split_column,
                               test_value=test_value, test_size=test_size,
                               progress=rows_done, propensity_options=po, **lo)
    assert product is not None  # exactly one of product and label (checked above)
    return evaluate_holdout(store, product, vector_columns=vector_columns,
                            methods=methods, holdout=holdout, seed=seed, repeats=repeats,
                            progress=rows_done, propensity_options=po, **lo)
