"""One consolidation run's plan and DuckDB work (:class:`_Run`): the customers to recompute,
the survey of dimension values, the column map and the SQL of the aggregate, locally or per
events partition (:mod:`ingest.consolidate_parts`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vectorstore import TableInfo, VectorStore, check_name
from vectorstore.filters import Cmp, Filter, In, IsNull, Not

from . import consolidate_parts as parts
from .consolidate_config import (
    BASE_FEATURES,
    CONSOLIDATED,
    DEFAULT_MAX_VALUES,
    EXACT,
    METADATA_KEY,
    ConsolidationConfig,
    _from_us,
    _parse_iso,
    feature_name,
)
from .errors import ConsolidationError
from .event_columns import choose_columns
from .runner import LOCAL, Runner


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
