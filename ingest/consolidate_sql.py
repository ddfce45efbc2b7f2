"""What a consolidation run computes and the SQL that computes it.

The feature columns (:data:`BASE_FEATURES`, ``spend_<value>`` / ``count_<value>`` names from
:func:`feature_name`) and :class:`_Run`: one run's DuckDB connection, its event and customer
streams, the survey of the events (newest timestamps, values per dimension), the stable map
of values to feature columns, and the one aggregate statement that computes every feature
in a single pass. Values reach DuckDB only as bound parameters. :mod:`ingest.consolidate`
drives a run and writes its result in one transaction.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from vectorstore import TableInfo, VectorStore, check_name
from vectorstore.filters import Cmp, In, IsNull, Not

from .errors import ConsolidationError
from .event_columns import choose_columns
from .freshness import stamp_column

if TYPE_CHECKING:
    from .consolidate import ConsolidationConfig


TS_TYPE = pa.timestamp("us", "UTC")
BASE_FEATURES: dict[str, pa.DataType] = {
    "n_events": pa.int64(), "frequency": pa.float64(), "monetary": pa.float64(),
    "recency_days": pa.float64(), "first_seen": TS_TYPE, "last_seen": TS_TYPE,
    "holdings": pa.list_(pa.string()), "consolidation_run": pa.int64(),
}
METADATA_KEY = "consolidation"
DEFAULT_MAX_VALUES = 200
STEP = "consolidation"
CONSOLIDATED = stamp_column(STEP)
"""``stamp_consolidation``: the row's stamp when consolidation last wrote it (a later source
write sets it to null, so the next run recomputes the customer)."""


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
                 new_table: TableInfo | None = None) -> None:
        import duckdb

        self.store, self.cfg = store, cfg
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
        f = Not(IsNull("consolidation_run"))
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
        src = self.source(ids)
        wm_col = self.cfg.watermark_column
        wm_is_ts = pa.types.is_timestamp(self.events_info.schema.field(wm_col).type)
        wm_sql = f'epoch_us(max("{wm_col}"))' if wm_is_ts else f'max("{wm_col}")'
        # timestamps leave DuckDB as epoch microseconds (no timezone library needed)
        row = self.con.execute(
            f"SELECT epoch_us(max(ts)), {wm_sql}, count(*){lists} FROM {src}").fetchall()[0]
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

    def aggregate(self, ids: pa.Array | None, cmap: dict[str, dict[str, str]]
                  ) -> tuple[str, list[Any]]:
        key = self.cfg.key
        params: list[Any] = []

        def p(v: Any) -> str:
            params.append(v)
            return f"${len(params)}"

        sel = [f'"{key}" AS "{key}"', "count(*) AS n_events",
               "min(ts) AS first_seen", "max(ts) AS last_seen"]
        if self.amount:
            sel.append(f'coalesce(sum("{self.amount}"), 0)::DOUBLE AS monetary')
        if self.has["product_id"]:
            cond = '"product_id" IS NOT NULL'
            if self.has["kind"]:
                cond += f' AND list_contains({p(self.holding_kinds())}, "kind")'
            sel.append(f'list(DISTINCT "product_id") FILTER (WHERE {cond}) AS ev_holdings')
        else:
            sel.append("NULL::VARCHAR[] AS ev_holdings")
        for d, mapping in cmap.items():
            kind, col, _ = self.dims[d]
            spend = kind == "spend"
            for value, name in mapping.items():
                check_name(name, "feature column name")
                where = f'CAST("{col}" AS VARCHAR) = {p(value)}'
                if spend:
                    sel.append(f'coalesce(sum("{self.amount}") FILTER (WHERE {where}), 0)'
                               f'::DOUBLE AS "{name}"')
                else:
                    sel.append(f'count(*) FILTER (WHERE {where}) AS "{name}"')
        src = self.source(ids)
        agg = f"SELECT {', '.join(sel)} FROM {src} GROUP BY \"{key}\""
        cust_hold = "c.holdings" if "holdings" in self.cust_info.schema.names else "NULL"
        sql = (
            f"SELECT a.*, c.\"{key}\" IS NOT NULL AS _exists, "
            f"list_sort(list_distinct(list_concat(coalesce({cust_hold}, []::VARCHAR[]), "
            f"coalesce(a.ev_holdings, []::VARCHAR[])))) AS holdings "
            f"FROM ({agg}) a LEFT JOIN _cust c ON a.\"{key}\" = c.\"{key}\" "
            f"ORDER BY a.\"{key}\""
        )
        return sql, params
