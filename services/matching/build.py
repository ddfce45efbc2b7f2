"""The query for a product by a method name, from the current holders: the entry point of
``match``, ``explain`` and the report. ``auto`` picks the method by repeated holdouts
(:mod:`services.matching.evaluate`), which fit candidate queries with
:func:`services.matching.query.fit_query`: so this module sits above both, and neither
imports it back."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vectorstore import VectorStore
from vectorstore.errors import StoreError
from vectorstore.filters import Cmp, Has

from ..errors import MatchingError, NotEnoughData, UnknownProduct
from ._data import (
    CUSTOMER_KEY,
    CUSTOMERS,
    HOLDINGS,
    PRODUCT_KEY,
    PRODUCTS,
    holdings_labeller,
    resolve_column,
)
from .assess import predictability
from .evaluate import evaluate_holdout
from .query import (
    METHODS,
    ProductQuery,
    count_consumers,
    fit_product,
    fit_propensity_query,
    fit_query,
    product_vector,
    stored_propensity_query,
)


def build_query(store: VectorStore, product: str, method: str = "centroid", *,
                vector_column: str | None = None, table: str = CUSTOMERS,
                products_table: str = PRODUCTS, min_consumers: int = 20, seed: int = 0,
                candidates: Sequence[str] | None = None, cache: bool = True,
                read_only: bool = False, propensity_options: dict[str, Any] | None = None,
                **learned_options: Any) -> ProductQuery:
    """The query for ``product`` by ``method`` from the current holders.

    Refuses with NotEnoughData when fewer than ``min_consumers`` customers hold the product
    (lookalike methods: a centroid of three people is noise), and with UnknownProduct when no
    one holds it and the products table does not know it. ``auto`` compares ``candidates``
    (default: centroid, learned, propensity, and product when it has a vector) over repeated
    holdouts. With ``cache`` a ``learned`` query is read from the store when one was saved
    for the table as it is now (see :mod:`services.matching.cache`; ``details["cached"]``
    says so), and saved after a fit unless ``read_only``. ``read_only`` callers (``match``)
    write nothing at all. ``propensity_options`` go to
    :func:`services.matching.propensity.fit_propensity`.
    """
    if method not in METHODS:
        raise MatchingError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    info = store.table_info(table)
    column = _column_or_none(info, vector_column, required=method not in ("propensity", "auto"))
    n = count_consumers(store, product, table=table)
    pv = product_vector(store, product, column, products_table=products_table) \
        if column is not None else None
    if n == 0 and pv is None and not _product_known(store, product, products_table):
        raise UnknownProduct(f"product {product!r}: no customer holds it and table "
                             f"{products_table!r} does not list it")
    if method != "product" and n < min_consumers:
        raise NotEnoughData(f"product {product!r} has {n} known consumers; lookalike matching "
                            f"needs at least {min_consumers} (set min_consumers to override)")
    if method == "auto":
        return _auto(store, product, column, table=table, products_table=products_table,
                     seed=seed, with_product=pv is not None, candidates=candidates,
                     read_only=read_only, propensity_options=propensity_options,
                     **learned_options)
    if method == "product":
        assert column is not None
        q = fit_product(store, table, column, product, products_table=products_table)
        q.n_consumers = n
        return q
    if method == "propensity":
        stored = stored_propensity_query(store, info, product)
        if stored is not None and not propensity_options:
            return stored
        return fit_propensity_query(store, table, holdings_labeller(product),
                                    [CUSTOMER_KEY, HOLDINGS], product=product, seed=seed,
                                    **(propensity_options or {}))
    assert column is not None
    key = None
    if method == "learned" and cache:
        from . import cache as learned_cache

        key = learned_cache.fingerprint(store, table, column, product, n, seed, learned_options)
        hit = learned_cache.load(store, key)
        if hit is not None:
            return hit
    labeller = holdings_labeller(product)
    q = fit_query(store, table, column, method, labeller, [CUSTOMER_KEY, HOLDINGS],
                  product=product, seed=seed, products_table=products_table,
                  prefilter=Has(HOLDINGS, product), remember=not read_only, **learned_options)
    if key is not None:
        q.details["cached"] = False
        if not read_only:
            try:
                learned_cache.save(store, q, key)
            except StoreError:  # a store that cannot keep the artifact still gets its match
                q.details["cached"] = None
    return q


def _column_or_none(info: Any, vector_column: str | None, *, required: bool) -> str | None:
    if required or vector_column is not None or len(info.vectors) == 1:
        return resolve_column(info, vector_column)
    return None


def _product_known(store: VectorStore, product: str, products_table: str) -> bool:
    if not store.has_table(products_table):
        return False
    return store.count(products_table, Cmp(PRODUCT_KEY, "=", product)) > 0


def _auto(store: VectorStore, product: str, column: str | None, *, table: str,
          products_table: str, seed: int, with_product: bool,
          candidates: Sequence[str] | None, read_only: bool,
          propensity_options: dict[str, Any] | None, **learned_options: Any) -> ProductQuery:

    vector_methods = ["centroid", "learned", *(["product"] if with_product else [])]
    methods = list(candidates or [*(vector_methods if column else []), "propensity"])
    report = evaluate_holdout(store, product, vector_columns=[column] if column else None,
                              methods=methods, table=table, products_table=products_table,
                              seed=seed, min_consumers=2, propensity_options=propensity_options,
                              **learned_options)
    rows = [r for r in report.rows if r.method in methods and r.roc_auc is not None]
    if not rows:
        failed = "; ".join(f"{r.method}: {r.error}" for r in report.rows if r.error)
        raise MatchingError(f"product {product!r}: no method could be evaluated ({failed})")
    best_row = max(rows, key=lambda r: r.roc_auc or 0.0)
    best = best_row.method
    aucs = {r.method: r.roc_auc for r in rows}
    q = None
    if best == "propensity" and not propensity_options:
        q = stored_propensity_query(store, store.table_info(table), product)
    if q is None:
        q = fit_query(store, table, column or "", best, holdings_labeller(product),
                      [CUSTOMER_KEY, HOLDINGS], product=product, seed=seed,
                      products_table=products_table, prefilter=Has(HOLDINGS, product),
                      remember=not read_only, propensity_options=propensity_options,
                      **learned_options)
    low, high = best_row.roc_auc_interval or (best_row.roc_auc, best_row.roc_auc)
    assert low is not None  # the best row has a ROC-AUC
    assert high is not None
    q.details["auto"] = {
        "picked": best, "holdout_roc_auc": aucs,
        "holdout_roc_auc_sd": {r.method: r.roc_auc_sd for r in rows},
        "repeats": report.params.get("repeats"),
        "failed": {r.method: r.error for r in report.rows if r.error},
        "reason": f"highest mean holdout ROC-AUC ({aucs[best]:.4f} over "
                  f"{report.params.get('repeats')} repeats) of {', '.join(sorted(aucs))}"}
    q.details["predictability"] = predictability(
        best, float(best_row.roc_auc or 0.0), float(low), float(high),
        f"{report.params.get('repeats')} repeated holdouts")
    if report.warnings:
        q.details["leakage"] = report.warnings
    return q
