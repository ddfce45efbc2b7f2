"""Consolidate the ``events`` table into per-customer features in ``customers``.

For each customer with events: ``n_events``, ``frequency`` (events per 30 days between the first
event and ``as_of``), ``monetary`` (sum of ``amount``), ``recency_days`` (days from the last
event to ``as_of``), ``first_seen``, ``last_seen``, one ``spend_<value>`` (sum of amounts) per
value of the spend dimensions (default: ``category``) and one ``count_<value>`` (number of
events) per value of the count dimensions (default: ``channel``), and ``holdings``: the union of
the holdings already on the row with the products that events show are held (events of a kind
in ``holding_kinds``, or declared by an events mapping's ``holdings.from_events``, carrying a
``product_id``, e.g. an instalment paid into a mortgage or an online purchase).
``consolidation_run`` records the run that last wrote the row.

Only a customer id and ``ts`` are required of the events (a purchase log of member, date and
item is enough). The amount, category and channel columns are used when present or named
(:class:`ConsolidationConfig`: ``amount``, ``categories``, ``channels``); the features of a
column that is absent are skipped and listed in :attr:`ConsolidationResult.notes`
(``monetary`` and ``spend_*`` without an amount; without amounts, categories give
``count_<value>`` instead). Columns named explicitly are remembered in the metadata for the
next runs. Each category or channel column gives at most ``max_values`` feature columns (the
most frequent values first). Without a customers table, one is created from the events.

Incremental: a run finds the events added since the previous run (the ``watermark_column`` of
events, ``ts`` by default, greater than the watermark kept in the customers table's metadata
under ``"consolidation"``), takes the set of their customers and recomputes only those
customers' features from *all* their events (a filtered scan), then writes them back by key
(rows of other customers are not rewritten). New feature columns, the rows and the run's
metadata (watermark, column map) are one commit: a failed or killed run leaves the table as it
was, and its re-run starts from the same watermark and column names. A customer id that has events but
no row in ``customers`` gets a new row (``on_unknown="insert"``), or is skipped or refused.
Events that arrive late (watermark column not past the watermark) are only picked up when their
customers are named (``customer_ids=``) or on a ``full=True`` run; an events table with an
ingestion-time or sequence column should use it as the ``watermark_column``.

Engine: DuckDB, over Arrow record batches streamed from ``store.scan``. One SQL statement
computes every feature in a single pass with conditional aggregates (``sum(amount) FILTER
(WHERE category = $n)``), DuckDB's hash aggregation streams its input batch by batch (memory
grows with the number of customers, not events) and uses both cores. Arrow compute's
``group_by`` cannot take a stream (it needs one in-memory table) nor conditional aggregates in
one pass, and Polars is not a runtime dependency. Values (categories, kinds) reach DuckDB only
as bound parameters; the only text spliced into SQL is feature column names, which are
sanitised to plain identifiers and checked with ``vectorstore.check_name``.

Only the store interface is used (scan and a staged step: ``store.transaction``), so this
works on every backend.

This module is the run itself (which customers, the aggregate streamed and staged, one
commit); :mod:`.consolidate_config` holds what is computed (config, result, feature names),
:mod:`.consolidate_plan` the plan and DuckDB SQL, :mod:`.consolidate_aging` the aging of
``recency_days``/``frequency`` and :mod:`.consolidate_parts` the per-partition passes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vectorstore import TableInfo, VectorStore
from vectorstore.txn import PendingWrite

from .consolidate_aging import _stage_aging, age, aged
from .consolidate_config import (
    BASE_FEATURES,
    CONSOLIDATED,
    DEFAULT_MAX_VALUES,
    EXACT,
    METADATA_KEY,
    STEP,
    TS_TYPE,
    ConsolidationConfig,
    ConsolidationResult,
    _iso,
    _parse_iso,
    feature_name,
)
from .consolidate_plan import _Run
from .errors import ConsolidationError
from .freshness import new_stamp, source_touch, stamp_fields
from .runner import Runner, runner_for


def _finish(batch: pa.RecordBatch, as_of: dt.datetime, run: int,
            types: dict[str, pa.DataType]) -> pa.Table:
    """Add recency/frequency and the run marker; cast to the customers table's types."""
    t = pa.Table.from_batches([batch])
    recency, frequency = aged(t.column("last_seen"), t.column("first_seen"),
                              t.column("n_events"), as_of)
    cols: dict[str, pa.Array] = {}
    for name in t.column_names:
        if name in ("ev_holdings", "_exists"):
            continue
        cols[name] = t.column(name)
    cols["recency_days"] = recency
    cols["frequency"] = frequency
    cols["consolidation_run"] = pa.array(np.full(t.num_rows, run, dtype=np.int64))
    out = pa.table(cols)
    return pa.table({n: out.column(n).cast(types[n]) if n in types else out.column(n)
                     for n in out.column_names})


def consolidate(store: VectorStore, *, customer_ids: Sequence[str] | pa.Array | None = None,
                full: bool = False, config: ConsolidationConfig | None = None,
                runner: Runner | str | None = None) -> ConsolidationResult:
    """Recompute event features of the customers with new events (or the ones named, or all).

    With neither ``customer_ids`` nor ``full``, the customers are those with events past the
    watermark of the previous run (all customers on the first run). The watermark advances in
    the same commit as the rows, so a failed run is simply repeated. Without a customers
    table, one is created (keyed by the events' customer id) holding the rows from the events
    and the run's metadata, in one commit (``create_table(data=...)``): a failed or killed
    run leaves no table.
    """
    cfg = config or ConsolidationConfig()
    run = runner_for(store, runner, step="consolidate")
    if store.has_table(cfg.customers):
        return _consolidate(store, cfg, customer_ids, full, runner=run)
    if not store.has_table(cfg.events):
        raise ConsolidationError(f"there is no {cfg.events!r} table to consolidate: "
                                 "ingest events first")
    ev_schema = store.table_info(cfg.events).schema
    if cfg.key not in ev_schema.names:
        raise ConsolidationError(f"table {cfg.events!r} has no column {cfg.key!r}; columns: "
                                 f"{sorted(ev_schema.names)}")
    new = TableInfo(cfg.customers, pa.schema([ev_schema.field(cfg.key)]), key=cfg.key)
    result = _consolidate(store, cfg, customer_ids, full, new_table=new, runner=run)
    return replace(result, created_table=True)


def _consolidate(store: VectorStore, cfg: ConsolidationConfig,
                 customer_ids: Sequence[str] | pa.Array | None, full: bool,
                 new_table: TableInfo | None = None, runner: Runner | None = None
                 ) -> ConsolidationResult:
    run = _Run(store, cfg, new_table, runner)
    key = cfg.key
    wm_col = cfg.watermark_column

    # 1. which customers: with new events, and those whose row changed since their last
    # consolidation (a CRM upsert replaced their holdings: the events' products go back in)
    if customer_ids is not None:
        ids: pa.Array | None = pa.array(sorted(set(pa.array(customer_ids).to_pylist()) - {None}),
                                        pa.string())
    elif full or run.meta.get("watermark") is None or run.meta.get("watermark_column") != wm_col:
        ids = None
    else:
        ids = pc.unique(pa.concat_arrays([pc.cast(run.touched(), pa.string()),
                                          run.changed_rows()])).sort()
    if ids is not None and len(ids) == 0:
        aging = age(store, cfg)
        return ConsolidationResult(0, 0, 0, 0, 0, int(run.meta.get("run", 0)),
                                   run.meta.get("watermark"), run.meta.get("as_of"), (),
                                   tuple(run.notes), aged=aging)
    if ids is not None:
        run.con.register("_ids", pa.table({"k": ids}))

    # 2. one pass over their events: newest time, watermark, dimension values
    max_ts, max_wm, n_events, values = run.survey(ids)
    cmap = run.column_map(values)
    feature_types = {n: t for n, t in BASE_FEATURES.items()
                     if n != "monetary" or run.amount is not None}
    for d, mapping in cmap.items():
        for name in mapping.values():
            feature_types[name] = pa.float64() if run.dims[d][0] == "spend" else pa.int64()
    missing = [pa.field(n, t) for n, t in feature_types.items()
               if n not in run.cust_info.schema.names]
    missing += stamp_fields(run.cust_info, [STEP])

    # 3. recency is measured to as_of: given, else the newest event seen so far
    candidates = [t for t in (max_ts, _parse_iso(run.meta.get("as_of"))) if t is not None]
    as_of = cfg.as_of or (max(candidates) if candidates else dt.datetime.now(dt.UTC))
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=dt.UTC)
    run_no = int(run.meta.get("run", 0)) + 1

    # 4. the aggregate, streamed out in batches and staged; 5. what was consolidated: one commit
    step = _Creation(store, new_table) if new_table is not None else \
        store.transaction(cfg.customers)
    with step as tx:
        if missing:
            tx.add_columns(missing)
        # reads go to the committed table (run.cust_info); rows are written in tx's schema
        types = {f.name: f.type for f in tx.info.schema}
        run.con.register("_cust", run.customers(ids))
        sql, params = run.aggregate(ids, cmap)
        rel = run.con.sql(sql, params=params)
        assert rel is not None
        reader = rel.to_arrow_reader(cfg.write_rows)
        updated = inserted = skipped = customers = 0
        written: list[pa.Array] = []
        # the rows written are source changes: a new row_stamp, derived outputs stale; the
        # run's own stamp says the row is consolidated as it stands now
        stamp = new_stamp()
        touch = {c: v for c, v in source_touch(tx.info, stamp).items() if c != CONSOLIDATED}
        for batch in reader:
            if batch.num_rows == 0:
                continue
            customers += batch.num_rows
            exists = batch.column("_exists")
            rows = _finish(batch, as_of, run_no, types)
            rows = rows.append_column(CONSOLIDATED, pa.repeat(pa.scalar(stamp, pa.int64()),
                                                              rows.num_rows))
            written.append(rows.column(key).combine_chunks())
            old = rows.filter(exists)
            new = rows.filter(pc.invert(exists))
            if old.num_rows:
                tx.update(old, key=key, touch=touch)
                updated += old.num_rows
            if new.num_rows:
                if cfg.on_unknown == "error":
                    raise ConsolidationError(
                        f"{new.num_rows} customer id(s) in {cfg.events!r} have no row in "
                        f"{cfg.customers!r}, e.g. {key}={new.column(key)[0].as_py()!r} "
                        "(on_unknown='error')")
                if cfg.on_unknown == "skip":
                    skipped += new.num_rows
                else:
                    tx.write(new, mode="append", touch=touch)
                    inserted += new.num_rows

        prev_wm = run.meta.get("watermark")
        if isinstance(max_wm, dt.datetime):
            prev = _parse_iso(prev_wm) if prev_wm else None
            new_wm = _iso(max(max_wm, prev) if prev is not None else max_wm)
        else:
            new_wm = max_wm if prev_wm is None or max_wm is None else max(max_wm, prev_wm)
        meta: dict[str, Any] = {
            "run": run_no, "watermark_column": wm_col,
            "watermark": new_wm if new_wm is not None else prev_wm,
            "as_of": _iso(as_of), "columns": cmap, "config": run.chosen,
            "values": {c: list(m) for c, m in cmap.items()},
            "last_run": {"customers": customers, "updated": updated, "inserted": inserted,
                         "skipped": skipped, "events": int(n_events or 0),
                         "at": _iso(dt.datetime.now(dt.UTC))},
        }
        aging = 0
        if new_table is None:  # the other customers age to the new as_of in the same commit
            aging = _stage_aging(store, tx, run.cust_info, as_of, written)
            meta["aged_as_of"] = meta["as_of"]
        tx.set_metadata({METADATA_KEY: meta})
    return ConsolidationResult(
        customers=customers, updated=updated, inserted=inserted, skipped=skipped,
        events_scanned=int(n_events or 0), run=run_no, watermark=meta["watermark"],
        as_of=meta["as_of"],
        feature_columns=tuple(n for n in feature_types if n != "holdings"),
        notes=tuple(run.notes), aged=aging)


class _Creation:
    """The part of a transaction a consolidation uses, for the customers table it creates:
    columns, appended rows and metadata collected, then one ``create_table(data=...)`` on
    exit (nothing on an exception). Holds the new rows in memory until then."""

    def __init__(self, store: VectorStore, base: TableInfo) -> None:
        self.store, self.base = store, base
        self.fields: list[pa.Field] = []
        self.rows: list[pa.Table] = []
        self.patch: dict[str, Any] = {}

    @property
    def info(self) -> TableInfo:
        schema = pa.schema(list(self.base.schema) + self.fields)
        return TableInfo(self.base.name, schema, self.base.key, {}, dict(self.patch))

    def add_columns(self, fields: Sequence[pa.Field]) -> None:
        self.fields += [f.with_nullable(True) for f in fields]

    def write(self, data: pa.Table, *, mode: str, touch: dict[str, Any] | None = None) -> None:
        assert mode == "append"
        arrays = PendingWrite(mode, touch=dict(touch or {})).touch_arrays(self.info,
                                                                          data.num_rows)
        for c, arr in arrays.items():
            data = data.append_column(self.info.schema.field(c), arr)
        self.rows.append(data)

    def update(self, data: pa.Table, *, key: str, touch: dict[str, Any] | None = None) -> None:
        raise ConsolidationError(f"table {self.base.name!r} is being created: no row to "
                                 "update")  # pragma: no cover - every customer is new

    def set_metadata(self, updates: dict[str, Any]) -> None:
        self.patch.update(updates)

    def __enter__(self) -> _Creation:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is not None:
            return
        info = self.info
        batches = [b for t in self.rows for b in t.to_batches()]
        self.store.create_table(info.name, info.schema, key=info.key,
                                metadata=info.metadata or None, data=batches)


__all__ = ["BASE_FEATURES", "CONSOLIDATED", "DEFAULT_MAX_VALUES", "EXACT", "METADATA_KEY", "STEP",
           "TS_TYPE", "ConsolidationConfig", "ConsolidationResult", "age", "aged", "consolidate",
           "feature_name"]
