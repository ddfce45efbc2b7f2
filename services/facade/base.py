"""The store-facing half of :class:`services.facade.Kindred`: lifecycle, store
administration, the report and its product lists.

A base class rather than a mixin: it declares the two attributes it reads (``_store``,
``_runner``), which :class:`Kindred`'s ``__init__`` sets, so mypy checks every use. The bodies
are module functions (:mod:`.store_admin`, :mod:`.embedding`), as for the rest of the facade.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

from ingest.datamodel import CUSTOMERS
from vectorstore import VectorStore

from .. import admin
from ..admin import Progress
from ..models import MigrationResult, ReportResult, StepResult, StoreStats, VersionRecord
from . import embedding, store_admin
from ._common import default_vector_column


class StoreFace:
    """Lifecycle and store administration over ``_store`` (see :class:`Kindred`)."""

    _store: VectorStore
    _runner: Any
    _owned: bool

    # ------------------------------------------------------------------ lifecycle
    @property
    def store(self) -> VectorStore:
        """The underlying store (for direct reads: scan, search, to_arrow)."""
        return self._store

    @property
    def runner(self) -> Any:
        """The runner the heavy steps use (:mod:`ingest.runner`)."""
        return self._runner

    @property
    def location(self) -> str:
        """Where the store lives, with any password redacted."""
        return admin.store_uri(self._store)

    def close(self) -> None:
        if self._owned:
            self._store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Kindred({self.location!r})"

    # ------------------------------------------------------------------ store administration
    def tables(self) -> list[str]:
        return self._store.list_tables()

    def stats(self, tables: Sequence[str] | None = None) -> StoreStats:
        """Row counts, vector columns and their embedders, indexes, versions and disk size."""
        return store_admin.stats(self._store, tables)

    def versions(self, table: str = CUSTOMERS) -> list[VersionRecord]:
        """The versions of a table, oldest first (backends that keep versions)."""
        return store_admin.versions(self._store, table)

    def restore(self, version: int, table: str = CUSTOMERS) -> VersionRecord:
        """Make ``version`` the current state of ``table`` (as a new version; history is kept)."""
        self._store.restore(table, version)
        return VersionRecord(version=self._store.version(table), timestamp=None, current=True)

    def optimize(self, tables: Sequence[str] | None = None,
                 progress: Progress | None = None) -> StepResult:
        """Compact storage and bring indexes up to date, table by table."""
        return store_admin.optimize(self._store, tables, progress)

    def prewarm(self, table: str = CUSTOMERS) -> StepResult:
        """Load ``table``'s indexes into memory now, so that the first matches of a
        long-running application answer at warm speed (at 1,000,000 x 384: ~3-4 s and
        0.4-1 GB; a first-touch ``match`` goes from ~31-64 ms to ~13-18 ms, see
        docs/benchmarks.md)."""
        self._store.prewarm(table)
        return StepResult(step="prewarm", details={"table": table})

    def index(self, table: str = CUSTOMERS, *, columns: Sequence[str] | None = None,
              min_rows: int = 5_000, index_type: str | None = None,
              progress: Progress | None = None) -> StepResult:
        """Build (or rebuild) ANN indexes on vector columns and a scalar index on the key.

        Vector indexes are built only once the table has ``min_rows`` rows: below that an exact
        search is fast and exact. Columns named in ``columns`` are indexed regardless.
        """
        return embedding.index(self._store, self._runner, table, columns=columns,
                               min_rows=min_rows, index_type=index_type, progress=progress)

    def migrate(self, target: str | VectorStore, *, tables: Sequence[str] | None = None,
                replace: bool = False, progress: Progress | None = None,
                on_replace: Callable[[dict[str, int]], None] | None = None) -> MigrationResult:
        """Copy tables (rows, vectors, metadata) and artifacts to another store or backend.

        A target that is this store (however its location is spelled) is refused; with
        ``replace``, ``on_replace`` hears which target tables (and rows) will be dropped
        before any is."""
        return store_admin.migrate(self._store, target, tables=tables, replace=replace,
                                     progress=progress, on_replace=on_replace)

    # ------------------------------------------------------------------ report
    def report(self, out_dir: str | Path, *, products: Sequence[str] | None = None,
               column: str | None = None,
               methods: Sequence[str] = ("centroid", "learned", "propensity"),
               label: str | None = None, positive: Any = None, max_products: int = 3,
               seed: int = 0, repeats: int = 3, learned_options: dict[str, Any] | None = None,
               propensity_options: dict[str, Any] | None = None) -> ReportResult:
        """Write ``report.html`` (self-contained) and its PNGs into ``out_dir``.

        Gain/lift curves per product and method from the same repeated holdouts as
        :meth:`evaluate_matching` (same ``seed``, ``repeats``: the same figures), the
        propensity calibration curve, consumer vs prospect score distributions, the risk score
        distribution with its flag threshold, and a PCA map of customers coloured by holdings
        and risk flag. ``products`` defaults to :meth:`report_products`; ``column`` to the
        default vector column; ``label`` (e.g. ``is_anomaly``, or ``Status`` with
        ``positive="bad"``) adds the risk ROC-AUC and ROC/precision-recall curves. A table
        without holdings gets the risk sections (and the map), not the matching ones.
        """
        return store_admin.report(self._store, out_dir, products=products, column=column,
                                  methods=methods, label=label, positive=positive,
                                  max_products=max_products, seed=seed, repeats=repeats,
                                  learned_options=learned_options,
                                  propensity_options=propensity_options)

    def report_products(self, n: int = 3, *, min_holders: int = 50) -> list[str]:
        """The products a report plots by default: those with a fitted propensity model
        (:meth:`fit`), else the ``n`` least-held products with at least ``min_holders``
        holders (the hardest to target, and the ones a campaign is usually about)."""
        return store_admin.report_products(self._store, n, min_holders=min_holders)

    def product_counts(self) -> dict[str, int]:
        """Holders per product (products table rows, else every product held)."""
        return store_admin.product_counts(self._store)

    def popular_products(self, n: int = 3, *, min_holders: int = 20) -> list[str]:
        """The ``n`` products with most holders (at least ``min_holders``), most held first."""
        return store_admin.popular_products(self._store, n, min_holders=min_holders)

    # ------------------------------------------------------------------ helpers
    def default_vector_column(self, table: str = CUSTOMERS) -> str | None:
        """The vector column used when a call names none: the only one, else the first of
        vec_combined, vec_tabular, vec_behavior, vec_text that exists (None if no vectors)."""
        return default_vector_column(self._store, table)
