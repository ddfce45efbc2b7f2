"""Loading a generated bank straight into a store (tests and benchmarks that need a bank in
a store fast; users load the files with ``kindred ingest``, which validates them)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ingest.datamodel import CUSTOMERS, EVENTS, KEYS, PRODUCTS

from .model import (
    CUSTOMERS_CSV_SCHEMA,
    CUSTOMERS_TABLE_SCHEMA,
    EVENTS_TABLE_SCHEMA,
    PRODUCTS_TABLE_SCHEMA,
    WEB_SCHEMA,
    GeneratedBank,
)

if TYPE_CHECKING:
    from vectorstore import VectorStore

# --------------------------------------------------------------------------- straight into a store

def split_products(products: pa.Array | pa.ChunkedArray, sep: str = ";") -> pa.Array:
    """``"a;b"`` strings -> list<string> (empty or null string -> empty list; blanks dropped)."""
    arr = products.combine_chunks() if isinstance(products, pa.ChunkedArray) else products
    parts = pc.split_pattern(pc.fill_null(arr, ""), sep)
    flat = pc.utf8_trim_whitespace(pc.list_flatten(parts))
    keep = pc.not_equal(flat, "")
    parent = pc.filter(pc.list_parent_indices(parts), keep).to_numpy()
    counts = np.bincount(parent, minlength=len(arr))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pc.filter(flat, keep))


def customers_to_table_rows(customers: pa.Table | pa.RecordBatch) -> pa.Table:
    """customers.csv rows -> ``customers`` table rows (``products`` split into ``holdings``)."""
    t = customers if isinstance(customers, pa.Table) else pa.Table.from_batches([customers])
    holdings = split_products(t.column("products"))
    t = t.drop_columns(["products"]).append_column("holdings", holdings)
    return t.select(CUSTOMERS_TABLE_SCHEMA.names).cast(CUSTOMERS_TABLE_SCHEMA)


def transactions_to_events(tx: pa.Table | pa.RecordBatch) -> pa.Table:
    t = tx if isinstance(tx, pa.Table) else pa.Table.from_batches([tx])
    return t.select(EVENTS_TABLE_SCHEMA.names).cast(EVENTS_TABLE_SCHEMA)


def web_to_events(web: pa.Table | pa.RecordBatch) -> pa.Table:
    """Web events -> ``events`` rows: the page is the category; no amount."""
    t = web if isinstance(web, pa.Table) else pa.Table.from_batches([web])
    return pa.table({
        "event_id": t.column("event_id"), "customer_id": t.column("customer_id"),
        "ts": pc.cast(t.column("ts"), pa.timestamp("us", "UTC")), "kind": t.column("kind"),
        "product_id": t.column("product_id"), "category": t.column("page"),
        "amount": pa.nulls(t.num_rows, pa.float64()), "channel": t.column("channel"),
    }, schema=EVENTS_TABLE_SCHEMA)


def read_products(path: str | Path) -> list[dict[str, str]]:
    """The products of a generated bank's ``products.json`` (JSON Lines)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _read_customers(path: Path, batch_size: int) -> Iterator[pa.RecordBatch]:
    convert = pacsv.ConvertOptions(column_types=CUSTOMERS_CSV_SCHEMA,
                                   strings_can_be_null=False, quoted_strings_can_be_null=False)
    read = pacsv.ReadOptions(block_size=1 << 22)
    with pacsv.open_csv(path, read_options=read, convert_options=convert) as reader:
        for b in reader:
            yield from customers_to_table_rows(b).to_batches(batch_size)


def _read_web(path: Path) -> Iterator[pa.RecordBatch]:
    import pyarrow.json as pajson

    schema = WEB_SCHEMA.set(WEB_SCHEMA.get_field_index("ts"), pa.field("ts", pa.string()))
    opts = pajson.ParseOptions(explicit_schema=schema)
    with pajson.open_json(path, read_options=pajson.ReadOptions(block_size=1 << 22),
                          parse_options=opts) as reader:
        for b in reader:
            ts = pc.strptime(b.column("ts"), format="%Y-%m-%dT%H:%M:%SZ", unit="us")
            t = pa.Table.from_batches([b])
            t = t.set_column(t.schema.get_field_index("ts"), "ts", pc.assume_timezone(ts, "UTC"))
            yield from web_to_events(t).to_batches()


def load_into_store(store: VectorStore, bank: GeneratedBank | str | Path, *,
                    replace: bool = True, batch_size: int = 65_536) -> dict[str, int]:
    """Create and fill ``customers``, ``events`` and ``products`` straight from a generated bank.

    A fast path for tests and demos that skips the mapping/validation pipeline: the files are
    known to be clean. ``replace`` drops existing tables of those names first; otherwise rows are
    appended to existing tables. Returns the row count written per table.
    """
    if not isinstance(bank, GeneratedBank):
        bank = GeneratedBank.open(bank)
    specs = {CUSTOMERS: (CUSTOMERS_TABLE_SCHEMA, KEYS[CUSTOMERS]),
             EVENTS: (EVENTS_TABLE_SCHEMA, KEYS[EVENTS]),
             PRODUCTS: (PRODUCTS_TABLE_SCHEMA, KEYS[PRODUCTS])}
    for name, (schema, key) in specs.items():
        if replace:
            store.drop_table(name, missing_ok=True)
        store.create_table(name, schema, key=key, exist_ok=not replace)

    def events() -> Iterator[pa.RecordBatch]:
        pf = pq.ParquetFile(bank.transactions)
        for b in pf.iter_batches(batch_size=batch_size):
            yield from transactions_to_events(b).to_batches()
        yield from _read_web(bank.web_events)

    products = pa.Table.from_pylist(read_products(bank.products), schema=PRODUCTS_TABLE_SCHEMA)
    written = {
        CUSTOMERS: store.write(CUSTOMERS, _read_customers(bank.customers, batch_size)).rows,
        EVENTS: store.write(EVENTS, events()).rows,
        PRODUCTS: store.write(PRODUCTS, products).rows,
    }
    return written
