"""The facade's store administration and report: stats, versions, restore, optimize,
prewarm, migrate, the HTML report and the product lists it plots (the bodies behind
:meth:`Kindred.stats`, :meth:`Kindred.report`, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.compute as pc

import vectorstore
from ingest.datamodel import CUSTOMERS, META_PROPENSITY, META_RISK, PRODUCTS
from vectorstore import VectorStore

from .. import admin
from ..admin import Progress
from ..errors import ServiceError
from ..models import MigrationResult, ReportResult, StepResult, StoreStats, VersionRecord
from ._common import default_vector_column, require_table


def stats(store: VectorStore, tables: Sequence[str] | None = None) -> StoreStats:
    """:meth:`services.facade.Kindred.stats`."""
    names = list(tables) if tables else store.list_tables()
    return StoreStats(
        store=admin.store_uri(store), backend=store.scheme,
        versions_supported=store.capabilities.versions,
        tables=[admin.table_stats(store, n) for n in names],
        artifacts=store.list_artifacts(),
    )


def versions(store: VectorStore, table: str) -> list[VersionRecord]:
    """:meth:`services.facade.Kindred.versions`."""
    current = store.version(table)
    return [VersionRecord(version=v.version, timestamp=v.timestamp,
                          current=v.version == current)
            for v in store.versions(table)]


def optimize(store: VectorStore, tables: Sequence[str] | None = None,
             progress: Progress | None = None) -> StepResult:
    """:meth:`services.facade.Kindred.optimize`."""
    names = list(tables) if tables else store.list_tables()
    for i, name in enumerate(names):
        if progress:
            progress("optimize", i, len(names))
        store.optimize(name)
    if progress:
        progress("optimize", len(names), len(names))
    return StepResult(step="optimize", details={"tables": names})


def migrate(store: VectorStore, target: str | VectorStore, *,
            tables: Sequence[str] | None = None, replace: bool = False,
            progress: Progress | None = None,
            on_replace: Callable[[dict[str, int]], None] | None = None) -> MigrationResult:
    """:meth:`services.facade.Kindred.migrate`."""
    dst = vectorstore.connect(target) if isinstance(target, str) else target
    try:
        return admin.migrate(store, dst, tables=tables, replace=replace,
                             progress=progress, on_replace=on_replace)
    finally:
        if isinstance(target, str):
            dst.close()


def report(store: VectorStore, out_dir: str | Path, *, products: Sequence[str] | None = None,
           column: str | None = None,
           methods: Sequence[str] = ("centroid", "learned", "propensity"),
           label: str | None = None, positive: Any = None, max_products: int = 3,
           seed: int = 0, repeats: int = 3, learned_options: dict[str, Any] | None = None,
           propensity_options: dict[str, Any] | None = None) -> ReportResult:
    """:meth:`services.facade.Kindred.report`."""
    from .. import report as rpt

    location = admin.store_uri(store)
    require_table(store, CUSTOMERS, "ingest customers first")
    column = column or default_vector_column(store, CUSTOMERS)
    info = store.table_info(CUSTOMERS)
    if column is None and "risk_score" not in info.schema.names \
            and "propensity" not in methods:
        raise ServiceError("the customers table has no vector column and no risk scores: "
                           "run embed or risk score first")
    if products is None:
        products = report_products(store, max_products)
    st = stats(store, [CUSTOMERS])
    facts = {"store": location, "customers": f"{st.tables[0].rows:,}",
             "vector column": column or "-",
             "vector columns": ", ".join(f"{v.name} ({v.embedder or '-'}, {v.dim}-d)"
                                         for v in st.tables[0].vectors) or "-"}
    run = info.metadata.get(META_RISK) or {}
    if run.get("threshold") is not None:
        scored = (run.get("source") or {}).get("column") or "attributes"
        facts["risk model"] = (f"{run.get('model_id')} on {scored}: "
                               f"{run.get('n_flagged', 0):,} flagged (risk_score > "
                               f"{float(run['threshold']):.3f})")
    data = rpt.collect(store, column=column, products=products, methods=methods,
                       label=label, positive=positive, seed=seed, repeats=repeats,
                       facts=facts,
                       learned_options=learned_options,
                       propensity_options=propensity_options,
                       title=f"Kindred report: {location}")
    return rpt.write_report(data, out_dir)


def report_products(store: VectorStore, n: int = 3, *, min_holders: int = 50) -> list[str]:
    """:meth:`services.facade.Kindred.report_products`."""
    fitted = list(store.table_info(CUSTOMERS).metadata.get(META_PROPENSITY) or {})
    if fitted:
        return fitted[:n]
    counts = product_counts(store)
    ranked = sorted((p for p in counts if counts[p] >= min_holders),
                    key=lambda p: (counts[p], p))
    return ranked[:n]


def product_counts(store: VectorStore) -> dict[str, int]:
    """:meth:`services.facade.Kindred.product_counts`."""
    from vectorstore.filters import Has

    info = store.table_info(CUSTOMERS)
    if "holdings" not in info.schema.names:
        return {}
    if store.has_table(PRODUCTS):
        candidates = store.to_arrow(PRODUCTS, columns=["product_id"]).column(
            "product_id").to_pylist()
    else:
        lists = store.to_arrow(CUSTOMERS, columns=["holdings"]).column("holdings")
        candidates = sorted(set(pc.list_flatten(lists).drop_null().to_pylist()))
    return {p: store.count(CUSTOMERS, Has("holdings", p)) for p in candidates}


def popular_products(store: VectorStore, n: int = 3, *, min_holders: int = 20) -> list[str]:
    """:meth:`services.facade.Kindred.popular_products`."""
    counts = product_counts(store)
    ranked = sorted((p for p in counts if counts[p] >= min_holders),
                    key=lambda p: -counts[p])
    return ranked[:n]
