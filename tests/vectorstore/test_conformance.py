"""The behaviour every store backend must share, checked against exact references.

Each test runs once per backend registered in ``tests/conftest.py`` (the ``store`` fixture):
adding a backend there runs this whole suite on it.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import vectorstore as vs
from vectorstore import VectorColumn, col
from vectorstore.filters import to_mask

TYPES_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("i8", pa.int8()), ("i16", pa.int16()), ("i32", pa.int32()), ("i64", pa.int64()),
    ("f32", pa.float32()), ("f64", pa.float64()), ("b", pa.bool_()), ("s", pa.string()),
    ("ts", pa.timestamp("us")), ("tstz", pa.timestamp("us", tz="UTC")), ("d", pa.date32()),
    ("tags", pa.list_(pa.string())),
])


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def vec_array(x: np.ndarray) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])


def make_vectors(store: vs.VectorStore, n: int, d: int, metric: str = "cosine", seed: int = 0,
                 name: str = "items") -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    if metric == "cosine":
        x = unit(x)
    ids = [f"r{i:06d}" for i in range(n)]
    store.create_table(name, pa.schema([("id", pa.string()), ("grp", pa.int64())]), key="id",
                       vectors=[VectorColumn("v", d, metric)])
    store.write(name, pa.table({"id": ids, "grp": np.arange(n) % 7, "v": vec_array(x)}))
    return x, ids


def types_table() -> pa.Table:
    utc = dt.UTC
    return pa.table({
        "id": ["a", "b", "c", "d"],
        "i8": pa.array([-128, 127, None, 0], pa.int8()),
        "i16": pa.array([-32768, 32767, None, 1], pa.int16()),
        "i32": pa.array([-(2**31), 2**31 - 1, None, 2], pa.int32()),
        "i64": pa.array([-(2**63), 2**63 - 1, None, 3], pa.int64()),
        "f32": pa.array([1.5, -0.25, None, 3.0e38], pa.float32()),
        "f64": pa.array([1e-300, -2.5, None, 1e300], pa.float64()),
        "b": [True, False, None, True],
        "s": ["plain", "", None, "ünïcödé ✓ 客户 'quoted' \"dq\" \\ back"],
        "ts": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5, 678901), None,
                        dt.datetime(1970, 1, 1), dt.datetime(2038, 12, 31, 23, 59, 59)],
                       pa.timestamp("us")),
        "tstz": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=utc), None,
                          dt.datetime(2000, 6, 1, 12, tzinfo=utc), dt.datetime(1999, 1, 1, tzinfo=utc)],
                         pa.timestamp("us", tz="UTC")),
        "d": pa.array([dt.date(2024, 2, 29), None, dt.date(1900, 1, 1), dt.date(2100, 12, 31)],
                      pa.date32()),
        "tags": [["x", "y"], [], None, ["ü", "", "x"]],
        "v": vec_array(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0]], np.float32)),
    })


def sorted_by_id(t: pa.Table) -> pa.Table:
    return t.take(pc.sort_indices(t, [("id", "ascending")]))


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


# ------------------------------------------------------------------ search


@pytest.mark.parametrize("metric", ["cosine", "dot", "l2"])
def test_exact_search_equals_numpy_reference(store, metric):
    x, ids = make_vectors(store, 500, 16, metric=metric, seed=1)
    rng = np.random.default_rng(2)
    queries = rng.normal(size=(3, 16)).astype(np.float32)
    for q in queries:
        res = store.search("items", q, k=10, exact=True)
        if metric == "cosine":
            ref = x @ unit(q)
            order = np.argsort(-ref, kind="stable")[:10]
            col_name = "score"
        elif metric == "dot":
            ref = x @ q
            order = np.argsort(-ref, kind="stable")[:10]
            col_name = "score"
        else:
            ref = np.linalg.norm(x - q, axis=1)
            order = np.argsort(ref, kind="stable")[:10]
            col_name = "distance"
        assert col_name in res.column_names
        assert ("distance" if col_name == "score" else "score") not in res.column_names
        assert res.column("id").to_pylist() == [ids[i] for i in order]
        np.testing.assert_allclose(res.column(col_name).to_numpy(), ref[order], rtol=1e-4, atol=1e-4)


def test_search_many_queries_and_filter_before_top_k(store):
    x, ids = make_vectors(store, 700, 8, seed=3)
    q = unit(np.random.default_rng(4).normal(size=(2, 8)).astype(np.float32))
    res = store.search("items", q, k=5, exact=True, filter="grp = 6", columns=["id", "grp"])
    assert res.column_names == ["id", "grp", "score", "query_index"]
    mask = np.arange(700) % 7 == 6
    for qi in range(2):
        part = res.filter(pc.equal(res.column("query_index"), qi))
        sims = np.where(mask, x @ q[qi], -np.inf)
        assert part.column("id").to_pylist() == [ids[i] for i in np.argsort(-sims)[:5]]
        assert set(part.column("grp").to_pylist()) == {6}


def test_ann_index_recall_on_clustered_vectors(store):
    rng = np.random.default_rng(5)
    n, d, k = 20_000, 64, 10
    centres = rng.normal(size=(50, d))
    x = unit((centres[rng.integers(0, 50, n)] + 0.35 * rng.normal(size=(n, d))).astype(np.float32))
    ids = [f"r{i:06d}" for i in range(n)]
    store.create_table("items", pa.schema([("id", pa.string())]), key="id",
                       vectors=[VectorColumn("v", d)])
    store.write("items", pa.table({"id": ids, "v": vec_array(x)}))
    store.create_vector_index("items", "v")
    assert any(ix.vector for ix in store.list_indexes("items"))
    queries = unit((centres[rng.integers(0, 50, 50)] + 0.35 * rng.normal(size=(50, d))).astype(np.float32))
    hits = 0
    for q in queries:
        truth = set(np.argsort(-(x @ q))[:k].tolist())
        got = store.search("items", q, k=k).column("id").to_pylist()
        hits += len(truth & {int(i[1:]) for i in got})
    recall = hits / (k * len(queries))
    assert recall >= 0.95, recall
    # a filtered ANN query still returns k rows when k rows match
    res = store.search("items", queries[0], k=k, filter=col("id") < "r000100")
    assert res.num_rows == k
    # loading the indexes into memory changes no result
    before = store.search("items", queries[:5], k=k)
    store.prewarm("items")
    after = store.search("items", queries[:5], k=k)
    assert after.column("id").to_pylist() == before.column("id").to_pylist()
    with pytest.raises(vs.TableNotFound):
        store.prewarm("missing")


def test_scalar_index_and_optimize_keep_results(store):
    make_vectors(store, 300, 4)
    before = store.count("items", "grp = 2")
    store.create_scalar_index("items", "grp")
    store.optimize("items")
    assert store.count("items", "grp = 2") == before
    assert any("grp" in ix.columns for ix in store.list_indexes("items"))


# ------------------------------------------------------------------ filters vs the reference


def _filter_table() -> pa.Table:
    rng = np.random.default_rng(11)
    n = 300
    ages = rng.integers(18, 90, n).astype(object)
    ages[rng.random(n) < 0.1] = None
    regions = rng.choice(["EU", "UK", "US", "o'hare", ""], n).astype(object)
    regions[rng.random(n) < 0.1] = None
    prods = [list(rng.choice(["loan", "card", "mortgage"], rng.integers(0, 3), replace=False))
             for _ in range(n)]
    for i in np.flatnonzero(rng.random(n) < 0.05):
        prods[i] = None
    return pa.table({
        "id": [f"k{i:04d}" for i in range(n)],
        "age": pa.array(list(ages), pa.int64()),
        "income": pa.array(rng.normal(50_000, 20_000, n)),
        "region": pa.array(list(regions), pa.string()),
        "active": pa.array(rng.random(n) < 0.5),
        "products": pa.array(prods, pa.list_(pa.string())),
    })


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from vectorstore.filters import And, Cmp, Has, In, IsNull, Not, Or  # noqa: E402

_leaf = st.one_of(
    st.builds(Cmp, st.just("age"), st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
              st.integers(10, 95)),
    st.builds(Cmp, st.just("income"), st.sampled_from(["<", ">="]),
              st.floats(0, 100_000, allow_nan=False)),
    st.builds(Cmp, st.just("region"), st.sampled_from(["=", "!="]),
              st.sampled_from(["EU", "UK", "o'hare", "", "'; drop table items; --"])),
    st.builds(Cmp, st.just("active"), st.sampled_from(["=", "!="]), st.booleans()),
    st.builds(In, st.just("region"), st.lists(st.sampled_from(["EU", "US", "o'hare", "x"]),
                                              min_size=1, max_size=3).map(tuple)),
    st.builds(IsNull, st.sampled_from(["age", "region", "products"])),
    st.builds(Has, st.just("products"), st.sampled_from(["loan", "card", "mortgage", "none"])),
)
_filters = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.builds(And, st.lists(inner, min_size=2, max_size=3).map(tuple)),
        st.builds(Or, st.lists(inner, min_size=2, max_size=3).map(tuple)),
        st.builds(Not, inner),
    ),
    max_leaves=6,
)


@pytest.fixture
def filter_store(store):
    table = _filter_table()
    store.create_table("people", table.schema, key="id")
    store.write("people", table)
    return store, table


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(f=_filters)
def test_filters_equal_the_reference(filter_store, f):
    store, table = filter_store
    bound = vs.filters.bind(f, table.schema)
    expected = sorted(table.filter(to_mask(bound, table)).column("id").to_pylist())
    got = sorted(store.to_arrow("people", columns=["id"], filter=f).column("id").to_pylist())
    assert got == expected
    assert store.count("people", f) == len(expected)


def test_text_filter_equals_builder(filter_store):
    store, _ = filter_store
    text = "age >= 30 and region in ('EU','UK') and not has(products, 'mortgage')"
    built = (col("age") >= 30) & col("region").isin(["EU", "UK"]) & ~col("products").has("mortgage")
    assert store.count("people", text) == store.count("people", built) > 0


@pytest.mark.parametrize("f", [
    Or((Not(In("region", ("EU",))), Not(In("region", ("US",))))),
    Or((Not(In("region", ("EU", "EU"))), Not(In("region", ("US", "US"))))),
    Not(And((In("region", ("EU",)), In("region", ("US",))))),
])
def test_one_value_in_lists_keep_null_logic(filter_store, f):
    # NULL regions make every branch NULL: those rows match none of these filters
    store, table = filter_store
    expected = sorted(table.filter(to_mask(vs.filters.bind(f, table.schema), table))
                      .column("id").to_pylist())
    got = sorted(store.to_arrow("people", columns=["id"], filter=f).column("id").to_pylist())
    assert got == expected
    assert len(got) == table.num_rows - table.column("region").null_count


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


# ------------------------------------------------------------------ versions and artifacts


def test_versions_and_restore_where_supported(store):
    store.create_table("t", pa.schema([("id", pa.string())]), key="id")
    store.write("t", pa.table({"id": ["a"]}))
    if not store.capabilities.versions:
        with pytest.raises(vs.UnsupportedOperation):
            store.versions("t")
        return
    v = store.version("t")
    store.write("t", pa.table({"id": ["b"]}))
    assert store.count("t") == 2
    assert v in [x.version for x in store.versions("t")]
    store.restore("t", v)
    assert store.to_arrow("t").column("id").to_pylist() == ["a"]


def test_restore_puts_the_description_back_with_the_columns(store):
    """Vector columns and metadata added after a version go with it: no described column
    outlives the restore, and metadata reads as it did at that version."""
    if not store.capabilities.versions:
        pytest.skip(f"the {store.scheme} backend keeps no versions")
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
