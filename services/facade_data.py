"""The bodies of :class:`services.facade.Kindred`'s data-in steps: generate (a synthetic bank,
day 1 or a later day), ingest (a source, a mapping, a JSON array), consolidate and embed.
The facade keeps the signatures and docstrings.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ingest.errors import SourceError

from .admin import Progress
from .errors import ServiceError
from .facade_common import (
    CUSTOMERS,
    EVENTS,
    KEYS,
    PRODUCTS,
    _for_step,
    _plain,
)
from .models import (
    GenerateResult,
    IngestResult,
    StepResult,
)

if TYPE_CHECKING:
    from .facade import Kindred


def generate(out_dir: str | Path, *, customers: int | None, events_per_customer: float | None,
             seed: int | None, day: int) -> GenerateResult:
    """The body of :meth:`Kindred.generate`."""
    from ingest import synthetic

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


def load_bank(self: Kindred, bank_dir: str | Path, *, replace: bool) -> StepResult:
    """The body of :meth:`Kindred.load_bank`."""
    from ingest import synthetic

    written = synthetic.load_into_store(self._store, bank_dir, replace=replace)
    return StepResult(step="load_bank", details={"rows": written})


def ingest(self: Kindred, source: Any, *, table: str | None,
           mapping: str | Path | dict[str, Any] | None, on_error: str, id_column: str | None,
           generate_id: bool | None, holdings: Sequence[str], holdings_column: str | None,
           holdings_separator: str, holdings_from_events: Sequence[str],
           text_columns: Sequence[str], attributes: Sequence[str] | None, rename: Sequence[str],
           types: Sequence[str], timestamp_formats: Sequence[str], drop: Sequence[str],
           kind: str | None, delimiter: str | None, keep_flag_columns: bool, strict_names: bool,
           dedupe: bool, progress: Progress | None) -> IngestResult:
    """The body of :meth:`Kindred.ingest`."""
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


def consolidate(self: Kindred, *, full: bool, customer_ids: Sequence[str] | None,
                amount: str | None, categories: Sequence[str] | None,
                channels: Sequence[str] | None, max_values: int | None) -> StepResult:
    """The body of :meth:`Kindred.consolidate`."""
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
    r = consolidate(self._store, full=full, customer_ids=customer_ids, config=cfg)
    return StepResult(step="consolidate", table=CUSTOMERS, details=_plain(r))


def refresh(self: Kindred, *, refit: bool, progress: Progress | None) -> Any:
    """The body of :meth:`Kindred.refresh`."""
    from .refresh import refresh

    self._require_table(CUSTOMERS, "ingest customers first")
    return refresh(self._store, refit=refit, progress=progress)


def embed(self: Kindred, kind: str, *, table: str, include: Sequence[str] | None,
          exclude: Sequence[str], column: str | None, template: str | None, model: str | None,
          output: str | None, dim: int | None, sources: Sequence[str],
          weights: Sequence[float] | None, backend: str, raw: bool,
          types: Sequence[str] | dict[str, str], progress: Progress | None) -> StepResult:
    """The body of :meth:`Kindred.embed`."""
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
                                     raw=raw, types=kinds, progress=rows_done)
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
        r = embedders.embed(self._store, table, emb, output, progress=rows_done)
    elif kind == "behavior":
        from ingest.embedders.behavior import BehaviorEmbedder, embed_behavior

        emb = _exact_dim(BehaviorEmbedder, dim, "items")(**({"dim": dim} if dim else {}))
        r = embed_behavior(self._store, emb, customers=table,
                           products=PRODUCTS if self._store.has_table(PRODUCTS) else None,
                           column=output or "vec_behavior", progress=rows_done)
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
                           progress=rows_done)
    else:
        raise ServiceError(f"unknown embedding kind {kind!r}; expected tabular, text, "
                           "behavior or combined")
    return StepResult(step=f"embed {kind}", table=table, details={
        **_plain(r), "message": getattr(r, "message", "")})


def _exact_dim(cls: Any, dim: int | None, unit: str) -> Any:
    """``cls``, or a subclass whose ``fit`` refuses (before anything is written) to give
    fewer dimensions than ``dim`` asked for: PCA and SVD cannot make more dimensions than the
    data has, and silently writing 64 when 100,000 were asked is a wrong answer."""
    if dim is None:
        return cls

    class Exact(cls):  # type: ignore[misc,valid-type]
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
    from ingest import synthetic, synthetic_days
    from ingest.errors import IngestError

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
