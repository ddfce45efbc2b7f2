"""The bodies of :class:`services.facade.Kindred`'s HTML report and the product counts it
picks products by: report, report_products, product_counts, popular_products. The facade
keeps the signatures and docstrings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.compute as pc

from .errors import ServiceError
from .facade_common import (
    CUSTOMERS,
    PRODUCTS,
)
from .models import (
    ReportResult,
)

if TYPE_CHECKING:
    from .facade import Kindred


def report(self: Kindred, out_dir: str | Path, *, products: Sequence[str] | None,
           column: str | None, methods: Sequence[str], label: str | None, positive: Any,
           max_products: int, seed: int, repeats: int, learned_options: dict[str, Any] | None,
           propensity_options: dict[str, Any] | None) -> ReportResult:
    """The body of :meth:`Kindred.report`."""
    from . import report as rpt

    self._require_table(CUSTOMERS, "ingest customers first")
    column = column or self.default_vector_column()
    info = self._store.table_info(CUSTOMERS)
    if column is None and "risk_score" not in info.schema.names \
            and "propensity" not in methods:
        raise ServiceError("the customers table has no vector column and no risk scores: "
                           "run embed or risk score first")
    if products is None:
        products = self.report_products(max_products)
    st = self.stats([CUSTOMERS])
    facts = {"store": self.location, "customers": f"{st.tables[0].rows:,}",
             "vector column": column or "-",
             "vector columns": ", ".join(f"{v.name} ({v.embedder or '-'}, {v.dim}-d)"
                                         for v in st.tables[0].vectors) or "-"}
    run = info.metadata.get("risk") or {}
    if run.get("threshold") is not None:
        scored = (run.get("source") or {}).get("column") or "attributes"
        facts["risk model"] = (f"{run.get('model_id')} on {scored}: "
                               f"{run.get('n_flagged', 0):,} flagged (risk_score > "
                               f"{float(run['threshold']):.3f})")
    data = rpt.collect(self._store, column=column, products=products, methods=methods,
                       label=label, positive=positive, seed=seed, repeats=repeats,
                       facts=facts,
                       learned_options=learned_options,
                       propensity_options=propensity_options,
                       title=f"Kindred report: {self.location}")
    return rpt.write_report(data, out_dir)


def report_products(self: Kindred, n: int, *, min_holders: int) -> list[str]:
    """The body of :meth:`Kindred.report_products`."""
    fitted = list(self._store.table_info(CUSTOMERS).metadata.get("propensity") or {})
    if fitted:
        return fitted[:n]
    counts = self.product_counts()
    ranked = sorted((p for p in counts if counts[p] >= min_holders),
                    key=lambda p: (counts[p], p))
    return ranked[:n]


def product_counts(self: Kindred) -> dict[str, int]:
    """The body of :meth:`Kindred.product_counts`."""
    from vectorstore.filters import Has

    info = self._store.table_info(CUSTOMERS)
    if "holdings" not in info.schema.names:
        return {}
    if self._store.has_table(PRODUCTS):
        candidates = self._store.to_arrow(PRODUCTS, columns=["product_id"]).column(
            "product_id").to_pylist()
    else:
        lists = self._store.to_arrow(CUSTOMERS, columns=["holdings"]).column("holdings")
        candidates = sorted(set(pc.list_flatten(lists).drop_null().to_pylist()))
    return {p: self._store.count(CUSTOMERS, Has("holdings", p)) for p in candidates}


def popular_products(self: Kindred, n: int, *, min_holders: int) -> list[str]:
    """The body of :meth:`Kindred.popular_products`."""
    counts = self.product_counts()
    ranked = sorted((p for p in counts if counts[p] >= min_holders),
                    key=lambda p: -counts[p])
    return ranked[:n]
