"""ANN index upkeep: build one once a table is big enough, keep it current as the table grows.

The row counts an index was built on (``built_rows``) and last brought up to date for
(``rows``) are kept in the table metadata (``metadata["matching"]["indexes"][column]``). A
table that grew since is optimised (LanceDB adds the new rows to the index incrementally); one
that doubled since the build is re-indexed so the index's partitions fit the data again.
"""

from __future__ import annotations

from dataclasses import dataclass

from vectorstore import VectorStore

DEFAULT_THRESHOLD = 100_000
REBUILD_GROWTH = 2.0


@dataclass(frozen=True)
class IndexStatus:
    """Whether the column is indexed now and what this call did (none, built, optimized, rebuilt)."""

    indexed: bool
    action: str
    rows: int


def _has_vector_index(store: VectorStore, table: str, column: str) -> bool:
    return any(ix.vector and column in ix.columns for ix in store.list_indexes(table))


def ensure_index(store: VectorStore, table: str, column: str, *,
                 threshold: int = DEFAULT_THRESHOLD) -> IndexStatus:
    """Create or refresh the ANN index on ``column`` when the table has >= ``threshold`` rows.

    The index parameters are the backend's defaults (chosen there for recall@100 >= 0.95).
    """
    if not store.capabilities.ann_index:
        return IndexStatus(False, "none", 0)
    n = store.count(table)
    info = store.table_info(table)
    matching = dict(info.metadata.get("matching") or {})
    indexes = dict(matching.get("indexes") or {})
    entry = indexes.get(column) or {}
    seen_rows = int(entry.get("rows", 0))
    built_rows = int(entry.get("built_rows", seen_rows))
    present = _has_vector_index(store, table, column)
    if n < threshold:
        return IndexStatus(present, "none", n)
    if present and seen_rows == n:
        return IndexStatus(True, "none", n)
    if present and built_rows and n < built_rows * REBUILD_GROWTH:
        store.optimize(table)
        action = "optimized"
    else:
        store.create_vector_index(table, column, replace=True)
        action = "rebuilt" if present else "built"
        built_rows = n
    indexes[column] = {"rows": n, "built_rows": built_rows}
    matching["indexes"] = indexes
    store.set_metadata(table, {"matching": matching})
    return IndexStatus(True, action, n)
