"""The facade's data-in steps: generate a synthetic bank, load it, ingest a source,
consolidate events (the bodies behind :meth:`Kindred.generate`, :meth:`Kindred.ingest`, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from ingest.datamodel import CUSTOMERS, EVENTS, KEYS
from ingest.errors import SourceError
from vectorstore import VectorStore

from ..admin import Progress
from ..errors import ServiceError
from ..models import GenerateResult, IngestResult, StepResult
from ._common import _for_step, _plain, require_table


def generate(out_dir: str | Path, *, customers: int | None = None,
             events_per_customer: float | None = None, seed: int | None = None,
             day: int = 1) -> GenerateResult:
    """:meth:`services.facade.Kindred.generate`."""
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


def load_bank(store: VectorStore, bank_dir: str | Path, *, replace: bool = True) -> StepResult:
    """:meth:`services.facade.Kindred.load_bank`."""
    import synthetic_bank as synthetic

    written = synthetic.load_into_store(store, bank_dir, replace=replace)
    return StepResult(step="load_bank", details={"rows": written})


def ingest(store: VectorStore, source: Any = None, *, table: str | None = None,
           mapping: str | Path | dict[str, Any] | None = None, on_error: str = "fail",
           id_column: str | None = None, generate_id: bool | None = None,
           holdings: Sequence[str] = (), holdings_column: str | None = None,
           holdings_separator: str = "|", holdings_from_events: Sequence[str] = (),
           text_columns: Sequence[str] = (), attributes: Sequence[str] | None = None,
           rename: Sequence[str] = (), types: Sequence[str] = (),
           timestamp_formats: Sequence[str] = (), drop: Sequence[str] = (),
           kind: str | None = None, delimiter: str | None = None,
           keep_flag_columns: bool = False, strict_names: bool = False,
           dedupe: bool = False, progress: Progress | None = None,
           runner: Any = None) -> IngestResult:
    """:meth:`services.facade.Kindred.ingest`."""
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
        return ingest(store, src, m, on_error=on_error,  # type: ignore[arg-type]
                      progress=rows_read, runner=runner)
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
    if generate_id is None and not id_column and table != EVENTS and KEYS[table] not in {
            m.resolve(c) for c in _source_columns(src, opts)}:
        m = m.model_copy(update={"generate_id": True})
    return ingest(store, src, m, on_error=on_error,  # type: ignore[arg-type]
                  progress=rows_read, runner=runner)


def consolidate(store: VectorStore, runner: Any, *, full: bool = False,
                customer_ids: Sequence[str] | None = None, amount: str | None = None,
                categories: Sequence[str] | None = None,
                channels: Sequence[str] | None = None,
                max_values: int | None = None) -> StepResult:
    """:meth:`services.facade.Kindred.consolidate`."""
    from ingest.consolidate import ConsolidationConfig, consolidate
    from ingest.names import resolve_column, resolve_columns

    require_table(store, EVENTS, "ingest events first")
    info = store.table_info(EVENTS)
    cols = info.schema.names
    cfg = ConsolidationConfig(
        amount=resolve_column(cols, info.metadata, amount) if amount else None,
        categories=resolve_columns(cols, info.metadata, categories),
        channels=resolve_columns(cols, info.metadata, channels),
        max_values=max_values)
    r = consolidate(store, full=full, customer_ids=customer_ids, config=cfg,
                    runner=runner)
    return StepResult(step="consolidate", table=CUSTOMERS, details=_plain(r))


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
