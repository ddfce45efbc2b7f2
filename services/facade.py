"""The one object applications embed: :class:`Kindred`, over a store URI or an open store.

``Kindred("./kindred-data")`` (or ``Kindred("postgresql://...")``, or ``Kindred(store)``) gives
ingest, consolidate, embed, index, match, explain, recommend, risk scoring, evaluation, stats
and migration as plain method calls returning pydantic models (see :mod:`services.models`) or
Arrow tables. It never prints and keeps no global state: everything lives in the store, so one
instance can be shared by the threads of a web app for reads, and any number of instances (or
processes) can point at the same store. Long steps accept a ``progress`` callback
``(step, done, total)`` that the CLI turns into progress bars.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import vectorstore
from vectorstore import StoreError, VectorStore

from . import admin
from .admin import Progress
from .errors import EvaluationError, ServiceError
from .models import (
    GenerateResult,
    MigrationResult,
    StepResult,
    StoreStats,
    VersionRecord,
)

if TYPE_CHECKING:
    from .evaluate import EvaluationReport
    from .matching import Explanation, MatchResult, RecommendSummary

CUSTOMERS = "customers"
EVENTS = "events"
PRODUCTS = "products"


class Kindred:
    """Kindred's services over one store.

    Parameters
    ----------
    store:
        A store URI (``./dir``, ``memory://name``, ``postgresql://...``) or an open
        :class:`vectorstore.VectorStore`. A URI is opened here and closed by :meth:`close`;
        an open store is borrowed and left open.
    must_exist:
        With a URI of a local directory, refuse (``StoreMissing``) when it does not exist
        instead of creating an empty store.
    """

    def __init__(self, store: str | VectorStore, *, must_exist: bool = False) -> None:
        if isinstance(store, VectorStore):
            self._store, self._owned = store, False
        elif isinstance(store, str):
            self._store, self._owned = admin.open_store(store, must_exist=must_exist), True
        else:
            raise ServiceError(f"Kindred needs a store URI or an open VectorStore, got {store!r}")

    # ------------------------------------------------------------------ lifecycle
    @property
    def store(self) -> VectorStore:
        """The underlying store (for direct reads: scan, search, to_arrow)."""
        return self._store

    @property
    def location(self) -> str:
        """Where the store lives, with any password redacted."""
        return admin.store_uri(self._store)

    def close(self) -> None:
        if self._owned:
            self._store.close()

    def __enter__(self) -> Kindred:
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
        names = list(tables) if tables else self._store.list_tables()
        return StoreStats(
            store=self.location, backend=self._store.scheme,
            versions_supported=self._store.capabilities.versions,
            tables=[admin.table_stats(self._store, n) for n in names],
            artifacts=self._store.list_artifacts(),
        )

    def versions(self, table: str = CUSTOMERS) -> list[VersionRecord]:
        """The versions of a table, oldest first (backends that keep versions)."""
        current = self._store.version(table)
        return [VersionRecord(version=v.version, timestamp=v.timestamp,
                              current=v.version == current)
                for v in self._store.versions(table)]

    def restore(self, version: int, table: str = CUSTOMERS) -> VersionRecord:
        """Make ``version`` the current state of ``table`` (as a new version; history is kept)."""
        self._store.restore(table, version)
        return VersionRecord(version=self._store.version(table), timestamp=None, current=True)

    def optimize(self, tables: Sequence[str] | None = None,
                 progress: Progress | None = None) -> StepResult:
        """Compact storage and bring indexes up to date, table by table."""
        names = list(tables) if tables else self._store.list_tables()
        for i, name in enumerate(names):
            if progress:
                progress("optimize", i, len(names))
            self._store.optimize(name)
        if progress:
            progress("optimize", len(names), len(names))
        return StepResult(step="optimize", details={"tables": names})

    def index(self, table: str = CUSTOMERS, *, columns: Sequence[str] | None = None,
              min_rows: int = 5_000, index_type: str | None = None,
              progress: Progress | None = None) -> StepResult:
        """Build (or rebuild) ANN indexes on vector columns and a scalar index on the key.

        Vector indexes are built only once the table has ``min_rows`` rows: below that an exact
        search is fast and exact. Columns named in ``columns`` are indexed regardless.
        """
        info = self._store.table_info(table)
        n = self._store.count(table)
        wanted = list(columns) if columns else list(info.vectors)
        for c in wanted:
            info.vector(c)
        built, skipped = [], []
        steps = len(wanted) + 1
        if info.key and self._store.capabilities.scalar_index:
            self._store.create_scalar_index(table, info.key)
        if progress:
            progress(f"index {table}", 1, steps)
        for i, c in enumerate(wanted, start=2):
            if (columns or n >= min_rows) and self._store.capabilities.ann_index:
                self._store.create_vector_index(table, c, index_type=index_type)
                built.append(c)
            else:
                skipped.append(c)
            if progress:
                progress(f"index {table}", i, steps)
        return StepResult(step="index", table=table, details={
            "rows": n, "scalar": info.key, "vector_indexes": built,
            "exact_only": skipped, "min_rows": min_rows})

    def migrate(self, target: str | VectorStore, *, tables: Sequence[str] | None = None,
                replace: bool = False, progress: Progress | None = None) -> MigrationResult:
        """Copy tables (rows, vectors, metadata) and artifacts to another store or backend."""
        dst = vectorstore.connect(target) if isinstance(target, str) else target
        try:
            return admin.migrate(self._store, dst, tables=tables, replace=replace,
                                 progress=progress)
        finally:
            if isinstance(target, str):
                dst.close()

    # ------------------------------------------------------------------ data in
    @staticmethod
    def generate(out_dir: str | Path, *, customers: int = 20_000,
                 events_per_customer: float = 20, seed: int = 0) -> GenerateResult:
        """Write a deterministic synthetic bank (CSV, Parquet, JSONL, JSON files) to ``out_dir``.

        Needs no store: it is a static method so that ``Kindred.generate(...)`` works alone.
        """
        from ingest import synthetic

        if customers <= 0:
            raise ServiceError(f"the number of customers must be positive, got {customers}")
        bank = synthetic.generate(out_dir, customers, events_per_customer, seed)
        files = {k: str(getattr(bank, k)) for k in
                 ("customers", "transactions", "web_events", "products", "truth", "manifest")}
        return GenerateResult(out_dir=str(Path(bank.out_dir).resolve()), files=files,
                              customers=bank.n_customers, details={
                                  "transactions": bank.n_transactions,
                                  "web_events": bank.n_web_events,
                                  "products": bank.n_products, "anomalies": bank.n_anomalies,
                                  "seed": bank.seed})

    def load_bank(self, bank_dir: str | Path, *, replace: bool = True) -> StepResult:
        """Load a generated bank straight into customers/events/products (no mapping needed).

        The fast path for demos and tests: the generator's files are known to be clean, so this
        skips validation; use :meth:`ingest` for real data.
        """
        from ingest import synthetic

        written = synthetic.load_into_store(self._store, bank_dir, replace=replace)
        return StepResult(step="load_bank", details={"rows": written})

    # ------------------------------------------------------------------ product matching
    def match(self, product: str, *, method: str = "centroid", vector_column: str | None = None,
              top: int | None = None, audience_pct: float | None = None,
              min_score: float | None = None, where: str | None = None, exact: bool = False,
              columns: Sequence[str] = (), min_consumers: int = 20) -> MatchResult:
        """Consumers (holders, most typical first) and prospects (most likely first) of a product.

        ``where`` is a filter expression over customer columns, e.g.
        ``"age >= 30 and region in ('north', 'south')"``. Returns
        :class:`services.matching.MatchResult`: two Arrow tables (``customer_id, score, rank`` +
        ``columns``) and a summary (method, sizes, options); ``.to_dict()`` is JSON-ready.
        """
        from .matching import match

        self._require_table(CUSTOMERS, "ingest customers first")
        return match(self._store, product, method=method, vector_column=vector_column,
                     top_k=top, audience_pct=audience_pct, min_score=min_score, filter=where,
                     exact=exact, columns=columns, min_consumers=min_consumers)

    def explain(self, customer_id: str, product: str, *, vector_column: str | None = None,
                k: int = 5) -> Explanation:
        """Why ``customer_id`` is near ``product``: its nearest consumers and what they share."""
        from .matching import explain

        self._require_table(CUSTOMERS, "ingest customers first")
        return explain(self._store, customer_id, product, vector_column=vector_column, k=k)

    def recommend(self, *, top_n: int = 3, vector_column: str | None = None,
                  exclude_held: bool = True) -> RecommendSummary:
        """Score every customer for every product; write ``rec_products``/``rec_scores``."""
        from .matching import recommend

        self._require_table(PRODUCTS, "ingest products first")
        return recommend(self._store, vector_column=vector_column, top_n=top_n,
                         exclude_held=exclude_held)

    def evaluate_matching(self, product: str | None = None, *, label: str | None = None,
                          positive: Any = None, vector_columns: Sequence[str] | None = None,
                          methods: Sequence[str] = ("centroid", "learned"),
                          holdout: float = 0.2, seed: int = 0) -> EvaluationReport:
        """Measured matching quality: a holdout of ``product``'s holders, or a ``label`` column.

        Returns an :class:`services.evaluate.EvaluationReport`: ROC-AUC, precision@k,
        recall@k and lift@k per vector column and method, with random and popularity baselines.
        """
        from .evaluate import evaluate_holdout, evaluate_labels

        self._require_table(CUSTOMERS, "ingest customers first")
        if (product is None) == (label is None):
            raise EvaluationError("evaluate matching needs exactly one of a product (holdout) "
                                  "or a label column")
        if label is not None:
            return evaluate_labels(self._store, label, positive=positive,
                                   vector_columns=vector_columns, methods=methods, seed=seed)
        return evaluate_holdout(self._store, product, vector_columns=vector_columns,
                                methods=methods, holdout=holdout, seed=seed)

    # ------------------------------------------------------------------ helpers
    def _require_table(self, name: str, hint: str) -> None:
        if not self._store.has_table(name):
            raise ServiceError(f"the store at {self.location} has no {name!r} table: {hint}")


def _missing(feature: str, module: str) -> ServiceError:
    return ServiceError(f"{feature} is not available: the {module} module is not installed "
                        "in this version of Kindred")


__all__ = ["Kindred", "StoreError"]
