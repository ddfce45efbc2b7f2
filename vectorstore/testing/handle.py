"""Conformance: the table handle (``store.table(name)``, :class:`vectorstore.table.Table`) reads
the description again only when the table's description token changes, on every backend, and
never serves a description older than the table's (a change by another connection included).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import vectorstore as vs
from vectorstore import VectorColumn

from .data import vec_array
from .staged import second_connection

__all__ = [
    "items",
    "test_a_handle_delegates_the_common_operations",
    "test_a_handle_reads_the_description_once_per_version",
    "test_a_handle_sees_another_connections_change_and_a_dropped_table",
    "test_row_writes_keep_the_cached_description_right",
]


class _Reads:
    """Counts the store's ``table_info`` calls (the description reads) while active."""

    def __init__(self, store: vs.VectorStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.n = 0
        real = store.table_info

        def counting(name: str) -> vs.TableInfo:
            self.n += 1
            return real(name)

        monkeypatch.setattr(store, "table_info", counting)


@pytest.fixture
def items(store: vs.VectorStore) -> vs.VectorStore:
    store.create_table("items", pa.schema([("id", pa.string()), ("n", pa.int64())]), key="id",
                       vectors=[VectorColumn("v", 2)])
    store.write("items", pa.table({"id": ["a", "b", "c"], "n": [1, 2, 3],
                                   "v": vec_array(np.eye(3, 2))}))
    return store


def test_a_handle_reads_the_description_once_per_version(items, monkeypatch):
    store = items
    t = store.table("items")
    reads = _Reads(store, monkeypatch)
    first = t.info
    for _ in range(5):
        assert t.info == first
        assert t.key == "id"
        assert t.schema.names == ["id", "n", "v"]
        assert list(t.vectors) == ["v"]
    assert reads.n == 0  # store.table read it; nothing changed since
    store.set_metadata("items", {"owner": "crm"})  # a new description, not through the handle
    before = reads.n
    assert t.metadata == {"owner": "crm"}
    assert reads.n == before + 1
    assert t.info.metadata == {"owner": "crm"}
    assert reads.n == before + 1
    store.add_columns("items", [pa.field("note", pa.string())])
    before = reads.n
    assert t.schema.names == ["id", "n", "v", "note"]
    assert t.info.schema.names == ["id", "n", "v", "note"]
    assert reads.n == before + 1
    t.refresh()
    assert reads.n == before + 2


def test_row_writes_keep_the_cached_description_right(items, monkeypatch):
    store = items
    t = store.table("items")
    reads = _Reads(store, monkeypatch)
    info = t.info
    store.write("items", pa.table({"id": ["d"], "n": [4]}), mode="upsert")
    before = reads.n
    assert t.info == info  # rows are not the description
    # at most one read per new version (Lance: a row write is a new version)
    assert reads.n <= before + 1
    before = reads.n
    assert t.info == info
    assert reads.n == before


def test_a_handle_sees_another_connections_change_and_a_dropped_table(items):
    store = items
    t = store.table("items")
    assert t.metadata == {}
    other = second_connection(store)
    try:
        other.set_metadata("items", {"writer": "other"})
        assert t.metadata == {"writer": "other"}
        other.drop_table("items")
        with pytest.raises(vs.TableNotFound):
            t.info  # noqa: B018 (the property reads)
        other.create_table("items", pa.schema([("id", pa.string())]), key="id")
        assert t.schema.names == ["id"]
        assert t.vectors == {}
    finally:
        if other is not store:
            other.close()
    with pytest.raises(vs.TableNotFound):
        store.table("missing")


def test_a_handle_delegates_the_common_operations(items):
    store = items
    t = store.table("items")
    assert repr(t).endswith("'items')")
    assert t.exists()
    assert t.count() == 3
    assert t.count("n >= 2") == 2
    assert t.write(pa.table({"id": ["d"], "n": [4]}), mode="upsert").inserted == 1
    assert t.update(pa.table({"id": ["a"], "n": [10]})) == 1
    assert sorted(t.to_arrow(columns=["n"]).column("n").to_pylist()) == [2, 3, 4, 10]
    assert t.null_count("v") == 1
    hits = t.search([1.0, 0.0], k=1, columns=["id"])
    assert hits.column("id").to_pylist() == store.search("items", [1.0, 0.0], k=1,
                                                         columns=["id"]).column("id").to_pylist()
    assert t.lookup(pa.array(["b"]), columns=["n"]).column("n").to_pylist() == [2]
    with t.transaction() as tx:
        tx.set_metadata({"step": 1})
    assert t.metadata == {"step": 1}
    assert t.delete("id = 'd'") == 1
    assert sum(b.num_rows for b in t.scan(columns=["id"])) == 3
    assert {p.table for p in t.partitions()} == {"items"}
