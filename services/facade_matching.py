"""The bodies of :class:`services.facade.Kindred`'s product matching and recommendations:
match, fit, product_query, explain, recommend, recommendations and evaluate_matching.
The facade keeps the signatures and docstrings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .admin import Progress
from .errors import EvaluationError, ServiceError
from .facade_common import (
    CUSTOMERS,
    EVENTS,
    PRODUCTS,
    _check_fresh,
    _finite,
    _for_step,
)
from .models import (
    StepResult,
)

if TYPE_CHECKING:
    from .evaluate import EvaluationReport
    from .facade import Kindred
    from .matching import Explanation, MatchResult, ProductQuery, RecommendSummary


def match(self: Kindred, product: str, *, method: str, vector_column: str | None, top: int | None,
          audience_pct: float | None, min_score: float | None, where: str | None, exact: bool,
          columns: Sequence[str], min_consumers: int, query: ProductQuery | None, consumers: bool,
          prospects: bool, bands: Sequence[float] | None, propensity_options: dict[str,
          Any] | None) -> MatchResult:
    """The body of :meth:`Kindred.match`."""
    from .matching import match

    _finite(min_score=min_score, audience_pct=audience_pct,
            **{f"bands[{i}]": b for i, b in enumerate(bands or ())})
    if top is not None and audience_pct is not None:
        raise ServiceError("give top or audience_pct, not both: each sets the list length")
    self._require_table(CUSTOMERS, "ingest customers first")
    if method != "propensity":
        vector_column = vector_column or self.default_vector_column()
    columns = self._named(CUSTOMERS, columns) or ()
    if method == "propensity":
        from .matching.scores import score_column

        _check_fresh(self._store, CUSTOMERS, score_column(product))
    else:
        _check_fresh(self._store, CUSTOMERS, vector_column)
    if isinstance(where, str):
        from ingest.names import resolve_filter_names

        info = self._store.table_info(CUSTOMERS)
        where = resolve_filter_names(where, info.schema.names, info.metadata)
    return match(self._store, product, method=method, vector_column=vector_column,
                 top_k=top, audience_pct=audience_pct, min_score=min_score, filter=where,
                 exact=exact, columns=columns, min_consumers=min_consumers, query=query,
                 consumers=consumers, prospects=prospects, bands=bands,
                 propensity_options=propensity_options)


def fit(self: Kindred, products: Sequence[str], *, method: str, vector_column: str | None,
        exclude: Sequence[str], types: Sequence[str] | dict[str, str], seed: int,
        propensity_options: dict[str, Any] | None, progress: Progress | None) -> StepResult:
    """The body of :meth:`Kindred.fit`."""
    from ingest.column_kinds import parse_kinds

    from .matching import build_query
    from .matching.scores import fit_and_write

    self._require_table(CUSTOMERS, "ingest customers first")
    if method not in ("propensity", "learned"):
        raise ServiceError(f"fit: method must be propensity or learned, got {method!r}")
    try:
        kinds = parse_kinds(types)
    except ValueError as exc:
        raise ServiceError(str(exc)) from None
    out: dict[str, Any] = {}
    for product in products:
        if method == "learned":
            q = build_query(self._store, product, "learned", seed=seed,
                            vector_column=vector_column or self.default_vector_column())
            out[product] = {"method": "learned", "vector_column": q.vector_column,
                            "cached": q.details.get("cached"), "C": q.details.get("C")}
            continue
        opts = {**(propensity_options or {}), "exclude": list(exclude), "types": kinds}
        entry = fit_and_write(self._store, product, seed=seed, options=opts,
                              progress=_for_step(progress, f"fit {product}"))
        out[product] = {"method": "propensity", "column": entry["column"],
                        "model_id": entry["model_id"], "rows_scored": entry["rows_scored"],
                        "base_rate": entry["base_rate"],
                        "assessment": entry["assessment"], "leakage": entry["leakage"],
                        "features": entry["state"]["details"]["features"],
                        "dropped": entry["state"]["details"]["dropped"]}
    return StepResult(step="fit", table=CUSTOMERS, details={"products": out})


def product_query(self: Kindred, product: str, *, method: str, vector_column: str | None,
                  min_consumers: int, **learned_options: Any) -> ProductQuery:
    """The body of :meth:`Kindred.product_query`."""
    from .matching import build_query

    vector_column = vector_column or self.default_vector_column()
    return build_query(self._store, product, method, vector_column=vector_column,
                       min_consumers=min_consumers, **learned_options)


def explain(self: Kindred, customer_id: str, product: str, *, vector_column: str | None,
                  k: int) -> Explanation:
    """The body of :meth:`Kindred.explain`."""
    from .matching import explain

    self._require_table(CUSTOMERS, "ingest customers first")
    vector_column = vector_column or self.default_vector_column()
    _check_fresh(self._store, CUSTOMERS, vector_column)
    return explain(self._store, customer_id, product, vector_column=vector_column, k=k)


def recommend(self: Kindred, *, top_n: int, vector_column: str | None, exclude_held: bool,
              method: str | None, only_products: bool,
              progress: Progress | None) -> RecommendSummary | StepResult:
    """The body of :meth:`Kindred.recommend`."""
    from .matching import recommend
    from .matching.rec_write import recommend_behaviour

    if method is None:  # a shared vector column means customer . product
        method = "vector" if vector_column or not self._store.has_table(EVENTS) \
            else "behavior"
    rows_done = _for_step(progress, "recommend")
    if method == "behavior":
        self._require_table(EVENTS, "ingest events first")
        d = recommend_behaviour(self._store, top_n=top_n, only_products=only_products,
                                progress=rows_done)
        return StepResult(step="recommend", table=CUSTOMERS, details=d)
    if method != "vector":
        raise ServiceError(f"recommend: method must be behavior or vector, got {method!r}")
    self._require_table(PRODUCTS, "ingest products first")
    _check_fresh(self._store, CUSTOMERS, vector_column)
    return recommend(self._store, vector_column=vector_column, top_n=top_n,
                     exclude_held=exclude_held, progress=rows_done)


def recommendations(self: Kindred, customer_id: str, *, top_n: int, only_products: bool) -> dict[str, Any]:
    """The body of :meth:`Kindred.recommendations`."""
    import numpy as np

    from vectorstore.filters import Cmp

    from .matching.behaviour import (
        Recommender,
        explain_one,
        fit_recommender,
        history_rows,
        read_interactions,
        saved_recommender,
    )

    self._require_table(CUSTOMERS, "ingest customers first")
    self._require_table(EVENTS, "ingest events first")
    me = self._store.to_arrow(CUSTOMERS, columns=["customer_id", "holdings"]
                              if "holdings" in self._store.table_info(CUSTOMERS).schema.names
                              else ["customer_id"], filter=Cmp("customer_id", "=", customer_id))
    if me.num_rows == 0:
        raise ServiceError(f"table 'customers' has no customer {customer_id!r}")
    saved = saved_recommender(self._store, CUSTOMERS)
    if saved is not None:
        rec, source = Recommender.load(self._store, saved), "saved recommender"
    else:
        rec, _ = fit_recommender(self._store, read_interactions(self._store))
        source = "fitted now (run `kindred recommend` to save one)"
    mine = read_interactions(self._store, filter=Cmp("customer_id", "=", customer_id)) \
        if self._store.count(EVENTS, Cmp("customer_id", "=", customer_id)) else None
    ids = me.column("customer_id").combine_chunks()
    if mine is None:
        empty = np.zeros(1)
        import scipy.sparse as sp

        z = sp.csr_matrix((1, len(rec.items)))
        counts, days, active = z, z, empty
    else:
        counts, days, active = history_rows(rec, mine, ids)
    exclude = np.zeros(len(rec.items), dtype=bool)
    if only_products and self._store.has_table(PRODUCTS):
        pids = self._store.to_arrow(PRODUCTS, columns=["product_id"]).column("product_id")
        exclude |= ~np.isin(np.asarray(rec.items, dtype=object), pids.to_pylist())
    held = me.column("holdings")[0].as_py() if "holdings" in me.column_names else None
    for p in held or []:
        if p in rec.items and not rec.repeatable[rec.items.index(p)]:
            exclude[rec.items.index(p)] = True
    items = explain_one(rec, counts, days, active, top_n, exclude)
    return {"customer_id": customer_id, "active_days": int(active[0]),
            "holdings": held or [], "source": source, "recommendations": items}


def evaluate_matching(self: Kindred, product: str | None, *, label: str | None, positive: Any,
                      vector_columns: Sequence[str] | None, methods: Sequence[str], holdout: float,
                      seed: int, repeats: int, split_column: str | None, test_value: Any,
                      test_size: float, exclude: Sequence[str],
                      learned_options: dict[str, Any] | None,
                      propensity_options: dict[str, Any] | None,
                      progress: Progress | None) -> EvaluationReport:
    """The body of :meth:`Kindred.evaluate_matching`."""
    lo = dict(learned_options or {})
    po = {**(propensity_options or {}), **({"exclude": list(exclude)} if exclude else {})}
    from .evaluate import evaluate_holdout, evaluate_labels

    self._require_table(CUSTOMERS, "ingest customers first")
    if (product is None) == (label is None):
        raise EvaluationError("evaluate matching needs exactly one of a product (holdout) "
                              "or a label column")
    rows_done = _for_step(progress, "evaluate matching")
    if label is not None:
        label = self._named_one(CUSTOMERS, label)
        return evaluate_labels(self._store, label, positive=positive,
                               vector_columns=vector_columns, methods=methods, seed=seed,
                               repeats=repeats, split_column=split_column,
                               test_value=test_value, test_size=test_size,
                               progress=rows_done, propensity_options=po, **lo)
    return evaluate_holdout(self._store, product, vector_columns=vector_columns,
                            methods=methods, holdout=holdout, seed=seed, repeats=repeats,
                            progress=rows_done, propensity_options=po, **lo)
