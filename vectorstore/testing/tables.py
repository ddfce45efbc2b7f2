"""Conformance: tables, every supported type, write modes, scans and takes, and errors that change
nothing (values never reach query text; a write failing half-way writes none of it).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import vectorstore as vs
from vectorstore import VectorColumn, col

from .data import TYPES_SCHEMA, make_vectors, sorted_by_id, types_table, vec_array

# ------------------------------------------------------------------ tables and types


def test_round_trip_of_every_supported_type(store):
    store.create_table("t", TYPES_SCHEMA, key="id", vectors=[VectorColumn("v", 3)])
    data = types_table()
    store.write("t", data)
    back = sorted_by_id(store.to_arrow("t"))
    assert back.schema.names == data.schema.names
    for name in data.schema.names:
        assert back.column(name).type == data.column(name).type, name
        assert back.column(name).to_pylist() == data.column(name).to_pylist(), name


def test_table_info_list_and_drop(store):
    info = store.create_table("t", TYPES_SCHEMA, key="id",
                              vectors=[VectorColumn("v", 3, "dot"), VectorColumn("w", 2, "l2")],
                              metadata={"owner": "crm"})
    assert info.key == "id"
    again = store.table_info("t")
    assert again.key == "id"
    assert again.vectors == {"v": VectorColumn("v", 3, "dot"), "w": VectorColumn("w", 2, "l2")}
    assert again.metadata == {"owner": "crm"}
    assert again.schema.names == [*TYPES_SCHEMA.names, "v", "w"]
    assert store.list_tables() == ["t"]
    with pytest.raises(vs.TableExists):
        store.create_table("t", TYPES_SCHEMA)
    assert store.create_table("t", TYPES_SCHEMA, exist_ok=True).key == "id"
    store.drop_table("t")
    assert store.list_tables() == []
    with pytest.raises(vs.TableNotFound):
        store.table_info("t")
    store.drop_table("t", missing_ok=True)


def test_metadata_and_add_columns(store):
    store.create_table("t", pa.schema([("id", pa.string())]), key="id")
    store.write("t", pa.table({"id": ["a", "b"]}))
    store.set_metadata("t", {"embedders": {"v": {"model": "m"}}, "x": 1})
    store.set_metadata("t", {"x": None, "y": [1, 2]})
    assert store.table_info("t").metadata == {"embedders": {"v": {"model": "m"}}, "y": [1, 2]}
    info = store.add_columns("t", [pa.field("score", pa.float64())], vectors=[VectorColumn("v", 2)])
    assert info.schema.names == ["id", "score", "v"]
    assert "v" in info.vectors
    back = sorted_by_id(store.to_arrow("t"))
    assert back.column("score").to_pylist() == [None, None]
    assert back.column("v").to_pylist() == [None, None]
    with pytest.raises(vs.SchemaMismatch):
        store.add_columns("t", [pa.field("score", pa.int64())])


def test_drop_columns_undoes_add_columns(store):
    store.create_table("t", pa.schema([("id", pa.string()), ("n", pa.int64())]), key="id")
    store.write("t", pa.table({"id": ["a", "b"], "n": [1, 2]}))
    store.add_columns("t", [pa.field("extra", pa.string())], vectors=[VectorColumn("v", 2)])
    info = store.drop_columns("t", ["extra", "v"])
    assert info.schema.names == ["id", "n"]
    assert "v" not in info.vectors
    assert store.table_info("t").schema.names == ["id", "n"]
    assert sorted_by_id(store.to_arrow("t")).to_pydict() == {"id": ["a", "b"], "n": [1, 2]}
    store.add_columns("t", [pa.field("extra", pa.int64())])  # the name is free again
    assert store.to_arrow("t").column("extra").to_pylist() == [None, None]
    with pytest.raises(vs.ColumnNotFound):
        store.drop_columns("t", ["nope"])
    with pytest.raises(vs.SchemaMismatch):
        store.drop_columns("t", ["id"])


# ------------------------------------------------------------------ writes


def test_upsert_inserts_new_updates_existing_and_leaves_others(store):
    schema = pa.schema([("id", pa.string()), ("n", pa.int64()), ("s", pa.string())])
    store.create_table("t", schema, key="id")
    store.write("t", pa.table({"id": ["a", "b", "c"], "n": [1, 2, 3], "s": ["x", "y", "z"]}))
    res = store.write("t", pa.table({"id": ["b", "d"], "n": [20, 40], "s": ["yy", "w"]}),
                      mode="upsert")
    assert (res.inserted, res.updated) == (1, 1)
    back = sorted_by_id(store.to_arrow("t")).to_pydict()
    assert back == {"id": ["a", "b", "c", "d"], "n": [1, 20, 3, 40], "s": ["x", "yy", "z", "w"]}


def test_overwrite_and_append(store):
    store.create_table("t", pa.schema([("id", pa.string()), ("n", pa.int64())]), key="id")
    store.write("t", pa.table({"id": ["a"], "n": [1]}))
    assert store.write("t", pa.table({"id": ["b", "c"], "n": [2, 3]})).inserted == 2
    store.write("t", pa.table({"id": ["z"], "n": [9]}), mode="overwrite")
    assert store.to_arrow("t").to_pydict() == {"id": ["z"], "n": [9]}
    assert store.table_info("t").key == "id"


def test_append_refuses_keys_already_stored_or_repeated(store):
    store.create_table("t", pa.schema([("id", pa.string()), ("n", pa.int64())]), key="id")
    store.write("t", pa.table({"id": ["a", "b"], "n": [1, 2]}))
    with pytest.raises(vs.KeyConflict, match="already"):
        store.write("t", pa.table({"id": ["c", "b"], "n": [3, 4]}))
    with pytest.raises(vs.KeyConflict, match="more than once"):
        store.write("t", pa.table({"id": ["d", "d"], "n": [3, 4]}))
    assert sorted_by_id(store.to_arrow("t")).to_pydict() == {"id": ["a", "b"], "n": [1, 2]}
    # a table without a key accepts repeated values
    store.create_table("free", pa.schema([("id", pa.string())]))
    store.write("free", pa.table({"id": ["x", "x"]}))
    store.write("free", pa.table({"id": ["x"]}))
    assert store.count("free") == 3


def test_write_accepts_readers_and_missing_nullable_columns(store):
    store.create_table("t", pa.schema([("id", pa.string()), ("n", pa.int64()), ("s", pa.string())]),
                       key="id")
    batches = [pa.record_batch({"id": [f"k{i}"], "n": [i]}) for i in range(5)]
    reader = pa.RecordBatchReader.from_batches(batches[0].schema, iter(batches))
    assert store.write("t", reader).inserted == 5
    back = sorted_by_id(store.to_arrow("t"))
    assert back.column("n").to_pylist() == [0, 1, 2, 3, 4]
    assert back.column("s").null_count == 5


def test_update_by_key_sets_only_given_columns(store):
    store.create_table("t", pa.schema([("id", pa.string()), ("n", pa.int64()), ("s", pa.string())]),
                       key="id", vectors=[VectorColumn("v", 2)])
    store.write("t", pa.table({"id": ["a", "b", "c"], "n": [1, 2, 3], "s": ["x", "y", "z"],
                               "v": [[1, 0], [0, 1], [1, 1]]}))
    assert store.update("t", pa.table({"id": ["c", "a"], "n": [30, 10]})) == 2
    back = sorted_by_id(store.to_arrow("t")).to_pydict()
    assert back["n"] == [10, 2, 30]
    assert back["s"] == ["x", "y", "z"]
    assert back["v"] == [[1, 0], [0, 1], [1, 1]]
    with pytest.raises(vs.KeyConflict, match="zz"):
        store.update("t", pa.table({"id": ["a", "zz"], "n": [5, 6]}))
    assert sorted_by_id(store.to_arrow("t")).column("n").to_pylist() == [10, 2, 30]


def test_delete_and_count(store):
    make_vectors(store, 100, 4)
    assert store.count("items") == 100
    assert store.count("items", "grp = 3") == len([i for i in range(100) if i % 7 == 3])
    assert store.delete("items", col("grp") == 3) == 14
    assert store.count("items") == 86
    assert store.count("items", "grp = 3") == 0


def test_scan_streams_batches_with_columns_and_filter(store):
    make_vectors(store, 1000, 4)
    batches = list(store.scan("items", columns=["id"], filter="grp < 2", batch_size=100))
    assert all(b.num_rows <= 100 for b in batches)
    assert all(b.schema.names == ["id"] for b in batches)
    got = sorted(x for b in batches for x in b.column("id").to_pylist())
    assert got == [f"r{i:06d}" for i in range(1000) if i % 7 < 2]


def test_take_returns_rows_at_scan_positions_in_order(store):
    make_vectors(store, 500, 4)
    rng = np.random.default_rng(1)
    extra = rng.normal(size=(300, 4)).astype(np.float32)
    store.write("items", pa.table({"id": [f"s{i:06d}" for i in range(300)],
                                   "grp": np.arange(300) % 7, "v": vec_array(extra)}))
    full = store.to_arrow("items", columns=["id", "grp", "v"])
    pos = rng.choice(800, 120, replace=False)
    got = store.take("items", np.concatenate([pos, pos[:5]]), columns=["id", "v"])  # unsorted, repeats
    want = full.take(pa.array(np.sort(pos))).select(["id", "v"])
    assert got.schema.names == ["id", "v"]
    assert got.column("id").to_pylist() == want.column("id").to_pylist()
    np.testing.assert_array_equal(
        np.stack(got.column("v").to_pylist()), np.stack(want.column("v").to_pylist()))
    assert store.take("items", [], columns=["id"]).num_rows == 0
    assert store.take("items", [799]).column("id").to_pylist() == full.column("id")[-1:].to_pylist()
    with pytest.raises(vs.InvalidOption, match="800 rows: position 800"):
        store.take("items", [3, 800])
    with pytest.raises(vs.ColumnNotFound):
        store.take("items", [1], columns=["nope"])


# ------------------------------------------------------------------ errors change nothing


def _snapshot(store, name):
    return sorted_by_id(store.to_arrow(name))


def test_errors_are_specific_and_change_nothing(store):
    make_vectors(store, 50, 4)
    before = _snapshot(store, "items")
    with pytest.raises(vs.DimensionMismatch):
        store.write("items", pa.table({"id": ["new"], "v": [[1.0, 2.0]]}))
    with pytest.raises(vs.DimensionMismatch):
        store.search("items", np.ones(5))
    with pytest.raises(vs.ColumnNotFound, match="nope"):
        store.count("items", "nope = 1")
    with pytest.raises(vs.ColumnNotFound, match="nope"):
        store.search("items", np.ones(4), columns=["nope"])
    with pytest.raises(vs.SchemaMismatch, match="nope"):
        store.write("items", pa.table({"id": ["x"], "nope": [1]}))
    with pytest.raises(vs.TableNotFound, match="missing"):
        store.count("missing")
    with pytest.raises(vs.InvalidFilter):
        store.count("items", "grp >= ")
    with pytest.raises(vs.InvalidFilter):
        store.delete("items", "grp = 'a'")
    with pytest.raises(vs.SchemaMismatch, match="NaN"):
        store.write("items", pa.table({"id": ["nan"], "v": [[np.nan, 0, 0, 1.0]]}))
    with pytest.raises(vs.KeyConflict):
        store.write("items", pa.table({"id": ["r000001", "r000001"], "grp": [1, 2]}), mode="upsert")
    with pytest.raises(vs.InvalidName):
        store.count("items; drop table items")
    assert _snapshot(store, "items").equals(before)


@pytest.mark.parametrize("value", ["'; drop table items; --", "x' OR '1'='1", "a\\' or 1=1 --",
                                   "`id`", '"; delete from items; --'])
def test_injection_attempts_are_plain_values(store, value):
    make_vectors(store, 20, 4)
    store.create_table("names", pa.schema([("id", pa.string()), ("s", pa.string())]), key="id")
    store.write("names", pa.table({"id": ["a", "b"], "s": [value, "plain"]}))
    assert store.count("names", col("s") == value) == 1
    assert store.to_arrow("names", filter=col("s") == value).column("id").to_pylist() == ["a"]
    assert store.count("names", col("s").isin([value])) == 1
    assert store.delete("names", col("s") == value) == 1
    assert store.count("names") == 1
    assert store.count("items") == 20
    assert sorted(store.list_tables()) == ["items", "names"]


def test_write_failing_half_way_leaves_table_as_before(store):
    store.create_table("t", pa.schema([("id", pa.string()), ("n", pa.int64())]), key="id")
    store.write("t", pa.table({"id": ["a", "b"], "n": [1, 2]}))
    before = _snapshot(store, "t")

    def batches():
        for i in range(3):
            yield pa.record_batch({"id": [f"x{i}"], "n": [i]})
        yield pa.record_batch({"id": ["bad"], "n": ["not a number"]})

    for mode in ("append", "upsert", "overwrite"):
        with pytest.raises(vs.SchemaMismatch, match="'n'"):
            store.write("t", batches(), mode=mode)
        assert _snapshot(store, "t").equals(before), mode
