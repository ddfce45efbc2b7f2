"""``refresh``: bring every derived column up to date after new data lands, and only that.

The steps run in dependency order, each only for what changed since it last ran:

1. **consolidation** (when the customers were consolidated before): customers with events past
   the watermark, and consolidated customers whose row a source write changed since;
2. **embeddings**: every vector column recorded in ``metadata["embedders"]``, transformed with
   the fitted state it was created with (new customers embedded exactly like the old ones),
   only the rows stale for it (:mod:`ingest.freshness`); columns made from other vector
   columns (``combined``) after them;
3. **ANN indexes**: a vector index whose column was written is optimised (new rows added; a
   table that doubled since the build is re-indexed);
4. **risk scores** with the persisted model, stale rows only;
5. **propensity scores** of every fitted product with its persisted model, stale rows only;
6. **recommendations** by the method and options they were written with, stale customers only.

Each step is one of Kindred's usual steps (one ``store.transaction`` per table), so a failure
leaves every table as the last committed step left it, and running ``refresh`` again resumes.
A step with nothing to do writes nothing: a second refresh leaves every table's version as it
was. ``refit=True`` re-fits the embedders (and, since their vectors move, the risk model on
them and the behaviour recommender) instead of transforming with the stored state;
docs/refresh.md says when that is due.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field

from ingest.datamodel import (
    CUSTOMERS,
    EVENTS,
    META_EMBEDDERS,
    META_PROPENSITY,
    META_RECOMMEND,
    META_RISK,
    PRODUCTS,
)
from ingest.progress import LabelledProgress, Progress, for_step
from vectorstore import VectorStore


class RefreshStep(BaseModel):
    """What one step of a refresh did."""

    step: str
    """consolidate, embed, index, risk, propensity or recommend."""
    target: str
    """What the step brings up to date (a table, a column, a product)."""
    action: str
    """``done`` (rows written), ``skipped`` (nothing to do) or ``refit``."""
    rows: int = 0
    """Rows written."""
    reason: str = ""
    """Why it was skipped, or what it did, in a few words."""
    seconds: float = 0.0
    details: dict[str, Any] = Field(default_factory=dict)


class RefreshResult(BaseModel):
    """Every step of one refresh, in the order they ran."""

    refit: bool
    steps: list[RefreshStep]
    seconds: float

    @property
    def wrote(self) -> bool:
        return any(s.rows for s in self.steps)


class _Refresh:
    def __init__(self, store: VectorStore, refit: bool, progress: LabelledProgress | None,
                 runner: Any = None) -> None:
        self.store, self.refit, self.progress = store, refit, progress
        self.runner = runner
        """Where each step's per-partition work runs (:mod:`ingest.runner`)."""
        self.steps: list[RefreshStep] = []
        self.written: dict[str, set[str]] = {}
        """Vector columns written, per table (their indexes need optimising)."""

    def tick(self, step: str) -> Progress | None:
        return for_step(self.progress, step)

    def add(self, step: str, target: str, rows: int, t0: float, reason: str = "",
            action: str | None = None, **details: Any) -> None:
        if action is None:
            action = "done" if rows else "skipped"
        if not reason:
            reason = f"{rows:,} row(s) written" if rows else "up to date"
        self.steps.append(RefreshStep(step=step, target=target, action=action, rows=rows,
                                      reason=reason, seconds=round(time.perf_counter() - t0, 3),
                                      details=details))

    def meta(self, table: str = CUSTOMERS) -> dict[str, Any]:
        return self.store.table_info(table).metadata or {}

    # ------------------------------------------------------------------ 1. consolidation
    def consolidate(self) -> None:
        from ingest.consolidate import ConsolidationConfig, consolidate

        t0 = time.perf_counter()
        if not self.store.has_table(EVENTS) or not self.store.has_table(CUSTOMERS) or \
                "consolidation" not in self.meta():
            self.add("consolidate", CUSTOMERS, 0, t0, "never consolidated")
            return
        r = consolidate(self.store, config=ConsolidationConfig(), runner=self.runner)
        rows = r.updated + r.inserted
        reason = (f"{r.updated:,} updated, {r.inserted:,} inserted from "
                  f"{r.events_scanned:,} events" if rows else "no new events or changed rows")
        if r.aged:
            reason += f"; recency/frequency aged to {r.as_of} on {r.aged:,} rows"
        self.add("consolidate", CUSTOMERS, rows + r.aged, t0, reason, updated=r.updated,
                 inserted=r.inserted, aged=r.aged, as_of=r.as_of)

    # ------------------------------------------------------------------ 2. embeddings
    def embed(self, table: str = CUSTOMERS) -> None:
        from ingest.embedders import load_embedder

        if not self.store.has_table(table):
            return
        info = self.store.table_info(table)
        entries = info.metadata.get(META_EMBEDDERS) or {}
        columns = [c for c, e in entries.items()
                   if isinstance(e, dict) and c in info.vectors and not e.get("space_of")]
        if not columns:
            t0 = time.perf_counter()
            self.add("embed", table, 0, t0, "no embedder recorded")
            return
        loaded = {c: load_embedder(self.store, table, c) for c in columns}
        # columns read by other recorded columns go first (combined after its sources)
        first = [c for c in columns if not set(loaded[c].input_columns(info)) & set(columns)]
        later = [c for c in columns if c not in first]
        for level in (first, later):
            for group in _groups(level, loaded):
                self._embed_group(table, [(loaded[c], c) for c in group])

    def _embed_group(self, table: str, targets: list[tuple[Any, str]]) -> None:
        from ingest.embedders import embed_columns
        from ingest.embedders.errors import DimensionConflictError

        t0 = time.perf_counter()
        names = [c for _, c in targets]
        label = ", ".join(names)
        emb, column = targets[0]
        if self.refit and emb.kind == "behavior":
            from ingest.embedders.behavior_run import embed_behavior

            products = PRODUCTS if self.store.has_table(PRODUCTS) and column in (
                self.meta(PRODUCTS).get(META_EMBEDDERS) or {}) else None
            r = embed_behavior(self.store, emb, customers=table, products=products,
                               column=column, progress=self.tick(f"refit {column}"),
                               runner=self.runner)
            self.written.setdefault(table, set()).add(column)
            if products:
                self.written.setdefault(products, set()).add(column)
            self.add("embed", f"{table}.{column}", r.rows_embedded, t0,
                     f"re-fitted: {r.rows_embedded:,} row(s) written", action="refit")
            return
        try:
            results = embed_columns(self.store, table, targets, fit=self.refit,
                                    progress=self.tick(f"embed {label}"),
                                    runner=self.runner)
        except DimensionConflictError as exc:
            if not self.refit:
                raise
            from .errors import ServiceError

            raise ServiceError(
                f"refresh --refit: re-fitted on today's data, {label} would change shape "
                f"({exc}); nothing of {label} was written. Re-embed into a new column "
                "(`kindred embed ... --output NAME`) or keep refreshing with the stored "
                "state") from None
        for r in results:
            written = r.rows_embedded if r.rows_written is None else r.rows_written
            if written:
                self.written.setdefault(table, set()).add(r.column)
            if self.refit:
                self.add("embed", f"{table}.{r.column}", written, t0,
                         f"re-fitted: {written:,} row(s) written", action="refit",
                         mode=r.mode, state_sha256=r.state_sha256)
            else:
                reason = (f"{written:,} row(s) embedded ({r.mode}), "
                          f"{r.rows_skipped:,} kept" if written else "no stale rows")
                self.add("embed", f"{table}.{r.column}", written, t0, reason,
                         mode=r.mode)

    # ------------------------------------------------------------------ 3. indexes
    def index(self) -> None:
        from services.matching.index import refresh_index

        for table in (CUSTOMERS, PRODUCTS):
            if not self.store.has_table(table):
                continue
            indexed = {c for ix in self.store.list_indexes(table) if ix.vector
                       for c in ix.columns}
            for column in sorted(indexed & set(self.store.table_info(table).vectors)):
                t0 = time.perf_counter()
                if column not in self.written.get(table, set()):
                    self.add("index", f"{table}.{column}", 0, t0, "column unchanged")
                    continue
                action = refresh_index(self.store, table, column)
                self.add("index", f"{table}.{column}", 0, t0, f"index {action}",
                         action="done")

    # ------------------------------------------------------------------ 4. risk
    def risk(self, table: str = CUSTOMERS) -> None:
        from services.risk import rescore, score_table
        from services.risk.persistence import load_model

        t0 = time.perf_counter()
        meta = self.meta(table).get(META_RISK) or {}
        if not meta.get("model_id"):
            self.add("risk", table, 0, t0, "never scored")
            return
        if self.refit:
            _, source, _ = load_model(self.store, table, meta["model_id"])
            thr = None if meta.get("contamination") is not None else meta.get("threshold")
            run = score_table(self.store, table, meta.get("config"), column=source.column,
                              attributes=list(source.attributes) if source.attributes
                              else None, threshold=thr, progress=self.tick("risk"),
                              runner=self.runner)
            self.add("risk", table, run.rows_scored, t0,
                     f"re-fitted {run.detector}: {run.rows_scored:,} row(s) scored",
                     action="refit", model_id=run.model_id, n_flagged=run.n_flagged)
            return
        run = rescore(self.store, table, meta["model_id"], stale_only=True,
                      progress=self.tick("risk"), runner=self.runner)
        reason = (f"{run.rows_scored:,} row(s) scored ({run.mode}) with model "
                  f"{run.model_id}" if run.rows_scored else "no stale rows")
        self.add("risk", table, run.rows_scored, t0, reason, mode=run.mode,
                 model_id=run.model_id, n_flagged=run.n_flagged)

    # ------------------------------------------------------------------ 5. propensity
    def propensity(self) -> None:
        from services.matching.scores import refresh_scores

        products = self.meta().get(META_PROPENSITY) or {}
        if not products:
            self.add("propensity", CUSTOMERS, 0, time.perf_counter(), "no product fitted")
            return
        for product in sorted(products):
            t0 = time.perf_counter()
            r = refresh_scores(self.store, product, progress=self.tick(f"propensity {product}"),
                               runner=self.runner)
            reason = (f"{r['rows']:,} row(s) scored ({r['mode']})" if r["rows"]
                      else "no stale rows")
            self.add("propensity", r["column"], r["rows"], t0, reason, mode=r["mode"])

    # ------------------------------------------------------------------ 6. recommendations
    def recommend(self) -> None:
        from services.matching.rec_write import recommend_behaviour, refresh_recommendations

        t0 = time.perf_counter()
        meta = self.meta().get(META_RECOMMEND) or {}
        if not meta.get("method"):
            self.add("recommend", CUSTOMERS, 0, t0, "never recommended")
            return
        if self.refit and meta["method"] == "behavior":
            d = recommend_behaviour(self.store, top_n=int(meta.get("top_n", 10)),
                                    only_products=bool(meta.get("only_products", True)),
                                    progress=self.tick("recommend"), runner=self.runner)
            self.add("recommend", "rec_products", int(d["customers"]), t0,
                     f"re-fitted: {d['customers']:,} customer(s) written", action="refit")
            return
        r = refresh_recommendations(self.store, progress=self.tick("recommend"),
                                    runner=self.runner)
        reason = (f"{r['rows']:,} customer(s) written ({r['mode']}, {r['method']})"
                  if r["rows"] else "no stale customers")
        self.add("recommend", "rec_products", int(r["rows"]), t0, reason, mode=r["mode"],
                 method=r["method"])


def _groups(columns: list[str], loaded: dict[str, Any]) -> list[list[str]]:
    """Columns embedded in one commit: the plain ones together (one scan), an embedder with
    a content plan (text) or its own context (behaviour) on its own."""
    from ingest.embedders.base import Embedder

    plain, alone = [], []
    for c in columns:
        emb = loaded[c]
        if hasattr(emb, "plan") or type(emb).prepare is not Embedder.prepare:
            alone.append([c])
        else:
            plain.append(c)
    return ([plain] if plain else []) + alone


def refresh(store: VectorStore, *, refit: bool = False,
            progress: LabelledProgress | None = None, runner: Any = None) -> RefreshResult:
    """Run every step of a refresh (module docstring); returns what each did. ``runner``
    (:mod:`ingest.runner`: ``local``, ``ray``, a runner, None for ``KINDRED_RUNNER``) runs
    the per-partition work of consolidation, embedding, risk and recommendations."""
    t0 = time.perf_counter()
    run = _Refresh(store, refit, progress, runner)
    if not store.has_table(CUSTOMERS):
        from .errors import ServiceError

        raise ServiceError("table 'customers' does not exist: ingest customers first")
    run.consolidate()
    run.embed(CUSTOMERS)
    run.index()
    run.risk()
    run.propensity()
    run.recommend()
    return RefreshResult(refit=refit, steps=run.steps,
                         seconds=round(time.perf_counter() - t0, 3))


__all__ = ["RefreshResult", "RefreshStep", "refresh"]
