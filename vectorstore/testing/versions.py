"""Conformance: versions and restore (a capability: backends without it raise
UnsupportedOperation, asserted through ``notimpl``), artifacts, replacing a table.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import vectorstore as vs
from vectorstore import VectorColumn

from .data import make_vectors, vec_array
from .marks import notimpl

# ------------------------------------------------------------------ versions and artifacts


@notimpl("versions", raises=vs.UnsupportedOperation)
def test_versions_and_restore_where_supported(store):
    store.create_table("t", pa.schema([("id", pa.string())]), key="id")
    store.write("t", pa.table({"id": ["a"]}))
    v = store.version("t")
    store.write("t", pa.table({"id": ["b"]}))
    assert store.count("t") == 2
    assert v in [x.version for x in store.versions("t")]
    store.restore("t", v)
    assert store.to_arrow("t").column("id").to_pylist() == ["a"]


@notimpl("versions", raises=vs.UnsupportedOperation)
def test_restore_puts_the_description_back_with_the_columns(store):
    """Vector columns and metadata added after a version go with it: no described column
    outlives the restore, and metadata reads as it did at that version."""
    x, _ = make_vectors(store, 20, 4)
    store.set_metadata("items", {"owner": "crm", "n": 1})
    v = store.version("items")
    store.add_columns("items", [pa.field("note", pa.string())],
                      vectors=[VectorColumn("w", 3, "dot")])
    store.set_metadata("items", {"owner": "risk", "model": {"kind": "iforest"}})
    store.write("items", pa.table({"id": ["new"], "grp": [0],
                                   "v": vec_array(np.ones((1, 4)))}))
    store.restore("items", v)
    info = store.table_info("items")
    assert list(info.vectors) == ["v"]
    assert "w" not in info.schema.names
    assert info.metadata == {"owner": "crm", "n": 1}
    # the only vector column is the default again
    assert store.search("items", x[3], k=1, columns=["id"]).column("id").to_pylist() == ["r000003"]
    # later metadata updates build on the restored description
    store.set_metadata("items", {"n": 2})
    assert store.table_info("items").metadata == {"owner": "crm", "n": 2}


def test_artifacts_round_trip_and_are_hidden(store):
    digest = store.put_artifact("customers.v.embedder", b"\x00state\xff", {"kind": "tabular"})
    data, meta = store.get_artifact("customers.v.embedder")
    assert data == b"\x00state\xff"
    assert meta["kind"] == "tabular"
    assert meta["sha256"] == digest
    assert store.list_artifacts() == ["customers.v.embedder"]
    assert store.list_tables() == []
    with pytest.raises(vs.ArtifactNotFound):
        store.get_artifact("other")


def test_replace_table_gives_the_new_rows_schema_and_description(store):
    old = pa.table({"id": ["a", "b"], "x": [1, 2]})
    store.create_table("t", old.schema, key="id", metadata={"owner": "old"}, data=old)
    new = pa.table({"id": ["c"], "y": pa.array([0.5], pa.float64()),
                    "v": pa.array([[1.0, 0.0]], pa.list_(pa.float32(), 2))})
    info = store.replace_table("t", new.schema, key="id", vectors=[VectorColumn("v", 2)],
                               metadata={"owner": "new"}, data=new)
    assert info.name == "t"
    got = store.table_info("t")
    assert got.schema.names == ["id", "y", "v"]
    assert set(got.vectors) == {"v"}
    assert got.metadata == {"owner": "new"}
    assert store.to_arrow("t").column("id").to_pylist() == ["c"]
    # a missing table is simply created
    store.replace_table("u", old.schema, key="id", data=old)
    assert store.count("u") == 2
