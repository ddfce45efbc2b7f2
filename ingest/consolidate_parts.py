"""Consolidation on a distributed runner: the events read and aggregated where they are.

The local run is one DuckDB pass over a stream of all the events (:mod:`ingest.consolidate`).
On a distributed runner the same SQL runs per events partition (a Lance fragment) on the
workers, in three passes:

- *touched*: the customers with events past the watermark (distinct keys per partition,
  united on the driver);
- *survey*: newest time and watermark, event count and the values of each dimension (a
  histogram per partition, summed on the driver);
- *aggregate*: a map-reduce grouped by customer. Each partition's partial aggregates
  (:meth:`_Run.partial_select`: counts, min/max times, exact DECIMAL sums, distinct held
  products) are split into hash buckets of the customer id; one reduce task per bucket
  combines a customer's partials (:meth:`_Run.reduce_select`), so each customer's row is
  complete in exactly one bucket, and the driver only receives one row per customer.

Sums are exact and the other aggregates do not depend on order, so the features are the
same as the local run's, bit for bit; the driver then joins the stored holdings and writes
the rows by key exactly as the local run does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vectorstore import Partition, VectorStore

from .runner import Runner, TaskContext


@dataclass
class EventsWork:
    """The broadcast state of one pass over the events partitions."""

    columns: list[str]
    schema: pa.Schema
    key: str
    ids: pa.Array | None
    """Only these customers' events (None: every event)."""
    sql: str
    """SQL over ``_ev`` (the partition's events, filtered to ``ids``)."""
    params: list[Any]
    buckets: int = 1


def _connect() -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    return con


def _events(ctx: TaskContext, part: Partition, w: EventsWork) -> Any:
    """A DuckDB connection with the partition's events registered as ``_ev``."""
    assert ctx.store is not None
    batches = ctx.store.scan_partition(part, columns=w.columns)

    def cast() -> Iterator[pa.RecordBatch]:
        for b in batches:
            yield b.cast(w.schema) if b.schema != w.schema else b

    con = _connect()
    con.register("_raw", pa.RecordBatchReader.from_batches(w.schema, cast()))
    if w.ids is None:
        con.execute("CREATE VIEW _ev AS SELECT * FROM _raw")
    else:
        con.register("_ids", pa.table({"k": w.ids}))
        con.execute(f'CREATE VIEW _ev AS SELECT * FROM _raw WHERE "{w.key}" IN '
                    "(SELECT k FROM _ids)")
    return con


def rows_of_partition(ctx: TaskContext, part: Partition) -> list[tuple[Any, ...]]:
    """The rows ``sql`` gives on one partition's events (the touched and survey passes)."""
    w: EventsWork = ctx.shared
    return _events(ctx, part, w).execute(w.sql, w.params).fetchall()


def partial_of_partition(ctx: TaskContext, part: Partition) -> list[pa.Table]:
    """One partition's partial aggregates per customer, split into ``buckets`` tables by a
    hash of the customer id."""
    w: EventsWork = ctx.shared
    con = _events(ctx, part, w)
    t = con.execute(f'SELECT *, hash("{w.key}") % {int(w.buckets)} AS _bucket FROM ({w.sql})',
                    w.params).to_arrow_table()
    bucket = t.column("_bucket")
    t = t.drop_columns(["_bucket"])
    return [t.filter(pc.equal(bucket, b)) for b in range(w.buckets)]


def reduce_bucket(ctx: TaskContext, partials: list[pa.Table]) -> pa.Table:
    """Every customer of one bucket with its partials combined (``sql`` over ``_p``)."""
    w: EventsWork = ctx.shared
    con = _connect()
    con.register("_p", pa.concat_tables(partials, promote_options="permissive"))
    return con.execute(w.sql, w.params).to_arrow_table()


def run_rows(runner: Runner, store: VectorStore, events: str, work: EventsWork
             ) -> list[tuple[Any, ...]]:
    """:func:`rows_of_partition` over every events partition, rows concatenated."""
    parts = [p for p in store.partitions(events) if p.rows]
    return [r for rows in runner.map(rows_of_partition, parts, shared=work, store=store)
            for r in rows]


def run_aggregate(runner: Runner, store: VectorStore, events: str, partial: EventsWork,
                  reduce_sql: str) -> pa.Table:
    """The map-reduce of the aggregate pass: one row per customer with events."""
    parts = [p for p in store.partitions(events) if p.rows]
    reduce = EventsWork(partial.columns, partial.schema, partial.key, None, reduce_sql, [],
                        partial.buckets)
    tables = list(runner.map_reduce(partial_of_partition, parts, reduce_bucket,
                                    buckets=partial.buckets, shared=partial,
                                    reduce_shared=reduce, store=store))
    return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({})
