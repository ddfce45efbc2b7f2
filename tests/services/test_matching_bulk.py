"""Bulk recommendations against a numpy reference, and automatic ANN index upkeep."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa
import pytest

import vectorstore
from services.errors import MatchingError
from services.matching import ensure_index, match, recommend
from services.matching.recommend import score_block, top_n_scores
from tests.services._matching_synth import load_synth, make_synth, write_rows


def _reference(X: np.ndarray, P: np.ndarray, n: int, cosine: bool) -> np.ndarray:
    if cosine:
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        P = P / np.linalg.norm(P, axis=1, keepdims=True)
    S = X.astype(np.float64) @ P.T.astype(np.float64)
    return np.argsort(-S, axis=1, kind="stable")[:, :n], np.sort(S, axis=1)[:, ::-1][:, :n]


@pytest.mark.parametrize("metric", ["cosine", "dot"])
def test_recommend_writes_numpy_top_n(tmp_path, metric):
    s = make_synth(n=700, products=6, unit=False, seed=3)
    st = vectorstore.connect(str(tmp_path / "db"))
    load_synth(st, s, metric=metric, with_products=True)
    out = recommend(st, top_n=3, batch_size=256, write_rows=300)  # several blocks and writes
    assert (out.customers, out.products, out.top_n) == (700, 6, 3)
    idx, scores = _reference(s.X, s.product_vectors, 3, metric == "cosine")
    got = st.to_arrow("customers", columns=["customer_id", "rec_products", "rec_scores"])
    order = {c: i for i, c in enumerate(got.column("customer_id").to_pylist())}
    rows = [order[c] for c in s.ids]
    recs = got.column("rec_products").to_pylist()
    vals = got.column("rec_scores").to_pylist()
    assert got.schema.field("rec_scores").type == pa.list_(pa.float32())
    assert [recs[r] for r in rows] == [[s.products[j] for j in row] for row in idx]
    np.testing.assert_allclose(np.array([vals[r] for r in rows]), scores, rtol=1e-4, atol=1e-4)


def test_recommend_excludes_held_products_and_rewrites(tmp_path):
    s = make_synth(n=400, products=5, seed=4)
    st = vectorstore.connect(str(tmp_path / "db"))
    load_synth(st, s, with_products=True)
    recommend(st, top_n=5, exclude_held=True)
    recommend(st, top_n=5, exclude_held=True)  # a second run updates in place
    got = st.to_arrow("customers", columns=["customer_id", "holdings", "rec_products"])
    assert got.num_rows == 400
    for held, recs in zip(got.column("holdings").to_pylist(),
                          got.column("rec_products").to_pylist(), strict=True):
        assert not set(held) & set(recs)
        assert len(recs) == 5 - len(held)


def test_recommend_write_failure_leaves_the_table_as_it_was(tmp_path):
    s = make_synth(n=300, products=4, seed=1)
    st = vectorstore.connect(str(tmp_path / "db"))
    load_synth(st, s, with_products=True)
    st.add_columns("customers", [pa.field("rec_products", pa.int64())])  # not a product list
    before = st.to_arrow("customers")
    with pytest.raises(vectorstore.SchemaMismatch, match="rec_products"):
        recommend(st, top_n=2)
    # the key index and the rec_scores column created before the failed update are undone
    assert st.to_arrow("customers").equals(before)
    assert "rec_scores" not in st.table_info("customers").schema.names
    assert not any(ix.columns == ("customer_id",) for ix in st.list_indexes("customers"))


def test_top_n_scores_matches_argsort():
    rng = np.random.default_rng(0)
    X, P = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(30, 8)).astype(np.float32)
    idx, sc = top_n_scores(X, P, 7)
    ref = np.argsort(-(X @ P.T), axis=1)[:, :7]
    np.testing.assert_array_equal(idx, ref)
    assert np.all(np.diff(sc, axis=1) <= 0)


def test_recommend_refuses_without_products(store):
    load_synth(store, make_synth(n=100))
    with pytest.raises(MatchingError, match="products"):
        recommend(store)


def test_index_created_past_threshold_refreshed_on_growth_and_bypassed(tmp_path):
    s = make_synth(n=1500, d=16, seed=5)
    st = vectorstore.connect(str(tmp_path / "db"))
    load_synth(st, s, rows=400)

    def add(lo: int, hi: int) -> None:
        write_rows(st, s, lo, hi)

    def indexed() -> bool:
        return any(ix.vector for ix in st.list_indexes("customers"))

    assert ensure_index(st, "customers", "vec", threshold=500).action == "none"
    assert not indexed()
    add(400, 600)
    version = st.version("customers")
    meta_before = st.table_info("customers").metadata
    r = match(st, "p0", top_k=10)
    # match reads only: no index built, no metadata written, the table version unchanged
    assert not r.summary.ann_index
    assert not indexed()
    assert st.version("customers") == version
    assert st.table_info("customers").metadata == meta_before
    assert ensure_index(st, "customers", "vec", threshold=500).action == "built"
    ann = match(st, "p0", top_k=50)
    assert ann.summary.ann_index
    assert indexed()
    meta = st.table_info("customers").metadata["matching"]["indexes"]["vec"]
    assert meta == {"rows": 600, "built_rows": 600, "indexed": True,
                    "version": st.data_version("customers")}
    exact = match(st, "p0", top_k=50, exact=True, query=ann.query)
    got = set(ann.prospects.column("customer_id").to_pylist())
    want = set(exact.prospects.column("customer_id").to_pylist())
    assert len(got & want) / 50 >= 0.9
    add(600, 800)
    assert ensure_index(st, "customers", "vec", threshold=500).action == "optimized"
    add(800, 1500)
    assert ensure_index(st, "customers", "vec", threshold=500).action == "rebuilt"
    assert ensure_index(st, "customers", "vec", threshold=500).action == "none"
    meta = st.table_info("customers").metadata["matching"]["indexes"]["vec"]
    assert meta == {"rows": 1500, "built_rows": 1500, "indexed": True,
                    "version": st.data_version("customers")}
    # an unchanged table is judged from the recorded check: metadata is not rewritten
    before = st.table_info("customers").metadata["matching"]
    assert ensure_index(st, "customers", "vec", threshold=500).action == "none"
    assert match(st, "p0", top_k=5).summary.ann_index
    assert st.table_info("customers").metadata["matching"] == before
    # a deleted row changes the version: the next check counts again and records it
    st.delete("customers", f"customer_id = '{s.ids[0]}'")
    assert ensure_index(st, "customers", "vec", threshold=500).rows == 1499
    meta = st.table_info("customers").metadata["matching"]["indexes"]["vec"]
    assert meta["rows"] == 1499
    assert meta["version"] == st.data_version("customers")


def _files_holding(st: vectorstore.VectorStore, table: str, column: str) -> set[str]:
    """The LanceDB data files that hold ``column``."""
    ds = st._dataset(table)
    fid = ds.lance_schema.field(column).id()
    return {f.path for fr in ds.get_fragments() for f in fr.metadata.files if fid in f.fields}


def test_recommend_after_growth_patches_columns_and_reports_progress(tmp_path):
    s = make_synth(n=700, products=6, seed=7)
    st = vectorstore.connect(str(tmp_path / "db"))
    load_synth(st, s, with_products=True, rows=400)
    vector_files = _files_holding(st, "customers", "vec")
    recommend(st, top_n=3, batch_size=128)
    # the write-back attaches its columns: no file holding the vectors is rewritten
    assert _files_holding(st, "customers", "vec") == vector_files
    write_rows(st, s, 400, 700)
    calls: list[tuple[int, int | None]] = []
    recommend(st, top_n=3, batch_size=128, progress=lambda done, total: calls.append(
        (done, total)))
    assert calls[-1] == (700, 700)
    assert len(calls) >= 700 // 128
    assert all(b[0] > a[0] for a, b in itertools.pairwise(calls))
    idx, _ = _reference(s.X, s.product_vectors, 3, True)
    got = st.to_arrow("customers", columns=["customer_id", "rec_products", "vec"])
    assert got.num_rows == 700
    pos = {c: i for i, c in enumerate(s.ids)}
    rows = [pos[c] for c in got.column("customer_id").to_pylist()]
    assert got.column("rec_products").to_pylist() == [[s.products[j] for j in idx[r]]
                                                      for r in rows]
    vec = np.stack(got.column("vec").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(vec, s.X[rows])  # vectors untouched by the write-back


def test_score_block_in_slices_matches_one_product():
    rng = np.random.default_rng(1)
    X, P = rng.normal(size=(45, 8)).astype(np.float32), rng.normal(size=(20, 8)).astype(np.float32)
    mask = rng.random((45, 20)) < 0.2
    idx, sc = score_block(X, P, 5, mask, rows=7)
    ref_idx, ref_sc = top_n_scores(X, P, 5, mask)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sc, ref_sc, rtol=1e-5, atol=1e-6)  # BLAS rounds by block size
