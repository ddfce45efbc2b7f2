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

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

import vectorstore
from ingest.errors import SourceError
from vectorstore import StoreError, VectorStore

from . import admin
from .admin import Progress
from .errors import EvaluationError, ServiceError
from .models import (
    GenerateResult,
    IngestResult,
    MigrationResult,
    ReportResult,
    RiskEvaluation,
    StepResult,
    StoreStats,
    VersionRecord,
)

if TYPE_CHECKING:
    from .matching import Explanation, MatchResult, ProductQuery, RecommendSummary
    from .matching.evaluate import EvaluationReport
    from .risk import RiskExplanation, RiskRun

PREFERRED_VECTORS = ("vec_combined", "vec_tabular", "vec_behavior", "vec_text")
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
    runner:
        Where the heavy steps (ingest, consolidate, embed, index, risk scoring, recommend)
        run: ``"local"`` (in this process), ``"ray"`` (one Ray task per partition, see
        docs/scale.md), a :class:`ingest.runner.Runner`, or None for ``KINDRED_RUNNER``
        (default local). ``ray_address`` (or ``KINDRED_RAY_ADDRESS``) is the Ray cluster to
        join; Ray is started before the store is opened.
    """

    def __init__(self, store: str | VectorStore, *, must_exist: bool = False,
                 runner: Any = None, ray_address: str | None = None) -> None:
        from ingest.runner import get_runner

        self._runner = get_runner(runner, address=ray_address)
        if self._runner.distributed:
            # Ray starts before LanceDB opens (its fork warning otherwise)
            self._runner.start()
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
        info = self._store.table_info(table)
        n = self._store.count(table)
        wanted = list(columns) if columns else list(info.vectors)
        for c in wanted:
            info.vector(c)
        built, skipped = [], []
        steps = len(wanted) + 1
        scores = [c for c in info.schema.names if c.startswith("propensity_")]
        from ingest.runner.indexes import create_scalar_index, create_vector_index

        if info.key and self._store.capabilities.scalar_index:
            create_scalar_index(self._store, table, info.key, runner=self._runner)
            for c in scores:  # match --method propensity filters on them
                create_scalar_index(self._store, table, c, runner=self._runner)
        if progress:
            progress(f"index {table}", 1, steps)
        for i, c in enumerate(wanted, start=2):
            if (columns or n >= min_rows) and self._store.capabilities.ann_index:
                create_vector_index(self._store, table, c, index_type=index_type,
                                    runner=self._runner)
                built.append(c)
            else:
                skipped.append(c)
            if progress:
                progress(f"index {table}", i, steps)
        return StepResult(step="index", table=table, details={
            "rows": n, "scalar": info.key, "score_indexes": scores, "vector_indexes": built,
            "exact_only": skipped, "min_rows": min_rows})

    def migrate(self, target: str | VectorStore, *, tables: Sequence[str] | None = None,
                replace: bool = False, progress: Progress | None = None,
                on_replace: Callable[[dict[str, int]], None] | None = None) -> MigrationResult:
        """Copy tables (rows, vectors, metadata) and artifacts to another store or backend.

        A target that is this store (however its location is spelled) is refused; with
        ``replace``, ``on_replace`` hears which target tables (and rows) will be dropped
        before any is."""
        dst = vectorstore.connect(target) if isinstance(target, str) else target
        try:
            return admin.migrate(self._store, dst, tables=tables, replace=replace,
                                 progress=progress, on_replace=on_replace)
        finally:
            if isinstance(target, str):
                dst.close()

    # ------------------------------------------------------------------ data in
    @staticmethod
    def generate(out_dir: str | Path, *, customers: int | None = None,
                 events_per_customer: float | None = None, seed: int | None = None,
                 day: int = 1) -> GenerateResult:
        """Write a deterministic synthetic bank (CSV, Parquet, JSONL, JSON files) to ``out_dir``.

        ``day=2`` (or later) writes the next day's files of the bank already in ``out_dir`` to
        ``out_dir/day2``: new and changed customers, and that day's transactions and web
        events (:mod:`synthetic_bank.days`); its size and seed come from the bank.
        Needs no store: it is a static method so that ``Kindred.generate(...)`` works alone.
        """
        import synthetic_bank as synthetic

        if day != 1:
            return _generate_day(out_dir, day, customers, events_per_customer, seed)
        customers = 20_000 if customers is None else customers
        events_per_customer = 20 if events_per_customer is None else events_per_customer
        seed = 0 if seed is None else seed
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
        import synthetic_bank as synthetic

        written = synthetic.load_into_store(self._store, bank_dir, replace=replace)
        return StepResult(step="load_bank", details={"rows": written})

    def ingest(self, source: Any = None, *, table: str | None = None,
               mapping: str | Path | dict[str, Any] | None = None, on_error: str = "fail",
               id_column: str | None = None, generate_id: bool | None = None,
               holdings: Sequence[str] = (), holdings_column: str | None = None,
               holdings_separator: str = "|", holdings_from_events: Sequence[str] = (),
               text_columns: Sequence[str] = (), attributes: Sequence[str] | None = None,
               rename: Sequence[str] = (), types: Sequence[str] = (),
               timestamp_formats: Sequence[str] = (), drop: Sequence[str] = (),
               kind: str | None = None, delimiter: str | None = None,
               keep_flag_columns: bool = False, strict_names: bool = False,
               dedupe: bool = False, progress: Progress | None = None) -> IngestResult:
        """Load one source into customers, events or products, validated, in one commit.

        Either ``mapping`` (a TOML file or dict; ``source`` then overrides its path) or
        ``table`` plus options that say the same things: ``holdings=["term_deposit=y:yes"]``
        (PRODUCT=COLUMN[:VALUE|VALUE]), ``holdings_column`` (a list column or text split on
        ``holdings_separator``), ``rename=["old=new"]``, ``types=["age=int64"]``,
        ``timestamp_formats=["ts=%Y-%m-%d"]``. Without an id column, customers get a stable id
        hashed from each row (``generate_id`` None: automatic when the source has no
        ``customer_id`` column, after renames). A ``.json`` file holding an array of objects is
        read as rows. ``on_error``: fail (nothing written), skip, or quarantine
        (``<table>_rejects``).

        Column names as the file has them are made safe (``ZIP Code`` -> ``ZIP_Code``, see
        :mod:`ingest.names`; ``strict_names`` refuses them instead, listing them all), and every
        option that names a column takes the source or the table name. ``keep_flag_columns``
        keeps ``holdings`` flag columns as attributes too (e.g. to use one as a label).
        ``dedupe``: identical rows count once (sources that replay rows); by default repeated
        identical events are kept, each with its own id (:mod:`ingest.identity`).
        """
        from ingest.mapping import Mapping
        from ingest.pipeline import ingest

        rows_read = _for_step(progress, "ingest")
        if mapping is not None:
            if table is not None or id_column or holdings or text_columns:
                raise ServiceError("give either a mapping file or table options, not both")
            m = Mapping.from_dict(mapping) if isinstance(mapping, dict) else \
                Mapping.load(mapping)
            m = m.model_copy(update={  # the switches may also be given beside a mapping
                "strict_names": m.strict_names or strict_names,
                "dedupe": m.dedupe or dedupe,
                "holdings": m.holdings.model_copy(update={
                    "keep_flag_columns": m.holdings.keep_flag_columns or keep_flag_columns})})
            src = _json_array(source) if source is not None else None
            r = ingest(self._store, src, m, on_error=on_error,  # type: ignore[arg-type]
                       progress=rows_read)
            return IngestResult(**_plain(r))
        if table is None or source is None:
            raise ServiceError("ingest needs a table and a source (or a mapping file)")
        src = _json_array(source)
        opts = {"kind": kind, "delimiter": delimiter}
        m = Mapping.from_options(
            table, id_column=id_column, generate_id=bool(generate_id), rename=rename,
            types=types, timestamp_formats=timestamp_formats, attributes=attributes,
            text_columns=text_columns, drop=drop, holdings=holdings,
            holdings_column=holdings_column, holdings_separator=holdings_separator,
            holdings_from_events=holdings_from_events, keep_flag_columns=keep_flag_columns,
            strict_names=strict_names, dedupe=dedupe,
            source={k: v for k, v in opts.items() if v is not None} or None)
        if generate_id is None and not id_column and table != "events" and KEYS[table] not in {
                m.resolve(c) for c in _source_columns(src, opts)}:
            m = m.model_copy(update={"generate_id": True})
        r = ingest(self._store, src, m, on_error=on_error,  # type: ignore[arg-type]
                   progress=rows_read)
        return IngestResult(**_plain(r))

    def consolidate(self, *, full: bool = False, customer_ids: Sequence[str] | None = None,
                    amount: str | None = None, categories: Sequence[str] | None = None,
                    channels: Sequence[str] | None = None,
                    max_values: int | None = None) -> StepResult:
        """Events -> per-customer features (recency, frequency, monetary, spend per category,
        counts per channel, holdings from purchases). Incremental: only customers with new
        events, unless ``full``.

        Only a customer id and a timestamp are required of the events: ``amount``,
        ``categories`` and ``channels`` name the columns to use (source or table names; by
        default what the previous run was told, else ``amount``, ``category`` and
        ``channel`` when present), and features of an absent column are skipped (``notes``
        in the details say which). Without amounts, categories are counted. Customers first
        seen in events are created (the customers table too, when there is none yet).
        ``max_values`` caps the columns per category or channel column (default 200).
        """
        from ingest.consolidate import ConsolidationConfig, consolidate
        from ingest.names import resolve_column, resolve_columns

        self._require_table(EVENTS, "ingest events first")
        info = self._store.table_info(EVENTS)
        cols = info.schema.names
        cfg = ConsolidationConfig(
            amount=resolve_column(cols, info.metadata, amount) if amount else None,
            categories=resolve_columns(cols, info.metadata, categories),
            channels=resolve_columns(cols, info.metadata, channels),
            max_values=max_values)
        r = consolidate(self._store, full=full, customer_ids=customer_ids, config=cfg,
                        runner=self._runner)
        return StepResult(step="consolidate", table=CUSTOMERS, details=_plain(r))

    def refresh(self, *, refit: bool = False, progress: Progress | None = None) -> Any:
        """Bring every derived column up to date after new data landed, in dependency order
        and only for what changed: consolidation, every recorded embedder (with its stored
        fitted state; ``refit`` re-fits), the ANN indexes of written columns, risk scores
        with the persisted model, propensity scores, recommendations. Returns a
        :class:`services.refresh.RefreshResult` (per step: done or skipped, and why). Safe to
        run twice: a run with nothing to do writes nothing."""
        from .refresh import refresh

        self._require_table(CUSTOMERS, "ingest customers first")
        return refresh(self._store, refit=refit, progress=progress, runner=self._runner)

    # ------------------------------------------------------------------ embeddings
    def embed(self, kind: str, *, table: str = CUSTOMERS, include: Sequence[str] | None = None,
              exclude: Sequence[str] = (), column: str | None = None,
              template: str | None = None, model: str | None = None,
              output: str | None = None, dim: int | None = None,
              sources: Sequence[str] = (), weights: Sequence[float] | None = None,
              backend: str = "torch", raw: bool = True,
              types: Sequence[str] | dict[str, str] = (),
              progress: Progress | None = None) -> StepResult:
        """Write a vector column: ``tabular``, ``text``, ``behavior`` or ``combined``.

        - tabular: numeric columns standardised, categoricals one-hot (``include``/``exclude``
          select columns; ``dim`` adds a PCA; ``types=["branch=category"]`` reads a column as
          a category or a number, see :mod:`ingest.column_kinds`), unit length for matching;
          with ``raw`` (the default) also ``<output>_raw``: z-scored, unclipped, not
          normalised (metric l2), the column risk scoring uses because it keeps each
          customer's distance from the centre.
        - text: sentence-transformers over a text ``column`` or a profile ``template``
          (``model``: a local path; default the packaged all-MiniLM-L6-v2; ``backend``
          ``onnx`` runs it int8-quantised through ONNX Runtime, ~3x faster on CPU, vectors
          close to but not equal to PyTorch's).
        - behavior: SVD of holdings + events, customers and products in one space (``dim``).
        - combined: weighted concatenation of the ``sources`` vector columns.

        ``output`` names the vector column (default ``vec_<kind>``). Returns a StepResult whose
        details hold the rows embedded/skipped, dimension, seconds and state checksum.
        """
        from ingest import embedders

        self._require_table(table, "ingest it first")
        include, exclude = self._named(table, include), self._named(table, exclude) or ()
        column = self._named_one(table, column) if column else column
        step = f"embed {kind}"
        rows_done = _for_step(progress, step)
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ServiceError(f"dim must be a positive integer, got {dim!r}")
        if kind == "tabular":
            from ingest.column_kinds import parse_kinds
            from ingest.embedders.tabular import embed_tabular

            try:
                kinds = parse_kinds(types)
            except ValueError as exc:
                raise ServiceError(str(exc)) from None
            r, companion = embed_tabular(self._store, table,
                                         include=list(include) if include else None,
                                         exclude=list(exclude), pca=dim, column=output,
                                         raw=raw, types=kinds, progress=rows_done,
                                         runner=self._runner)
            if companion is not None:
                return StepResult(step=f"embed {kind}", table=table, details={
                    **_plain(r), "raw_column": companion.column,
                    "message": f"{r.message}; {companion.message} (magnitude-preserving, "
                               "for risk scoring)"})
        elif kind == "text":
            if (column is None) == (template is None):
                raise ServiceError("text embedding needs exactly one of a text column "
                                   "(--column) or a profile template (--template)")
            emb = embedders.TextEmbedder(column=column, template=template, model=model,
                                         backend=backend)
            r = embedders.embed(self._store, table, emb, output, progress=rows_done,
                                runner=self._runner)
        elif kind == "behavior":
            from ingest.embedders.behavior import BehaviorEmbedder, embed_behavior

            emb = _exact_dim(BehaviorEmbedder, dim, "items")(**({"dim": dim} if dim else {}))
            r = embed_behavior(self._store, emb, customers=table,
                               products=PRODUCTS if self._store.has_table(PRODUCTS) else None,
                               column=output or "vec_behavior", progress=rows_done,
                               runner=self._runner)
        elif kind == "combined":
            from ingest.embedders.combined import embed_combined

            if not sources:
                raise ServiceError("combined embedding needs the source vector columns "
                                   "(--source vec_tabular --source vec_text ...)")
            if weights is not None and len(weights) != len(sources):
                raise ServiceError(f"give one weight per source column: {len(sources)} "
                                   f"sources, {len(weights)} weights")
            w = dict(zip(sources, weights or [1.0] * len(sources), strict=True))
            r = embed_combined(self._store, table, w, column=output or "vec_combined",
                               progress=rows_done, runner=self._runner)
        else:
            raise ServiceError(f"unknown embedding kind {kind!r}; expected tabular, text, "
                               "behavior or combined")
        return StepResult(step=f"embed {kind}", table=table, details={
            **_plain(r), "message": getattr(r, "message", "")})

    # ------------------------------------------------------------------ product matching
    def match(self, product: str, *, method: str = "centroid", vector_column: str | None = None,
              top: int | None = None, audience_pct: float | None = None,
              min_score: float | None = None, where: str | None = None, exact: bool = False,
              columns: Sequence[str] = (), min_consumers: int = 20,
              query: ProductQuery | None = None, consumers: bool = True,
              prospects: bool = True, bands: Sequence[float] | None = None,
              propensity_options: dict[str, Any] | None = None) -> MatchResult:
        """Consumers (holders, most typical first) and prospects (most likely first) of a product.

        ``where`` is a filter expression over customer columns, e.g.
        ``"age >= 30 and region in ('north', 'south')"``. Returns
        :class:`services.matching.MatchResult`: two Arrow tables (``customer_id, score, rank`` +
        ``columns``) and a summary (method, sizes, options); ``.to_dict()`` is JSON-ready.
        ``query`` reuses a query from :meth:`product_query` (no refit). ``consumers=False``
        or ``prospects=False`` leaves that list out (one search). ``bands``: two descending
        score thresholds for the high/medium/low bands (default: edges from the whole base,
        see :mod:`services.matching.bands`). ``method="propensity"`` serves the probabilities
        :meth:`fit` wrote (else fits in memory); the summary then has the audience's expected
        conversions and lift. ``match`` never writes to the store.
        """
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

    def fit(self, products: Sequence[str], *, method: str = "propensity",
            vector_column: str | None = None, exclude: Sequence[str] = (),
            types: Sequence[str] | dict[str, str] = (), seed: int = 0,
            propensity_options: dict[str, Any] | None = None,
            progress: Progress | None = None) -> StepResult:
        """Fit and persist each product's model, so :meth:`match` serves it without refitting.

        ``propensity``: a gradient-boosted model of the attributes (``exclude`` leaves columns
        out, ``types=["branch=category"]`` declares kinds), saved verified, and every
        customer's probability written to ``propensity_<product>`` with a scalar index;
        ``learned``: the logistic query on ``vector_column``, saved for reuse while the table
        is unchanged. Returns per product what was fitted (model id, cross-validated ROC-AUC,
        leakage warnings).
        """
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

    def product_query(self, product: str, *, method: str = "centroid",
                      vector_column: str | None = None, min_consumers: int = 20,
                      **learned_options: Any) -> ProductQuery:
        """The fitted query of a product (centroid, learned model or product vector), to reuse
        across several :meth:`match` calls without refitting."""
        from .matching import build_query

        vector_column = vector_column or self.default_vector_column()
        return build_query(self._store, product, method, vector_column=vector_column,
                           min_consumers=min_consumers, **learned_options)

    def explain(self, customer_id: str, product: str, *, vector_column: str | None = None,
                k: int = 5) -> Explanation:
        """Why ``customer_id`` is near ``product``: its nearest consumers and what they share."""
        from .matching import explain

        self._require_table(CUSTOMERS, "ingest customers first")
        vector_column = vector_column or self.default_vector_column()
        _check_fresh(self._store, CUSTOMERS, vector_column)
        return explain(self._store, customer_id, product, vector_column=vector_column, k=k)

    def recommend(self, *, top_n: int = 3, vector_column: str | None = None,
                  exclude_held: bool = True, method: str | None = None,
                  only_products: bool = True,
                  progress: Progress | None = None) -> RecommendSummary | StepResult:
        """Every customer's top ``top_n``, written to ``rec_products``/``rec_scores``.

        ``method="behavior"`` (the default when there is an events table and no
        ``vector_column``): the behaviour
        recommender of :mod:`services.matching.behaviour` (own history for repeatable items, a
        behaviour profile that falls back to popularity, implicit ALS factors), fitted on all
        events and saved; held one-time products are never recommended again, and only
        products-table items are written when ``only_products``. ``method="vector"``: customer
        . product in a shared ``vector_column`` (e.g. ``vec_behavior``).
        """
        from .matching import recommend
        from .matching.rec_write import recommend_behaviour

        if method is None:  # a shared vector column means customer . product
            method = "vector" if vector_column or not self._store.has_table(EVENTS) \
                else "behavior"
        rows_done = _for_step(progress, "recommend")
        if method == "behavior":
            self._require_table(EVENTS, "ingest events first")
            d = recommend_behaviour(self._store, top_n=top_n, only_products=only_products,
                                    progress=rows_done, runner=self._runner)
            return StepResult(step="recommend", table=CUSTOMERS, details=d)
        if method != "vector":
            raise ServiceError(f"recommend: method must be behavior or vector, got {method!r}")
        self._require_table(PRODUCTS, "ingest products first")
        _check_fresh(self._store, CUSTOMERS, vector_column)
        return recommend(self._store, vector_column=vector_column, top_n=top_n,
                         exclude_held=exclude_held, progress=rows_done, runner=self._runner)

    def recommendations(self, customer_id: str, *, top_n: int = 10,
                        only_products: bool = True) -> dict[str, Any]:
        """One customer's behaviour recommendations with the reasons for each: from the
        recommender :meth:`recommend` saved (fitted on the fly, not saved, when there is none).
        """
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
        attrs = self._store.to_arrow(CUSTOMERS, columns=rec.attribute_columns, filter=Cmp(
            "customer_id", "=", customer_id)) if rec.attribute_columns else None
        items = explain_one(rec, counts, days, active, top_n, exclude, attrs)
        return {"customer_id": customer_id, "active_days": int(active[0]),
                "holdings": held or [], "source": source, "recommendations": items}

    def evaluate_recommendations(self, *, k: int = 10, seed: int = 0) -> Any:
        """Next-basket evaluation (each customer's last day of events hidden): hit@k,
        recall@k, NDCG@k of Kindred against popularity, popularity without history and raw
        implicit ALS, in one run (:mod:`services.matching.evaluate_recs`)."""
        from .matching.evaluate_recs import evaluate_next_basket

        self._require_table(EVENTS, "ingest events first")
        return evaluate_next_basket(self._store, k=k, seed=seed)

    def evaluate_matching(self, product: str | None = None, *, label: str | None = None,
                          positive: Any = None, vector_columns: Sequence[str] | None = None,
                          methods: Sequence[str] = ("centroid", "learned", "propensity"),
                          holdout: float = 0.2, seed: int = 0, repeats: int = 3,
                          split_column: str | None = None, test_value: Any = "test",
                          test_size: float = 0.3, exclude: Sequence[str] = (),
                          learned_options: dict[str, Any] | None = None,
                          propensity_options: dict[str, Any] | None = None,
                          progress: Progress | None = None) -> EvaluationReport:
        """Measured matching quality: repeated holdouts of ``product``'s holders, or a
        ``label`` column (test rows: ``split_column == test_value``, else ``repeats`` seeded
        stratified ``test_size`` splits).

        Returns an :class:`services.matching.evaluate.EvaluationReport`: ROC-AUC (mean, SD, interval),
        precision@k, recall@k and lift@k per vector column and method, with random and
        popularity baselines, leakage warnings and the predictability verdict.
        ``learned_options`` go to the learned model (e.g. ``{"Cs": [10.0]}``),
        ``propensity_options`` (and ``exclude``, attribute columns left out) to the
        propensity model.
        """
        lo = dict(learned_options or {})
        po = {**(propensity_options or {}), **({"exclude": list(exclude)} if exclude else {})}
        from .matching.evaluate import evaluate_holdout, evaluate_labels

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
        assert product is not None  # exactly one of product and label (checked above)
        return evaluate_holdout(self._store, product, vector_columns=vector_columns,
                                methods=methods, holdout=holdout, seed=seed, repeats=repeats,
                                progress=rows_done, propensity_options=po, **lo)

    # ------------------------------------------------------------------ risk
    def score_risk(self, *, detector: str | None = None, column: str | None = None,
                   attributes: Sequence[str] | None = None,
                   fit_sample: int | float | None = None, threshold: float | None = None,
                   seed: int = 0, table: str = CUSTOMERS,
                   progress: Progress | None = None) -> RiskRun:
        """Fit a PyOD detector (``iforest``, ``ecod``, ``hbos``, ... or the default ensemble) on
        a vector column or numeric attributes, persist it, and write back ``risk_score``,
        ``risk_rank``, ``risk_flag`` and ``risk_model`` for every row.

        Without ``column`` or ``attributes`` the detector scores the column that keeps
        magnitudes (``vec_tabular_raw`` from ``embed("tabular")``: anomaly detectors need each
        customer's distance from the centre, which unit-length columns discard); the run's
        ``column`` and first message say which and why. ``risk_score`` is a robust z-score of
        the detector's score against the fitted customers' (0 = the median customer, 3 =
        three robust standard deviations more unusual) and ``risk_flag`` is
        ``risk_score > threshold``."""
        from .risk import score_table

        _finite(threshold=threshold, fit_sample=fit_sample)
        self._require_table(table, "ingest it first")
        attributes = self._named(table, attributes)
        rows_done = _for_step(progress, "risk score")
        _check_fresh(self._store, table, column)
        return score_table(self._store, table, detector, column=column,
                           attributes=list(attributes) if attributes else None,
                           fit_sample=fit_sample, seed=seed, threshold=threshold,
                           progress=rows_done, runner=self._runner)

    def risk_top(self, n: int = 20, *, columns: Sequence[str] | None = None,
                 flagged_only: bool = False, table: str = CUSTOMERS) -> pa.Table:
        """The ``n`` most anomalous customers, most anomalous first (an Arrow table)."""
        from .risk import top

        self._require_table(table, "ingest it first")
        columns = self._named(table, columns)
        _check_fresh(self._store, table, "risk_score", "risk")
        return top(self._store, table, n, columns=list(columns) if columns else None,
                   flagged_only=flagged_only, runner=self._runner)

    def explain_risk(self, customer_id: str, *, table: str = CUSTOMERS) -> RiskExplanation:
        """Why a customer scores as it does: deviating attributes, nearest normal neighbours,
        and its score percentile."""
        from .risk import explain

        self._require_table(table, "ingest it first")
        return explain(self._store, table, customer_id)

    def evaluate_risk(self, label: str, *, positive: Any = None,
                      detectors: Sequence[Any] = ("iforest", "hbos", "ecod", "default"),
                      column: str | None = None, fit_sample: int | float | None = None,
                      seed: int = 0, table: str = CUSTOMERS) -> RiskEvaluation:
        """ROC-AUC, average precision and precision@n of each detector against ``label``
        (``label == positive`` marks a known anomaly, e.g. ``positive="bad"``; a bool or 0/1
        label needs none), on the column :meth:`score_risk` would use."""
        from .risk import evaluate
        from .risk.features import resolve_source

        self._require_table(table, "ingest it first")
        label = self._named_one(table, label)
        column = resolve_source(self._store.table_info(table), column).column
        rows = evaluate(self._store, table, label, list(detectors), positive=positive,
                        column=column, fit_sample=fit_sample, seed=seed)
        return RiskEvaluation(label=label, positive=positive, column=column, rows=rows)

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

    def report_products(self, n: int = 3, *, min_holders: int = 50) -> list[str]:
        """The products a report plots by default: those with a fitted propensity model
        (:meth:`fit`), else the ``n`` least-held products with at least ``min_holders``
        holders (the hardest to target, and the ones a campaign is usually about)."""
        fitted = list(self._store.table_info(CUSTOMERS).metadata.get("propensity") or {})
        if fitted:
            return fitted[:n]
        counts = self.product_counts()
        ranked = sorted((p for p in counts if counts[p] >= min_holders),
                        key=lambda p: (counts[p], p))
        return ranked[:n]

    def product_counts(self) -> dict[str, int]:
        """Holders per product (products table rows, else every product held)."""
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

    def popular_products(self, n: int = 3, *, min_holders: int = 20) -> list[str]:
        """The ``n`` products with most holders (at least ``min_holders``), most held first."""
        counts = self.product_counts()
        ranked = sorted((p for p in counts if counts[p] >= min_holders),
                        key=lambda p: -counts[p])
        return ranked[:n]

    # ------------------------------------------------------------------ helpers
    def default_vector_column(self, table: str = CUSTOMERS) -> str | None:
        """The vector column used when a call names none: the only one, else the first of
        vec_combined, vec_tabular, vec_behavior, vec_text that exists (None if no vectors)."""
        vectors = self._store.table_info(table).vectors
        if len(vectors) <= 1:
            return next(iter(vectors), None)
        for name in PREFERRED_VECTORS:
            if name in vectors:
                return name
        return None

    def _named(self, table: str, names: Sequence[str] | None) -> list[str] | None:
        """Column names as the user gave them (source names too, e.g. ``ZIP Code``) -> the
        table's columns (:func:`ingest.names.resolve_column`); unknown names pass through
        for the step's own error."""
        from ingest.names import resolve_columns

        if not names or not self._store.has_table(table):
            return list(names) if names is not None else None
        info = self._store.table_info(table)
        return resolve_columns(info.schema.names, info.metadata, list(names))

    def _named_one(self, table: str, name: str) -> str:
        return (self._named(table, [name]) or [name])[0]

    def _require_table(self, name: str, hint: str) -> None:
        if not self._store.has_table(name):
            raise ServiceError(f"the store at {self.location} has no {name!r} table: {hint}")


def _check_fresh(store: VectorStore, table: str, column: str | None,
                 output: str | None = None) -> None:
    """One warning line when the derived column a command reads has stale or empty rows."""
    from ingest.freshness import check_fresh

    check_fresh(store, table, column, output)


def _finite(**values: Any) -> None:
    """ServiceError naming the first option that is NaN or infinite (never silently used)."""
    import math

    for name, v in values.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ServiceError(f"{name} must be a finite number, got {v!r}")


def _exact_dim(cls: Any, dim: int | None, unit: str) -> Any:
    """``cls``, or a subclass whose ``fit`` refuses (before anything is written) to give
    fewer dimensions than ``dim`` asked for: PCA and SVD cannot make more dimensions than the
    data has, and silently writing 64 when 100,000 were asked is a wrong answer."""
    if dim is None:
        return cls

    class Exact(cls):
        def fit(self, *args: Any, **kwargs: Any) -> Any:
            out = super().fit(*args, **kwargs)
            if self.dim_ < dim:
                raise ServiceError(
                    f"--dim {dim} is more than this data allows: the {cls.kind} embedder "
                    f"can make at most {self.dim_} dimensions here (from its {unit}); "
                    f"give --dim {self.dim_} or less")
            return out

    Exact.__name__ = Exact.__qualname__ = cls.__name__
    return Exact


def _for_step(progress: Progress | None, step: str) -> Any:
    """The ``(done, total)`` callback the lower layers take, reporting as ``step``."""
    if progress is None:
        return None
    return lambda done, total: progress(step, done, total)


def _plain(obj: Any) -> dict[str, Any]:
    """A dataclass or pydantic result as a JSON-friendly dict."""
    import dataclasses
    import json

    if isinstance(obj, BaseModel):
        d = obj.model_dump(mode="json")
    elif dataclasses.is_dataclass(obj):
        d = dataclasses.asdict(cast(Any, obj))  # an instance: results are never classes
    else:
        d = dict(vars(obj))
    return json.loads(json.dumps(d, default=str))


KEYS = {"customers": "customer_id", "events": "event_id", "products": "product_id"}


def _json_array(source: Any) -> Any:
    """A ``.json`` file holding one array of objects, as an Arrow table; anything else (JSON
    Lines included) is returned as is for the source adapters."""
    if not (isinstance(source, str | Path) and str(source).lower().endswith(".json")):
        return source
    import json

    path = Path(source)
    try:
        with path.open("rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except FileNotFoundError as exc:
        raise SourceError(f"{path}: no such file") from exc
    if not head.startswith(b"["):
        return source
    try:
        rows = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path}: not valid JSON: {exc}") from exc
    if not all(isinstance(r, dict) for r in rows):
        raise SourceError(f"{path}: expected a JSON array of objects")
    return pa.Table.from_pylist(rows)


def _generate_day(out_dir: str | Path, day: int, customers: int | None,
                  events_per_customer: float | None, seed: int | None) -> GenerateResult:
    """A later day of the bank in ``out_dir``; size options must agree with the bank's."""
    import synthetic_bank as synthetic
    from ingest.errors import IngestError
    from synthetic_bank import days as synthetic_days

    if day < 1:
        raise ServiceError(f"day must be 1 or later, got {day}")
    try:
        bank = synthetic.GeneratedBank.open(out_dir)
    except IngestError:
        raise ServiceError(f"{out_dir} holds no generated bank: write day 1 first "
                           f"(kindred generate --out {out_dir})") from None
    given = {"customers": (customers, bank.n_customers), "seed": (seed, bank.seed),
             "events per customer": (events_per_customer, bank.events_per_customer)}
    for what, (mine, theirs) in given.items():
        if mine is not None and mine != theirs:
            raise ServiceError(f"the bank in {out_dir} was generated with {what} {theirs}, "
                               f"not {mine}: leave the option out for day {day}")
    r = synthetic_days.generate_day(out_dir, day)
    files = {k: str(getattr(r, k)) for k in synthetic_days.FILES}
    return GenerateResult(out_dir=str(r.out_dir.resolve()), files=files,
                          customers=r.n_new_customers + r.n_changed_customers, details={
                              "day": day, "new_customers": r.n_new_customers,
                              "changed_customers": r.n_changed_customers,
                              "transactions": r.n_transactions,
                              "web_events": r.n_web_events, "anomalies": r.n_anomalies,
                              "seed": r.seed})


def _source_columns(source: Any, opts: dict[str, Any]) -> list[str]:
    """Column names of a source, from its first batch (a cheap peek)."""
    if isinstance(source, pa.Table):
        return source.column_names
    from ingest.sources import open_source

    src = open_source(source, **{k: v for k, v in opts.items() if v is not None})
    first = next(src.batches(1_000), None)
    return first.schema.names if first is not None else []


def _missing(feature: str, module: str) -> ServiceError:
    return ServiceError(f"{feature} is not available: the {module} module is not installed "
                        "in this version of Kindred")


__all__ = ["Kindred", "StoreError"]
