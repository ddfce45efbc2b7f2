"""Conformance: exact search against numpy, filters before top-k, ANN recall, scalar indexes, and
filters equal to the Arrow reference evaluator (:func:`vectorstore.filters.to_mask`) on
generated trees.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vectorstore as vs
from vectorstore import VectorColumn, col
from vectorstore.filters import And, Cmp, Has, In, IsNull, Not, Or, to_mask

from .data import make_vectors, unit, vec_array

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
    prods: list[list[str] | None] = [
        list(rng.choice(["loan", "card", "mortgage"], rng.integers(0, 3), replace=False))
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
