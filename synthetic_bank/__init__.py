"""A realistic, deterministic synthetic bank, and the demo that runs Kindred on it.

Outside ``ingest`` on purpose: it is a fixture for demos, tests and benchmarks, not a way
data enters Kindred (users load its files with ``kindred ingest`` like any others).

- :mod:`synthetic_bank.model`: products, segments, behaviour parameters, schemas,
  :class:`GeneratedBank`;
- :mod:`synthetic_bank.generator`: ``generate(out_dir, n_customers, ...)`` writes day 1;
- :mod:`synthetic_bank.days`: ``generate_day(bank_dir, day)`` writes a later day;
- :mod:`synthetic_bank.load`: ``load_into_store`` (straight into a store, for tests);
- :mod:`synthetic_bank.demo`: ``kindred demo`` / ``make demo`` (imports :mod:`services`).
"""

from __future__ import annotations

from .generator import generate, iter_blocks
from .load import (
    customers_to_table_rows,
    load_into_store,
    read_products,
    split_products,
    transactions_to_events,
    web_to_events,
)
from .model import (
    ANOMALY_KINDS,
    ANOMALY_RATE,
    BLOCK,
    CATEGORIES,
    CUSTOMERS_CSV_SCHEMA,
    CUSTOMERS_TABLE_SCHEMA,
    END,
    EVENTS_TABLE_SCHEMA,
    FILES,
    PAGES,
    PRODUCT_IDS,
    PRODUCTS,
    PRODUCTS_TABLE_SCHEMA,
    REGIONS,
    RISKY_CATEGORIES,
    SEGMENTS,
    TRANSACTIONS_SCHEMA,
    TRUTH_SCHEMA,
    WEB_SCHEMA,
    WINDOW_DAYS,
    GeneratedBank,
)

__all__ = [
    "ANOMALY_KINDS", "ANOMALY_RATE", "BLOCK", "CATEGORIES", "CUSTOMERS_CSV_SCHEMA",
    "CUSTOMERS_TABLE_SCHEMA", "END", "EVENTS_TABLE_SCHEMA", "FILES", "PAGES", "PRODUCTS",
    "PRODUCTS_TABLE_SCHEMA", "PRODUCT_IDS", "REGIONS", "RISKY_CATEGORIES", "SEGMENTS",
    "TRANSACTIONS_SCHEMA", "TRUTH_SCHEMA", "WEB_SCHEMA", "WINDOW_DAYS", "GeneratedBank",
    "customers_to_table_rows", "generate", "iter_blocks", "load_into_store", "read_products",
    "split_products", "transactions_to_events", "web_to_events",
]
