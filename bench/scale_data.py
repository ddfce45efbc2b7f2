"""The input files of ``bench.scale``, written by the bench itself (seeded).

The synthetic bank's generator (:func:`synthetic_bank.iter_blocks`) draws the customers
(attributes, a free-text note, the held products as a ``;``-separated string) and their card
transactions (event id, customer, timestamp, kind, category, amount, channel, product),
streamed block by block into ``fragments`` Parquet pieces per table: each piece is one
ingest (one load), and a load writes at least one Lance fragment, so the tables the later
steps read keep at least ``fragments`` fragments (the ingest writes a file of up to a
million rows as one fragment). Also written:

- the first ``text_customers`` customers again, in ``fragments`` pieces (the subset text
  embedding runs on);
- ``products.json`` (the catalogue the recommender needs);
- a day's change: ``day_customers.parquet`` (``changed`` of the customers, drawn at random,
  with their income raised 10%) and ``day_events.parquet`` (three new transactions each,
  on the day after the bank's window).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from synthetic_bank import END, PRODUCTS, iter_blocks
from synthetic_bank.model import (
    CATEGORIES,
    CUSTOMERS_CSV_SCHEMA,
    TRANSACTIONS_SCHEMA,
    TX_CHANNELS,
)

DAY_EVENTS_PER_CUSTOMER = 3


@dataclass
class BenchFiles:
    """Where the bench's inputs lie and how many rows each holds."""

    root: Path
    customers: list[Path] = field(default_factory=list)
    events: list[Path] = field(default_factory=list)
    text_customers: list[Path] = field(default_factory=list)
    products: Path | None = None
    day_customers: Path | None = None
    day_events: Path | None = None
    rows: dict[str, int] = field(default_factory=dict)


def _numbers(ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Customer numbers (0-based) of the generator's ``C00000001``-style ids."""
    return pc.cast(pc.utf8_slice_codeunits(ids, 1), pa.int64()).to_numpy() - 1


def _pieces(numbers: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, numbers, side="right") - 1


def write_inputs(root: str | Path, customers: int, fragments: int, *, text_customers: int,
                 changed: float = 0.01, events_per_customer: float = 4,
                 seed: int = 0) -> BenchFiles:
    """Write every input file of the bench under ``root`` (see the module docstring)."""
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    files = BenchFiles(root=out)
    edges = np.linspace(0, customers, fragments + 1).astype(np.int64)
    n_text = min(text_customers, customers)
    text_edges = np.linspace(0, n_text, min(fragments, max(1, n_text)) + 1).astype(np.int64)
    rng = np.random.default_rng((seed, 1))
    n_changed = max(1, round(customers * changed))
    chosen = np.sort(rng.choice(customers, n_changed, replace=False))

    def writers(prefix: str, n: int, schema: pa.Schema) -> list[pq.ParquetWriter]:
        return [pq.ParquetWriter(out / f"{prefix}_{i:03d}.parquet", schema) for i in range(n)]

    cw = writers("customers", fragments, CUSTOMERS_CSV_SCHEMA)
    ew = writers("events", fragments, TRANSACTIONS_SCHEMA)
    tw = writers("text_customers", len(text_edges) - 1, CUSTOMERS_CSV_SCHEMA)
    day_rows: list[pa.Table] = []
    counts = {"customers": 0, "events": 0, "text customers": 0}
    try:
        for cust, tx, _web, _truth in iter_blocks(customers, events_per_customer, seed):
            num = _numbers(cust.column("customer_id"))
            piece = _pieces(num, edges)
            for i in np.unique(piece):
                cw[i].write_table(cust.filter(pa.array(piece == i)))
            counts["customers"] += cust.num_rows
            in_text = num < n_text
            if in_text.any():
                tp = _pieces(num[in_text], text_edges)
                sub = cust.filter(pa.array(in_text))
                for i in np.unique(tp):
                    tw[i].write_table(sub.filter(pa.array(tp == i)))
                counts["text customers"] += sub.num_rows
            mine = np.isin(num, chosen)
            if mine.any():
                day_rows.append(cust.filter(pa.array(mine)))
            epiece = _pieces(_numbers(tx.column("customer_id")), edges)
            for i in np.unique(epiece):
                ew[i].write_table(tx.filter(pa.array(epiece == i)))
            counts["events"] += tx.num_rows
    finally:
        for w in itertools.chain(cw, ew, tw):
            w.close()
    files.customers = [Path(w.where) for w in cw]
    files.events = [Path(w.where) for w in ew]
    files.text_customers = [Path(w.where) for w in tw]
    files.products = out / "products.json"
    files.products.write_text("".join(json.dumps(p) + "\n" for p in PRODUCTS),
                              encoding="utf-8")
    day = pa.concat_tables(day_rows)
    files.day_customers, files.day_events = _write_day(out, day, rng)
    files.rows = {**counts, "changed customers": day.num_rows,
                  "day events": day.num_rows * DAY_EVENTS_PER_CUSTOMER}
    return files


def _write_day(out: Path, day: pa.Table, rng: np.random.Generator) -> tuple[Path, Path]:
    """The day's changed customers (income +10%) and their new transactions."""
    income = np.round(day.column("income").to_numpy() * 1.1).astype(np.int64)
    day = day.set_column(day.schema.get_field_index("income"), "income", pa.array(income))
    m = day.num_rows * DAY_EVENTS_PER_CUSTOMER
    start = int(END.timestamp())  # whole seconds, as the generator's events
    day_s = int(dt.timedelta(days=1).total_seconds())
    ts = np.sort(start + rng.integers(0, day_s, m)) * 1_000_000
    cust = day.column("customer_id").combine_chunks().take(
        pa.array(np.repeat(np.arange(day.num_rows), DAY_EVENTS_PER_CUSTOMER)))
    events = pa.table({
        "event_id": pa.array([f"D{i:012d}" for i in range(1, m + 1)], pa.string()),
        "customer_id": cust,
        "ts": pa.array(ts, pa.timestamp("us", "UTC")),
        "kind": pa.array(["transaction"] * m, pa.string()),
        "category": pa.array(np.array(CATEGORIES, dtype=object)[
            rng.integers(0, len(CATEGORIES), m)], pa.string()),
        "amount": np.round(rng.lognormal(3.5, 1.0, m), 2),
        "channel": pa.array(np.array(TX_CHANNELS, dtype=object)[
            rng.integers(0, len(TX_CHANNELS), m)], pa.string()),
        "product_id": pa.nulls(m, pa.string()),
    }, schema=TRANSACTIONS_SCHEMA)
    paths = out / "day_customers.parquet", out / "day_events.parquet"
    pq.write_table(day, paths[0])
    pq.write_table(events, paths[1])
    return paths
