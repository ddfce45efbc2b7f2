"""ANN index upkeep: build one once a table is big enough, keep it current as the table grows.

The outcome of the last check is kept in the table metadata
(``metadata["matching"]["indexes"][column]``): the row counts the index was built on
(``built_rows``) and last brought up to date for (``rows``), whether the column is indexed and,
on a backend with table versions, the table ``version`` it was checked at. While the table's
version is unchanged nothing was written since, so a check costs one version read (no row
count, no index listing). A table that grew is optimised (LanceDB adds the new rows to the
index incrementally); one that doubled since the build is re-indexed so the index's
partitions fit the data again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ingest.datamodel import META_MATCHING
from vectorstore import TableInfo, VectorStore

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
                 threshold: int = DEFAULT_THRESHOLD, info: TableInfo | None = None) -> IndexStatus:
    """Create or refresh the ANN index on ``column`` when the table has >= ``threshold`` rows.

    The index parameters are the backend's defaults (chosen there for recall@100 >= 0.95).
    ``info``: the table's description when the caller already read it (saves a read).
    """
    if not store.capabilities.ann_index:
        return IndexStatus(False, "none", 0)
    info = info or store.table_info(table)
    indexes = (info.metadata.get(META_MATCHING) or {}).get("indexes") or {}
    entry: dict[str, Any] = dict(indexes.get(column) or {})
    version = store.data_version(table) if store.capabilities.versions else None
    if version is not None and entry.get("version") == version and "indexed" in entry:
        # nothing was written since the last check: its outcome still holds
        n, indexed = int(entry.get("rows", 0)), bool(entry["indexed"])
        if indexed or n < threshold:
            return IndexStatus(indexed, "none", n)
    n = store.count(table)
    seen_rows = int(entry.get("rows", 0))
    built_rows = int(entry.get("built_rows", seen_rows))
    present = _has_vector_index(store, table, column)
    if n < threshold or (present and seen_rows == n):
        action = "none"
    elif present and built_rows and n < built_rows * REBUILD_GROWTH:
        store.optimize(table)
        action = "optimized"
    else:
        store.create_vector_index(table, column, replace=True)
        action = "rebuilt" if present else "built"
        built_rows = n
    indexed = present or action != "none"
    new: dict[str, Any] = {"rows": n, "indexed": indexed}
    if indexed:
        new["built_rows"] = built_rows
    if version is not None:
        new["version"] = store.data_version(table)
    if new != entry:  # this column's entry only: other columns' entries stay as they are
        store.set_metadata(table, {(META_MATCHING, "indexes", column): new})
    return IndexStatus(indexed, action, n)


def refresh_index(store: VectorStore, table: str, column: str) -> str:
    """Bring the existing ANN index on ``column`` up to date after its vectors were written
    (new or changed rows): optimised (LanceDB adds the rows incrementally), or re-indexed
    when the table doubled since the build. Returns the action (``optimized``/``rebuilt``)."""
    info = store.table_info(table)
    entry = ((info.metadata.get(META_MATCHING) or {}).get("indexes") or {}).get(column) or {}
    n = store.count(table)
    built_rows = int(entry.get("built_rows") or 0)
    if built_rows and n >= built_rows * REBUILD_GROWTH:
        store.create_vector_index(table, column, replace=True)
        action, built_rows = "rebuilt", n
    else:
        store.optimize(table)
        action, built_rows = "optimized", built_rows or n
    new: dict[str, Any] = {"rows": n, "indexed": True, "built_rows": built_rows}
    if store.capabilities.versions:
        new["version"] = store.data_version(table)
    store.set_metadata(table, {(META_MATCHING, "indexes", column): new})
    return action
