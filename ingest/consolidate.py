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
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vectorstore import TableInfo, VectorStore, check_name
from vectorstore.filters import Cmp, Filter, In, IsNull, Not
from vectorstore.rows import values_equal
from vectorstore.txn import PendingWrite

from . import consolidate_parts as parts
from .errors import ConsolidationError
from .event_columns import choose_columns
from .freshness import AGING_FEATURES, new_stamp, source_touch, stamp_column, stamp_fields
from .runner import LOCAL, Runner, runner_for

TS_TYPE = pa.timestamp("us", "UTC")
BASE_FEATURES: dict[str, pa.DataType] = {
    "n_events": pa.int64(), "frequency": pa.float64(), "monetary": pa.float64(),
    "recency_days": pa.float64(), "first_seen": TS_TYPE, "last_seen": TS_TYPE,
    "holdings": pa.list_(pa.string()), "consolidation_run": pa.int64(),
}
METADATA_KEY = "consolidation"
EXACT = "DECIMAL(38, 10)"
"""Amounts are summed in this type: exact, so any order or split of the events gives the same
sums (a run on one machine and one on a cluster write the same features)."""
DEFAULT_MAX_VALUES = 200
STEP = "consolidation"
CONSOLIDATED = stamp_column(STEP)
"""``stamp_consolidation``: the row's stamp when consolidation last wrote it (a later source
write sets it to null, so the next run recomputes the customer)."""


@dataclass(frozen=True)
class ConsolidationConfig:
    """What to compute and where to find it.

    Only ``key`` and ``ts`` must be columns of the events table. ``amount`` names the amount
    column, ``categories`` the columns whose values give one feature each (``spend_<value>``,
    the sum of amounts, or ``count_<value>``, the number of events, when there is no amount)
    and ``channels`` the columns whose values give ``count_<value>`` features. Left as None,
    each is what the previous run used when it was given explicitly, else ``amount``,
    ``category`` and ``channel`` when the events table has them; the features of an absent
    column are skipped and said so in :attr:`ConsolidationResult.notes`.

    ``spend`` / ``count`` (advanced; they override ``categories`` / ``channels``) map an events
    column to the prefix of the features built from its values (``{"category": "spend"}``
    gives ``spend_groceries``...). ``values`` fixes the values of a dimension (others are
    ignored); by default every value seen becomes a column, up to ``max_values`` per
    dimension (the most frequent first; later values beyond the limit get no column).
    """

    customers: str = "customers"
    events: str = "events"
    key: str = "customer_id"
    amount: str | None = None
    categories: Sequence[str] | None = None
    channels: Sequence[str] | None = None
    spend: dict[str, str] | None = None
    count: dict[str, str] | None = None
    values: dict[str, Sequence[str]] = field(default_factory=dict)
    max_values: int | None = None
    """None: what an earlier run was given, else 200."""
    holding_kinds: tuple[str, ...] = ("transaction", "purchase")
    watermark_column: str = "ts"
    as_of: dt.datetime | None = None
    on_unknown: Literal["insert", "skip", "error"] = "insert"
    in_filter_limit: int = 2_000
    """Up to this many customers are read with an ``IN`` filter; more with one full scan."""
    write_rows: int = 100_000
    """Rows per aggregate batch staged."""


@dataclass(frozen=True)
class ConsolidationResult:
    customers: int
    """Customers whose features were recomputed."""
    updated: int
    inserted: int
    skipped: int
    events_scanned: int
    run: int
    watermark: str | None
    as_of: str | None
    feature_columns: tuple[str, ...]
    notes: tuple[str, ...] = ()
    """Features skipped and why (a column the events table lacks, values beyond the limit)."""
    created_table: bool = False
    """The customers table did not exist and was created from the events."""
    aged: int = 0
    """Rows whose ``recency_days``/``frequency`` moved to a later ``as_of`` (:func:`age`)."""


def feature_name(prefix: str, value: str) -> str:
    """``prefix`` + ``_`` + ``value`` made a plain identifier (lower case, ``_`` separators)."""
    slug = re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_") or "unknown"
    return check_name(f"{prefix}_{slug}", "feature column name")


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.UTC).isoformat()


def _parse_iso(s: str | None) -> dt.datetime | None:
    return None if s is None else dt.datetime.fromisoformat(s).astimezone(dt.UTC)


def _from_us(us: int | None) -> dt.datetime | None:
    if us is None:
        return None
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(us))


def _reader(batches: Iterator[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatchReader:
    def gen() -> Iterator[pa.RecordBatch]:
        for b in batches:
            yield b.cast(schema) if b.schema != schema else b
    return pa.RecordBatchReader.from_batches(schema, gen())


class _Run:
    """One consolidation run: the plan (columns, customers) and the DuckDB work."""

    def __init__(self, store: VectorStore, cfg: ConsolidationConfig,
                 new_table: TableInfo | None = None, runner: Runner | None = None) -> None:
        import duckdb

        self.store, self.cfg = store, cfg
        self.runner = runner or LOCAL
        self.events_info = store.table_info(cfg.events)
        self.new_table = new_table is not None
        self.cust_info = new_table or store.table_info(cfg.customers)
        ev_cols = set(self.events_info.schema.names)
        for needed in (cfg.key, "ts", cfg.watermark_column):
            if needed not in ev_cols:
                raise ConsolidationError(
                    f"table {cfg.events!r} has no column {needed!r}; columns: {sorted(ev_cols)}")
        if cfg.key not in self.cust_info.schema.names:
            raise ConsolidationError(f"table {cfg.customers!r} has no key column {cfg.key!r}")
        self.meta: dict[str, Any] = dict(self.cust_info.metadata.get(METADATA_KEY) or {})
        chosen = choose_columns(ev_cols, cfg.events, amount=cfg.amount,
                                categories=cfg.categories, channels=cfg.channels,
                                spend=cfg.spend, count=cfg.count,
                                remembered=self.meta.get("config"))
        self.amount, self.notes, self.chosen = chosen.amount, chosen.notes, chosen.remember
        if cfg.max_values is not None:
            self.chosen["max_values"] = int(cfg.max_values)
        self.max_values = int(self.chosen.get("max_values", DEFAULT_MAX_VALUES))
        spend, count = chosen.spend, chosen.count
        self.has = {c: c in ev_cols for c in ("kind", "product_id")}
        if not self.has["product_id"]:
            self.notes.append("holdings from events (no 'product_id' column)")
        # (kind, column, prefix); "spend:category" names the dimension in metadata
        self.dims = {f"spend:{c}": ("spend", c, p) for c, p in spend.items()}
        self.dims |= {f"count:{c}": ("count", c, p) for c, p in count.items()}
        self.ev_columns = sorted({cfg.key, "ts", cfg.watermark_column,
                                  *(c for _, c, _ in self.dims.values()),
                                  *([self.amount] if self.amount else []),
                                  *(c for c, ok in self.has.items() if ok)})
        self.con = duckdb.connect()
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute("SET enable_progress_bar = false")

    # -------------------------------------------------------------- event streams
    def events(self, ids: pa.Array | None) -> pa.RecordBatchReader:
        schema = pa.schema([self.events_info.schema.field(c) for c in self.ev_columns])
        if ids is not None and len(ids) <= self.cfg.in_filter_limit:
            f = In(self.cfg.key, tuple(ids.to_pylist()))
            return _reader(self.store.scan(self.cfg.events, columns=self.ev_columns, filter=f),
                           schema)
        return _reader(self.store.scan(self.cfg.events, columns=self.ev_columns), schema)

    def customers(self, ids: pa.Array | None) -> pa.RecordBatchReader:
        cols = [self.cfg.key] + (["holdings"] if "holdings" in self.cust_info.schema.names else [])
        schema = pa.schema([self.cust_info.schema.field(c) for c in cols])
        if self.new_table:  # the table this run creates: no customers yet
            return _reader(iter(()), schema)
        f = None
        if ids is not None and len(ids) <= self.cfg.in_filter_limit:
            f = In(self.cfg.key, tuple(ids.to_pylist()))
        return _reader(self.store.scan(self.cfg.customers, columns=cols, filter=f), schema)

    # -------------------------------------------------------------- planning
    def changed_rows(self) -> pa.Array:
        """Ids of the consolidated customers whose row changed since (a source write set
        their consolidation stamp to null)."""
        names = self.cust_info.schema.names
        if "consolidation_run" not in names:
            return pa.array([], pa.string())
        f: Filter = Not(IsNull("consolidation_run"))
        if CONSOLIDATED in names:
            f = f & IsNull(CONSOLIDATED)
        ids = [b.column(0) for b in self.store.scan(self.cfg.customers, columns=[self.cfg.key],
                                                    filter=f, batch_size=262_144)]
        return pc.cast(pa.concat_arrays(ids), pa.string()) if ids else pa.array([], pa.string())

    def touched(self) -> pa.Array:
        """Ids of the customers with events past the stored watermark."""
        wm_col = self.cfg.watermark_column
        wm: Any = self.meta["watermark"]
        if pa.types.is_timestamp(self.events_info.schema.field(wm_col).type):
            wm = _parse_iso(wm)
        cols = [self.cfg.key, wm_col]
        schema = pa.schema([self.events_info.schema.field(c) for c in cols])
        if self.runner.distributed:
            rows = parts.run_rows(self.runner, self.store, self.cfg.events, self._work(
                cols, None, f'SELECT DISTINCT "{self.cfg.key}" FROM _ev WHERE "{wm_col}" > $1',
                [wm]))
            keys = sorted({r[0] for r in rows})
            return pa.array(keys, self.events_info.schema.field(self.cfg.key).type)
        new = _reader(self.store.scan(self.cfg.events, columns=cols,
                                      filter=Cmp(wm_col, ">", wm)), schema)
        self.con.register("_new", new)
        ids = self.con.sql(f'SELECT DISTINCT "{self.cfg.key}" AS k FROM _new ORDER BY k')
        assert ids is not None
        return ids.to_arrow_table().column("k").combine_chunks()

    def source(self, ids: pa.Array | None) -> str:
        """Register the events of ``ids`` (all when None) as ``_ev``; the SQL to read them."""
        self.con.register("_ev", self.events(ids))
        if ids is None:
            return "_ev"
        return f'(SELECT * FROM _ev WHERE "{self.cfg.key}" IN (SELECT k FROM _ids))'

    def survey(self, ids: pa.Array | None) -> tuple[Any, Any, int, dict[str, list[str]]]:
        """One pass: newest ts, newest watermark value, event count, values per dimension."""
        dims = [d for d, (_, c, _) in self.dims.items() if c not in self.cfg.values]
        lists = ""
        for d in dims:
            kind, c, _ = self.dims[d]
            # spend columns only for values that carry amounts
            extra = f' AND "{self.amount}" IS NOT NULL' if kind == "spend" else ""
            lists += (f', histogram(CAST("{c}" AS VARCHAR)) '
                      f'FILTER (WHERE "{c}" IS NOT NULL{extra})')
        wm_col = self.cfg.watermark_column
        wm_is_ts = pa.types.is_timestamp(self.events_info.schema.field(wm_col).type)
        wm_sql = f'epoch_us(max("{wm_col}"))' if wm_is_ts else f'max("{wm_col}")'
        # timestamps leave DuckDB as epoch microseconds (no timezone library needed)
        sql = "SELECT epoch_us(max(ts)), {}, count(*){} FROM {}"
        if self.runner.distributed:
            row = _merge_surveys(parts.run_rows(self.runner, self.store, self.cfg.events,
                                                self._work(self.ev_columns, ids,
                                                           sql.format(wm_sql, lists, "_ev"))))
        else:
            row = self.con.execute(sql.format(wm_sql, lists, self.source(ids))).fetchall()[0]
        row = (_from_us(row[0]), _from_us(row[1]) if wm_is_ts else row[1], *row[2:])
        known = self.meta.get("values") or {}
        values: dict[str, list[str]] = {}
        for d, (_, col, _) in self.dims.items():
            if col in self.cfg.values:
                values[d] = [str(v) for v in self.cfg.values[col]]
                continue
            counts: dict[str, int] = row[3 + dims.index(d)] or {}
            vals = list(known.get(d, []))
            new = sorted(set(counts) - set(vals), key=lambda v: (-counts[v], v))
            room = max(self.max_values - len(vals), 0)
            if len(new) > room:
                self.notes.append(f"{col}: columns for {len(vals) + room} of "
                                  f"{len(vals) + len(new)} values (max_values; the most "
                                  "frequent first)")
            values[d] = vals + sorted(new[:room])
        return row[0], row[1], int(row[2]), values

    def column_map(self, values: dict[str, list[str]]) -> dict[str, dict[str, str]]:
        """dimension -> value -> feature column, stable across runs (kept in metadata)."""
        old = self.meta.get("columns") or {}
        taken = set(self.cust_info.schema.names) - {n for m in old.values() for n in m.values()}
        taken |= set(BASE_FEATURES)
        out: dict[str, dict[str, str]] = {}
        for d, vals in values.items():
            prefix = self.dims[d][2]
            mapping = dict(old.get(d, {}))
            used = {n for m in out.values() for n in m.values()} | set(mapping.values()) | taken
            for v in vals:
                if v in mapping:
                    continue
                name, i = feature_name(prefix, v), 2
                while name in used:
                    name, i = f"{feature_name(prefix, v)}_{i}", i + 1
                mapping[v] = name
                used.add(name)
            out[d] = mapping
        return out

    # -------------------------------------------------------------- the aggregate
    def holding_kinds(self) -> list[str]:
        """The configured kinds plus those the events' ingest mappings declared
        (``holdings.from_events``, kept in the events table's metadata)."""
        declared = self.events_info.metadata.get("holding_kinds") or []
        kinds = list(self.cfg.holding_kinds)
        return kinds + [k for k in declared if k not in kinds]

    def partial_select(self, cmap: dict[str, dict[str, str]]) -> tuple[list[str], list[Any]]:
        """The per-customer aggregates of any slice of the events (SELECT items and their
        bound parameters). Amounts are summed as DECIMAL(38, 10), exactly, so the sums of
        any split of the events add up to the same features (:func:`reduce_select`)."""
        key = self.cfg.key
        params: list[Any] = []

        def p(v: Any) -> str:
            params.append(v)
            return f"${len(params)}"

        sel = [f'"{key}" AS "{key}"', "count(*) AS n_events",
               "min(ts) AS first_seen", "max(ts) AS last_seen"]
        if self.amount:
            sel.append(f'sum(CAST("{self.amount}" AS {EXACT})) AS monetary')
        if self.has["product_id"]:
            cond = '"product_id" IS NOT NULL'
            if self.has["kind"]:
                cond += f' AND list_contains({p(self.holding_kinds())}, "kind")'
            sel.append(f'list(DISTINCT "product_id") FILTER (WHERE {cond}) AS ev_holdings')
        else:
            sel.append("NULL::VARCHAR[] AS ev_holdings")
        for d, mapping in cmap.items():
            kind, col, _ = self.dims[d]
            for value, name in mapping.items():
                check_name(name, "feature column name")
                where = f'CAST("{col}" AS VARCHAR) = {p(value)}'
                if kind == "spend":
                    sel.append(f'sum(CAST("{self.amount}" AS {EXACT})) FILTER (WHERE {where}) '
                               f'AS "{name}"')
                else:
                    sel.append(f'count(*) FILTER (WHERE {where}) AS "{name}"')
        return sel, params

    def reduce_select(self, cmap: dict[str, dict[str, str]]) -> list[str]:
        """SELECT items combining partial aggregates (:meth:`partial_select`) per customer."""
        sel = [f'"{self.cfg.key}" AS "{self.cfg.key}"', "sum(n_events) AS n_events",
               "min(first_seen) AS first_seen", "max(last_seen) AS last_seen"]
        if self.amount:
            sel.append("sum(monetary) AS monetary")
        sel.append("list_distinct(flatten(list(ev_holdings) FILTER "
                   "(WHERE ev_holdings IS NOT NULL))) AS ev_holdings")
        for mapping in cmap.values():
            for name in mapping.values():
                sel.append(f'sum("{name}") AS "{name}"')
        return sel

    def final_sql(self, agg: str, cmap: dict[str, dict[str, str]]) -> str:
        """The feature rows from complete aggregates ``agg`` (a subquery or relation), joined
        with the customers' stored holdings, ordered by key."""
        key = self.cfg.key
        out = [f'a."{key}" AS "{key}"', "a.n_events::BIGINT AS n_events",
               "a.first_seen AS first_seen", "a.last_seen AS last_seen"]
        if self.amount:
            out.append("coalesce(a.monetary, 0)::DOUBLE AS monetary")
        out.append("a.ev_holdings AS ev_holdings")
        for d, mapping in cmap.items():
            spend = self.dims[d][0] == "spend"
            for name in mapping.values():
                out.append(f'coalesce(a."{name}", 0)::{"DOUBLE" if spend else "BIGINT"} '
                           f'AS "{name}"')
        cust_hold = "c.holdings" if "holdings" in self.cust_info.schema.names else "NULL"
        return (
            f"SELECT {', '.join(out)}, c.\"{key}\" IS NOT NULL AS _exists, "
            f"list_sort(list_distinct(list_concat(coalesce({cust_hold}, []::VARCHAR[]), "
            f"coalesce(a.ev_holdings, []::VARCHAR[])))) AS holdings "
            f"FROM {agg} a LEFT JOIN _cust c ON a.\"{key}\" = c.\"{key}\" "
            f"ORDER BY a.\"{key}\""
        )

    def _work(self, columns: list[str], ids: pa.Array | None, sql: str,
              params: list[Any] | None = None, buckets: int = 1) -> parts.EventsWork:
        schema = pa.schema([self.events_info.schema.field(c) for c in columns])
        return parts.EventsWork(columns, schema, self.cfg.key, ids, sql, params or [], buckets)

    def aggregate(self, ids: pa.Array | None, cmap: dict[str, dict[str, str]]
                  ) -> tuple[str, list[Any]]:
        """The feature rows' SQL: one pass over the events of ``ids`` (all when None), or on
        a distributed runner a map-reduce on the workers whose per-customer results are
        registered here as ``_agg`` (:mod:`ingest.consolidate_parts`)."""
        sel, params = self.partial_select(cmap)
        key = self.cfg.key
        if self.runner.distributed:
            partial = self._work(self.ev_columns, ids, f"SELECT {', '.join(sel)} FROM _ev "
                                 f'GROUP BY "{key}"', params,
                                 buckets=max(1, self.runner.parallelism))
            agg = parts.run_aggregate(self.runner, self.store, self.cfg.events, partial,
                                      f"SELECT {', '.join(self.reduce_select(cmap))} FROM _p "
                                      f'GROUP BY "{key}"')
            if agg.num_columns == 0:  # no events partition: the local pass says the same
                agg = self.con.execute(f"SELECT {', '.join(sel)} FROM {self.source(ids)} "
                                       f'GROUP BY "{key}"', params).to_arrow_table()
            self.con.register("_agg", agg)
            return self.final_sql("_agg", cmap), []
        src = self.source(ids)
        agg = f"(SELECT {', '.join(sel)} FROM {src} GROUP BY \"{self.cfg.key}\")"
        return self.final_sql(agg, cmap), params


def _merge_surveys(rows: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    """One survey row from the partitions' rows: maxima, summed counts and histograms."""
    if not rows:
        return (None, None, 0)
    width = len(rows[0])
    out: list[Any] = []
    for i in range(width):
        vals = [r[i] for r in rows]
        if i < 2:
            present = [v for v in vals if v is not None]
            out.append(max(present) if present else None)
        elif i == 2:
            out.append(sum(int(v or 0) for v in vals))
        else:
            merged: dict[str, int] = {}
            for h in vals:
                for k, n in (h or {}).items():
                    merged[k] = merged.get(k, 0) + int(n)
            out.append(merged or None)
    return tuple(out)


def aged(last_seen: Any, first_seen: Any, n_events: Any, as_of: dt.datetime
         ) -> tuple[pa.Array, pa.Array]:
    """``recency_days`` and ``frequency`` of customers measured to ``as_of`` (null where the
    customer has no events): the features that age with time."""
    last = pc.cast(last_seen, TS_TYPE).to_numpy(zero_copy_only=False).astype("datetime64[us]")
    first = pc.cast(first_seen, TS_TYPE).to_numpy(zero_copy_only=False).astype("datetime64[us]")
    ref = np.datetime64(as_of.astimezone(dt.UTC).replace(tzinfo=None), "us")
    day = np.timedelta64(86_400_000_000, "us")
    recency = (ref - last) / day
    span = np.maximum((ref - first) / day, 1.0)
    n = pc.cast(n_events, pa.float64()).to_numpy(zero_copy_only=False)
    freq = n / span * 30.0
    return (pa.array(recency, pa.float64(), from_pandas=True),
            pa.array(freq, pa.float64(), from_pandas=True))


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


def age(store: VectorStore, cfg: ConsolidationConfig | None = None) -> int:
    """Bring ``recency_days`` and ``frequency`` of every customer to the consolidation's
    ``as_of`` (they are measured to it, so they change as it moves even for customers without
    new events); returns the rows rewritten. One commit, positional (only the rows whose
    values change are written); source stamps are not touched: derived outputs leave these
    features out by default (:mod:`ingest.freshness`). Nothing is written when the table is
    already aged to ``as_of``."""
    cfg = cfg or ConsolidationConfig()
    if not store.has_table(cfg.customers):
        return 0
    info = store.table_info(cfg.customers)
    meta = info.metadata.get(METADATA_KEY) or {}
    as_of = _parse_iso(meta.get("as_of"))
    needed = ("last_seen", "first_seen", "n_events", *AGING_FEATURES)
    if as_of is None or meta.get("aged_as_of") == meta.get("as_of") or \
            any(c not in info.schema.names for c in needed):
        return 0
    assert info.key is not None  # consolidated customers are keyed
    written = 0
    with store.transaction(cfg.customers) as tx:
        for part in tx.partitions():
            if not part.rows:
                continue
            t = pa.concat_tables(pa.Table.from_batches([b]) for b in tx.scan(
                part, columns=[info.key, *needed], batch_size=262_144))
            recency, frequency = aged(t.column("last_seen"), t.column("first_seen"),
                                      t.column("n_events"), as_of)
            same = values_equal(recency, t.column("recency_days").combine_chunks()) & \
                values_equal(frequency, t.column("frequency").combine_chunks())
            rows = np.flatnonzero(~same)
            if len(rows):
                take = pa.array(rows)
                tx.stage(part, pa.table({info.key: t.column(info.key).take(take),
                                         "recency_days": recency.take(take),
                                         "frequency": frequency.take(take)}), rows=rows)
                written += len(rows)
        tx.set_metadata({(METADATA_KEY, "aged_as_of"): meta.get("as_of")})
    return written


def _stage_aging(store: VectorStore, tx: Any, info: TableInfo, as_of: dt.datetime,
                 written: list[pa.Array]) -> int:
    """Stage, keyed, ``recency_days``/``frequency`` at ``as_of`` for the customers this
    consolidation does not rewrite and whose values change; returns how many."""
    assert info.key is not None  # the customers table is keyed
    needed = ("last_seen", "first_seen", "n_events", *AGING_FEATURES)
    if any(c not in info.schema.names for c in needed):
        return 0
    done = pa.concat_arrays([pc.cast(a, info.schema.field(info.key).type) for a in written]) \
        if written else pa.array([], info.schema.field(info.key).type)
    staged = 0
    for batch in store.scan(info.name, columns=[info.key, *needed], batch_size=262_144):
        recency, frequency = aged(batch.column("last_seen"), batch.column("first_seen"),
                                  batch.column("n_events"), as_of)
        same = values_equal(recency, batch.column("recency_days")) & \
            values_equal(frequency, batch.column("frequency"))
        keep = pc.and_(pa.array(~same), pc.invert(pc.is_in(batch.column(info.key), done)))
        if not pc.any(keep).as_py():
            continue
        tx.update(pa.table({info.key: batch.column(info.key), "recency_days": recency,
                            "frequency": frequency}).filter(keep), key=info.key)
        staged += int(pc.sum(keep).as_py())
    return staged


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


__all__ = ["ConsolidationConfig", "ConsolidationResult", "age", "aged", "consolidate",
           "feature_name"]
