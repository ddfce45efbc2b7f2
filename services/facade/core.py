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

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ingest.datamodel import CUSTOMERS
from vectorstore import StoreError, VectorStore

from ..admin import Progress
from ..errors import ServiceError
from ..models import (
    CustomerRecommendations,
    GenerateResult,
    IngestResult,
    RiskEvaluation,
    StepResult,
)
from . import _compat, data_in, embedding, matching, risk
from ._common import PREFERRED_VECTORS, open_uri, require_table
from .base import StoreFace

if TYPE_CHECKING:
    from ..matching import Explanation, MatchResult, ProductQuery, RecommendSummary
    from ..matching.evaluate import EvaluationReport
    from ..matching.evaluate_recs import RecommendationEvaluation
    from ..refresh import RefreshResult
    from ..risk import RiskExplanation, RiskRun



class Kindred(StoreFace):
    """Kindred's services over one store.

    Parameters
    ----------
    store:
        A store URI (``./dir``, ``memory://name``, ``postgresql://...``) or an open
        :class:`vectorstore.VectorStore`. A URI is opened here and closed by :meth:`close`;
        an open store is borrowed and left open.
    create:
        False (the default): the URI must hold a store already; a local path that holds none
        (missing, or a directory without LanceDB tables) raises ``StoreMissing`` instead of
        making a store where a typo points. True makes an empty store there. (``must_exist``,
        its old inverse, is accepted for one release with a DeprecationWarning.)
    runner:
        Where the heavy steps (ingest, consolidate, embed, index, risk scoring, recommend)
        run: ``"local"`` (in this process), ``"ray"`` (one Ray task per partition, see
        docs/scale.md), a :class:`ingest.runner.Runner`, or None for ``KINDRED_RUNNER``
        (default local). ``ray_address`` (or ``KINDRED_RAY_ADDRESS``) is the Ray cluster to
        join; Ray is started before the store is opened.
    """

    def __init__(self, store: str | VectorStore, *, create: bool = False,
                 runner: Any = None, ray_address: str | None = None,
                 must_exist: bool | None = None) -> None:
        from ingest.runner import get_runner

        if must_exist is not None:
            create = _compat.renamed("__init__", {"must_exist": not must_exist}, "must_exist",
                                     "create", create, False)

        self._runner = get_runner(runner, address=ray_address)
        if self._runner.distributed:
            # Ray starts before LanceDB opens (its fork warning otherwise)
            self._runner.start()
        if isinstance(store, VectorStore):
            self._store, self._owned = store, False
        elif isinstance(store, str):
            self._store, self._owned = open_uri(store, create=create), True
        else:
            raise ServiceError(f"Kindred needs a store URI or an open VectorStore, got {store!r}")

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
        return data_in.generate(out_dir, customers=customers,
                                events_per_customer=events_per_customer, seed=seed, day=day)

    def load_bank(self, bank_dir: str | Path, *, replace: bool = True) -> StepResult:
        """Load a generated bank straight into customers/events/products (no mapping needed).

        The fast path for demos and tests: the generator's files are known to be clean, so this
        skips validation; use :meth:`ingest` for real data.
        """
        return data_in.load_bank(self._store, bank_dir, replace=replace)

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
        return data_in.ingest(
            self._store, source, table=table, mapping=mapping, on_error=on_error,
            id_column=id_column, generate_id=generate_id, holdings=holdings,
            holdings_column=holdings_column, holdings_separator=holdings_separator,
            holdings_from_events=holdings_from_events, text_columns=text_columns,
            attributes=attributes, rename=rename, types=types,
            timestamp_formats=timestamp_formats, drop=drop, kind=kind, delimiter=delimiter,
            keep_flag_columns=keep_flag_columns, strict_names=strict_names, dedupe=dedupe,
            progress=progress, runner=self._runner)

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
        return data_in.consolidate(self._store, self._runner, full=full,
                                   customer_ids=customer_ids, amount=amount,
                                   categories=categories, channels=channels,
                                   max_values=max_values)

    def refresh(self, *, refit: bool = False, progress: Progress | None = None
                ) -> RefreshResult:
        """Bring every derived column up to date after new data landed, in dependency order
        and only for what changed: consolidation, every recorded embedder (with its stored
        fitted state; ``refit`` re-fits), the ANN indexes of written columns, risk scores
        with the persisted model, propensity scores, recommendations. Returns a
        :class:`services.refresh.RefreshResult` (per step: done or skipped, and why). Safe to
        run twice: a run with nothing to do writes nothing."""
        from ..refresh import refresh

        require_table(self._store, CUSTOMERS, "ingest customers first")
        return refresh(self._store, refit=refit, progress=progress, runner=self._runner)

    # ------------------------------------------------------------------ embeddings
    def embed(self, kind: str, *, table: str = CUSTOMERS, include: Sequence[str] | None = None,
              exclude: Sequence[str] = (), column: str | None = None,
              text_column: str | None = None, template: str | None = None,
              model: str | None = None, dim: int | None = None,
              sources: Sequence[str] = (), weights: Sequence[float] | None = None,
              backend: str = "torch", raw: bool = True,
              types: Sequence[str] | dict[str, str] = (),
              progress: Progress | None = None, **deprecated: Any) -> StepResult:
        """Write a vector column: ``tabular``, ``text``, ``behavior`` or ``combined``.

        - tabular: numeric columns standardised, categoricals one-hot (``include``/``exclude``
          select columns; ``dim`` adds a PCA; ``types=["branch=category"]`` reads a column as
          a category or a number, see :mod:`ingest.column_kinds`), unit length for matching;
          with ``raw`` (the default) also ``<output>_raw``: z-scored, unclipped, not
          normalised (metric l2), the column risk scoring uses because it keeps each
          customer's distance from the centre.
        - text: sentence-transformers over a ``text_column`` or a profile ``template``
          (``model``: a local path; default the packaged all-MiniLM-L6-v2; ``backend``
          ``onnx`` runs it int8-quantised through ONNX Runtime, ~3x faster on CPU, vectors
          close to but not equal to PyTorch's).
        - behavior: SVD of holdings + events, customers and products in one space (``dim``).
        - combined: weighted concatenation of the ``sources`` vector columns.

        ``column`` names the vector column written (default ``vec_<kind>``; ``output`` is its
        deprecated name; ``embed("text", column="bio")`` without ``text_column`` or
        ``template`` is read the old way, as the text column, with a DeprecationWarning).
        Returns a StepResult whose details hold the rows embedded/skipped, dimension, seconds
        and state checksum.
        """
        output = _compat.renamed("embed", deprecated, "output", "column", None)
        _compat.no_other("embed", deprecated)
        if kind == "text" and column is not None and text_column is None and template is None:
            warnings.warn("Kindred.embed('text', column=...) naming the text column is "
                          "deprecated: give text_column=...; column= names the vector column "
                          "written", DeprecationWarning, stacklevel=2)
            text_column, column = column, None
        if output is not None and column is not None:
            raise ServiceError("embed: give column= or the deprecated output=, not both")
        return embedding.embed(self._store, self._runner, kind, table=table, include=include,
                               exclude=exclude, column=text_column, template=template,
                               model=model, output=column if column is not None else output,
                               dim=dim, sources=sources, weights=weights, backend=backend,
                               raw=raw, types=types, progress=progress)

    # ------------------------------------------------------------------ product matching
    def match(self, product: str, *, method: str = "centroid", column: str | None = None,
              top: int | None = None, audience_pct: float | None = None,
              min_score: float | None = None, where: str | None = None, exact: bool = False,
              attributes: Sequence[str] = (), min_consumers: int = 20,
              query: ProductQuery | None = None, consumers: bool = True,
              prospects: bool = True, bands: Sequence[float] | None = None,
              propensity_options: dict[str, Any] | None = None,
              **deprecated: Any) -> MatchResult:
        """Consumers (holders, most typical first) and prospects (most likely first) of a product.

        ``where`` is a filter expression over customer columns, e.g.
        ``"age >= 30 and region in ('north', 'south')"``. Returns
        :class:`services.matching.MatchResult`: two Arrow tables (``customer_id, score, rank`` +
        ``attributes``) and a summary (method, sizes, options); ``.to_dict()`` is JSON-ready.
        ``column`` is the vector column (default :meth:`default_vector_column`).
        ``query`` reuses a query from :meth:`product_query` (no refit). ``consumers=False``
        or ``prospects=False`` leaves that list out (one search). ``bands``: two descending
        score thresholds for the high/medium/low bands (default: edges from the whole base,
        see :mod:`services.matching.bands`). ``method="propensity"`` serves the probabilities
        :meth:`fit` wrote (else fits in memory); the summary then has the audience's expected
        conversions and lift. ``match`` never writes to the store: without an ANN index on a
        table big enough to want one, the summary's warnings say to run :meth:`index`.
        Old names (``vector_column``, ``columns``, ``top_k``, ``filter``) still work, with a
        DeprecationWarning.
        """
        column = _compat.renamed("match", deprecated, "vector_column", "column", column)
        attributes = _compat.renamed("match", deprecated, "columns", "attributes", attributes, ())
        top = _compat.renamed("match", deprecated, "top_k", "top", top)
        where = _compat.renamed("match", deprecated, "filter", "where", where)
        _compat.no_other("match", deprecated)
        return matching.match(self._store, _compat.as_id(product, "product id"), method=method,
                              vector_column=column,
                              top=top, audience_pct=audience_pct, min_score=min_score,
                              where=where, exact=exact, columns=attributes,
                              min_consumers=min_consumers, query=query, consumers=consumers,
                              prospects=prospects, bands=bands,
                              propensity_options=propensity_options)

    def fit(self, products: Sequence[str], *, method: str = "propensity",
            column: str | None = None, exclude: Sequence[str] = (),
            types: Sequence[str] | dict[str, str] = (), seed: int = 0,
            propensity_options: dict[str, Any] | None = None,
            progress: Progress | None = None, **deprecated: Any) -> StepResult:
        """Fit and persist each product's model, so :meth:`match` serves it without refitting.

        ``propensity``: a gradient-boosted model of the attributes (``exclude`` leaves columns
        out, ``types=["branch=category"]`` declares kinds), saved verified, and every
        customer's probability written to ``propensity_<product>`` with a scalar index;
        ``learned``: the logistic query on the vector ``column``, saved for reuse while the table
        is unchanged. Returns per product what was fitted (model id, cross-validated ROC-AUC,
        leakage warnings).
        """
        column = _compat.renamed("fit", deprecated, "vector_column", "column", column)
        _compat.no_other("fit", deprecated)
        products = [_compat.as_id(p, "product id") for p in products]
        return matching.fit(self._store, products, method=method, vector_column=column,
                            exclude=exclude, types=types, seed=seed,
                            propensity_options=propensity_options, progress=progress,
                            runner=self._runner)

    def product_query(self, product: str, *, method: str = "centroid",
                      column: str | None = None, min_consumers: int = 20,
                      **learned_options: Any) -> ProductQuery:
        """The fitted query of a product (centroid, learned model or product vector) on the
        vector ``column``, to reuse across several :meth:`match` calls without refitting."""
        column = _compat.renamed("product_query", learned_options, "vector_column", "column",
                                 column)
        return matching.product_query(self._store, _compat.as_id(product, "product id"),
                                      method=method, vector_column=column,
                                      min_consumers=min_consumers, **learned_options)

    def explain(self, customer_id: str | int, product: str, *, column: str | None = None,
                top: int = 5, **deprecated: Any) -> Explanation:
        """Why ``customer_id`` is near ``product``: its ``top`` nearest consumers in the vector
        ``column`` and what they share (an int id is taken as the string id it spells)."""
        column = _compat.renamed("explain", deprecated, "vector_column", "column", column)
        top = _compat.renamed("explain", deprecated, "k", "top", top, 5)
        _compat.no_other("explain", deprecated)
        return matching.explain(self._store, _compat.as_id(customer_id),
                                _compat.as_id(product, "product id"), vector_column=column,
                                k=top)

    def recommend(self, *, top: int = 3, column: str | None = None,
                  exclude_held: bool = True, method: str | None = None,
                  only_products: bool = True, progress: Progress | None = None,
                  **deprecated: Any) -> RecommendSummary | StepResult:
        """Every customer's ``top`` products, written to ``rec_products``/``rec_scores``.

        ``method="behavior"`` (the default when there is an events table and no
        ``column``): the behaviour
        recommender of :mod:`services.matching.behaviour` (own history for repeatable items, a
        behaviour profile that falls back to popularity, implicit ALS factors), fitted on all
        events and saved; held one-time products are never recommended again, and only
        products-table items are written when ``only_products``. ``method="vector"``: customer
        . product in a shared vector ``column`` (e.g. ``vec_behavior``).
        """
        top = _compat.renamed("recommend", deprecated, "top_n", "top", top, 3)
        column = _compat.renamed("recommend", deprecated, "vector_column", "column", column)
        _compat.no_other("recommend", deprecated)
        return matching.recommend(self._store, self._runner, top_n=top,
                                  vector_column=column, exclude_held=exclude_held,
                                  method=method, only_products=only_products,
                                  progress=progress)

    def recommendations(self, customer_id: str | int, *, top: int = 10,
                        only_products: bool = True, **deprecated: Any
                        ) -> CustomerRecommendations:
        """One customer's ``top`` behaviour recommendations with the reasons for each: from the
        recommender :meth:`recommend` saved (fitted on the fly, not saved, when there is none).
        """
        top = _compat.renamed("recommendations", deprecated, "top_n", "top", top, 10)
        _compat.no_other("recommendations", deprecated)
        return matching.recommendations(self._store, _compat.as_id(customer_id), top_n=top,
                                        only_products=only_products)

    def evaluate_recommendations(self, *, top: int = 10, seed: int = 0,
                                 **deprecated: Any) -> RecommendationEvaluation:
        """Next-basket evaluation (each customer's last day of events hidden): hit@k,
        recall@k, NDCG@k (k = ``top``) of Kindred against popularity, popularity without
        history and raw implicit ALS, in one run (:mod:`services.matching.evaluate_recs`)."""
        top = _compat.renamed("evaluate_recommendations", deprecated, "k", "top", top, 10)
        _compat.no_other("evaluate_recommendations", deprecated)
        return matching.evaluate_recommendations(self._store, k=top, seed=seed)

    def evaluate_matching(self, product: str | None = None, *, label: str | None = None,
                          positive: Any = None, columns: Sequence[str] | None = None,
                          methods: Sequence[str] = ("centroid", "learned", "propensity"),
                          holdout: float = 0.2, seed: int = 0, repeats: int = 3,
                          split_column: str | None = None, test_value: Any = "test",
                          test_size: float = 0.3, exclude: Sequence[str] = (),
                          learned_options: dict[str, Any] | None = None,
                          propensity_options: dict[str, Any] | None = None,
                          progress: Progress | None = None,
                          **deprecated: Any) -> EvaluationReport:
        """Measured matching quality: repeated holdouts of ``product``'s holders, or a
        ``label`` column (test rows: ``split_column == test_value``, else ``repeats`` seeded
        stratified ``test_size`` splits).

        Returns an :class:`services.matching.evaluate.EvaluationReport`: ROC-AUC (mean, SD, interval),
        precision@k, recall@k and lift@k per vector column (``columns``) and method, with random and
        popularity baselines, leakage warnings and the predictability verdict.
        ``learned_options`` go to the learned model (e.g. ``{"Cs": [10.0]}``),
        ``propensity_options`` (and ``exclude``, attribute columns left out) to the
        propensity model.
        """
        columns = _compat.renamed("evaluate_matching", deprecated, "vector_columns", "columns",
                                  columns)
        _compat.no_other("evaluate_matching", deprecated)
        return matching.evaluate_matching(
            self._store, product, label=label, positive=positive,
            vector_columns=columns, methods=methods, holdout=holdout, seed=seed,
            repeats=repeats, split_column=split_column, test_value=test_value,
            test_size=test_size, exclude=exclude, learned_options=learned_options,
            propensity_options=propensity_options, progress=progress)

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
        return risk.score_risk(self._store, self._runner, detector=detector, column=column,
                               attributes=attributes, fit_sample=fit_sample,
                               threshold=threshold, seed=seed, table=table, progress=progress)

    def risk_top(self, top: int = 20, *, attributes: Sequence[str] | None = None,
                 flagged_only: bool = False, table: str = CUSTOMERS,
                 **deprecated: Any) -> pa.Table:
        """The ``top`` most anomalous customers, most anomalous first (an Arrow table), with
        the ``attributes`` columns."""
        top = _compat.renamed("risk_top", deprecated, "n", "top", top, 20)
        attributes = _compat.renamed("risk_top", deprecated, "columns", "attributes", attributes)
        _compat.no_other("risk_top", deprecated)
        return risk.risk_top(self._store, self._runner, top, columns=attributes,
                             flagged_only=flagged_only, table=table)

    def explain_risk(self, customer_id: str | int, *,
                     table: str = CUSTOMERS) -> RiskExplanation:
        """Why a customer scores as it does: deviating attributes, nearest normal neighbours,
        and its score percentile (an int id is taken as the string id it spells)."""
        return risk.explain_risk(self._store, _compat.as_id(customer_id), table=table)

    def evaluate_risk(self, label: str, *, positive: Any = None,
                      detectors: Sequence[Any] = ("iforest", "hbos", "ecod", "default"),
                      column: str | None = None, fit_sample: int | float | None = None,
                      seed: int = 0, table: str = CUSTOMERS) -> RiskEvaluation:
        """ROC-AUC, average precision and precision@n of each detector against ``label``
        (``label == positive`` marks a known anomaly, e.g. ``positive="bad"``; a bool or 0/1
        label needs none), on the column :meth:`score_risk` would use."""
        return risk.evaluate_risk(self._store, label, positive=positive, detectors=detectors,
                                  column=column, fit_sample=fit_sample, seed=seed,
                                  table=table)

__all__ = ["PREFERRED_VECTORS", "Kindred", "StoreError"]
