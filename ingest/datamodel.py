"""One home for Kindred's data model: the table names, their keys and the table-metadata
entries the steps share (docs/data-model.md describes what each holds).

Every layer that names a table or a metadata entry imports it from here (ingest, services,
synthetic_bank), so a name means one thing everywhere and a typo is an ImportError, not a
silently empty read. This module imports nothing: it sits below everything that uses it.
"""

from __future__ import annotations

from typing import Final

# ------------------------------------------------------------------ tables and keys
CUSTOMERS: Final = "customers"
EVENTS: Final = "events"
PRODUCTS: Final = "products"

CUSTOMER_ID: Final = "customer_id"
EVENT_ID: Final = "event_id"
PRODUCT_ID: Final = "product_id"

KEYS: Final[dict[str, str]] = {CUSTOMERS: CUSTOMER_ID, EVENTS: EVENT_ID, PRODUCTS: PRODUCT_ID}
"""The key column of each table."""

# ------------------------------------------------------------------ table metadata entries
META_EMBEDDERS: Final = "embedders"
"""``metadata["embedders"][column]``: the fitted embedder of a vector column."""
META_RISK: Final = "risk"
"""``metadata["risk"]``: the last risk run (model id, source, threshold)."""
META_PROPENSITY: Final = "propensity"
"""``metadata["propensity"][product]``: the fitted propensity model of a product."""
META_RECOMMEND: Final = "recommend"
"""``metadata["recommend"]``: the last bulk recommendation run (and its recommender)."""
META_MATCHING: Final = "matching"
"""``metadata["matching"]``: ANN index bookkeeping (row counts an index was built on)."""
META_CONSOLIDATION: Final = "consolidation"
"""``metadata["consolidation"]``: watermark, column map and ``as_of`` of consolidation."""

__all__ = ["CUSTOMERS", "CUSTOMER_ID", "EVENTS", "EVENT_ID", "KEYS", "META_CONSOLIDATION",
           "META_EMBEDDERS", "META_MATCHING", "META_PROPENSITY", "META_RECOMMEND", "META_RISK",
           "PRODUCTS", "PRODUCT_ID"]
