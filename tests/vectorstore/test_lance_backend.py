"""LanceDB specifics: searches and reads go through cached Lance datasets, which must never
serve a stale table (another connection's writes, a dropped and recreated table)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import vectorstore as vs
from vectorstore import VectorColumn


def _vectors(x: np.ndarray) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])


def _make(store: vs.VectorStore, ids: list[str], x: np.ndarray) -> None:
    store.create_table("items", pa.schema([("id", pa.string())]), key="id",
                       vectors=[VectorColumn("v", x.shape[1], "cosine")])
    store.write("items", pa.table({"id": ids, "v": _vectors(x)}))


def _nearest(store: vs.VectorStore, q: np.ndarray, **kw) -> list[str]:
    return store.search("items", q, k=3, columns=["id"], **kw).column("id").to_pylist()


def test_a_second_connection_sees_every_write_of_the_first(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    writer = vs.connect(str(tmp_path / "db"))
    reader = vs.connect(str(tmp_path / "db"))
    _make(writer, [f"a{i}" for i in range(300)], x)
    q = rng.normal(size=8)
    before = _nearest(reader, q)  # the reader now holds the table's dataset
    version = reader.version("items")

    writer.write("items", pa.table({"id": ["new"], "v": _vectors(q[None, :])}))
    assert _nearest(reader, q)[0] == "new"
    assert reader.count("items") == 301
    assert reader.version("items") == writer.version("items") > version

    writer.add_columns("items", [pa.field("note", pa.string())])
    writer.set_metadata("items", {"owner": "risk team"})
    info = reader.table_info("items")
    assert "note" in info.schema.names
    assert info.metadata["owner"] == "risk team"

    writer.restore("items", version)
    assert _nearest(reader, q) == before
    assert "note" not in reader.table_info("items").schema.names


def test_a_dropped_and_recreated_table_is_searched_afresh(tmp_path):
    rng = np.random.default_rng(1)
    store = vs.connect(str(tmp_path / "db"))
    x = rng.normal(size=(50, 4))
    _make(store, [f"old{i}" for i in range(50)], x)
    assert _nearest(store, x[0])[0] == "old0"
    store.drop_table("items")
    _make(store, [f"new{i}" for i in range(50)], x)  # same versions as the dropped table
    assert _nearest(store, x[0])[0] == "new0"


def test_index_search_probes_enough_partitions_by_default_and_obeys_nprobes(tmp_path):
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(40, 16))
    x = centres[rng.integers(0, 40, 4000)] + 0.3 * rng.normal(size=(4000, 16))
    store = vs.connect(str(tmp_path / "db"))
    _make(store, [f"r{i}" for i in range(4000)], x)
    store.create_vector_index("items", "v", num_partitions=40)
    store.prewarm("items")
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    hits = one_probe = 0
    for q in rng.normal(size=(20, 16)):
        want = set(np.argsort(-(xn @ (q / np.linalg.norm(q))))[:50])
        got = store.search("items", q, k=50, columns=["id"])
        hits += len({int(i[1:]) for i in got.column("id").to_pylist()} & want)
        narrow = store.search("items", q, k=50, columns=["id"], params={"nprobes": 1})
        one_probe += len({int(i[1:]) for i in narrow.column("id").to_pylist()} & want)
    assert hits / (20 * 50) >= 0.99  # 20 of 40 partitions by default
    assert one_probe < hits  # a single probe is taken at its word


def test_a_store_with_the_old_catalogue_table_is_adopted(tmp_path):
    """Descriptions used to live in a catalogue table; on open they move into the tables."""
    import json

    import lancedb

    db = lancedb.connect(str(tmp_path / "db"))
    db.create_table("items", pa.table({"id": ["a", "b"], "v": _vectors(np.eye(2)),
                                       "gone": [1, 2]}))
    desc = {"key": "id", "metadata": {"owner": "crm"},
            "vectors": [{"name": "v", "dim": 2, "metric": "dot"},
                        {"name": "w", "dim": 3, "metric": "cosine"}]}  # w: no longer there
    db.create_table("_kindred_catalog", pa.table({"name": ["items"],
                                                  "description": [json.dumps(desc)]}))
    store = vs.connect(str(tmp_path / "db"))
    info = store.table_info("items")
    assert (info.key, info.metadata) == ("id", {"owner": "crm"})
    assert info.vectors == {"v": VectorColumn("v", 2, "dot")}
    assert "_kindred_catalog" not in lancedb.connect(str(tmp_path / "db")).table_names()
    assert vs.connect(str(tmp_path / "db")).table_info("items") == info


def test_staged_partition_data_must_have_the_partition_rows(tmp_path):
    store = vs.connect(str(tmp_path / "db"))
    _make(store, [f"a{i}" for i in range(10)], np.eye(10)[:, :4])
    before = store.to_arrow("items")

    def stage(n: int) -> None:
        with store.transaction("items") as tx:
            tx.add_columns([pa.field("x", pa.int64())])
            tx.stage(tx.partitions()[0], pa.table({"x": np.arange(n)}))

    for n in (9, 11):
        with pytest.raises(vs.SchemaMismatch, match="10 rows"):
            stage(n)
    assert store.to_arrow("items").equals(before)
