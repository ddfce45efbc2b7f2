from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import synthetic_bank as synthetic
from ingest.embedders import load_embedder
from ingest.embedders.base import from_vector_array, l2_normalize
from ingest.embedders.behavior import BehaviorEmbedder, embed_behavior
from ingest.embedders.combined import embed_combined
from ingest.embedders.errors import DimensionConflictError, UnknownColumnError
from vectorstore import VectorColumn, connect


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    d = tmp_path_factory.mktemp("bank")
    b = synthetic.generate(d / "files", n_customers=2000, events_per_customer=15, seed=3)
    s = connect(str(d / "db"))
    synthetic.load_into_store(s, b)
    res = embed_behavior(s, BehaviorEmbedder(dim=16))
    return s, b, res


def _customer_vectors(s):
    t = s.to_arrow("customers", columns=["customer_id", "vec_behavior"])
    return t.column("customer_id").to_pylist(), from_vector_array(t.column("vec_behavior"), 16)


def test_segments_closer_within_than_across(bank):
    s, b, _ = bank
    ids, v = _customer_vectors(s)
    truth = pq.read_table(b.truth, columns=["customer_id", "latent_segment"]).to_pylist()
    seg = {r["customer_id"]: r["latent_segment"] for r in truth}
    labels = np.array([seg[i] for i in ids])
    u = l2_normalize(v.astype(np.float64))
    sim = u @ u.T
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(ids), dtype=bool)
    within, across = sim[same & off].mean(), sim[~same].mean()
    margin = within - across
    # random vectors would give ~0 margin; require a clear, measured separation
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(labels)
    same_s = shuffled[:, None] == shuffled[None, :]
    null_margin = sim[same_s & off].mean() - sim[~same_s].mean()
    assert margin > 0.1, (within, across)
    assert margin > 10 * abs(null_margin)


def test_products_share_the_space_and_score_holders_higher(bank):
    s, _, res = bank
    assert res.extra["products_written"] == 8
    p = s.to_arrow("products", columns=["product_id", "vec_behavior"])
    pv = from_vector_array(p.column("vec_behavior"), 16)
    c = s.to_arrow("customers", columns=["customer_id", "holdings", "vec_behavior"])
    cv = from_vector_array(c.column("vec_behavior"), 16)
    holds = c.column("holdings").to_pylist()
    for j, pid in enumerate(p.column("product_id").to_pylist()):
        has = np.array([pid in (h or []) for h in holds])
        if 0 < has.sum() < len(has) // 2:  # a near-universal product carries no signal
            score = cv @ pv[j]
            assert score[has].mean() > score[~has].mean(), pid
    meta = s.table_info("products").metadata["embedders"]["vec_behavior"]
    assert meta["metric"] == "dot"
    # the state is stored under a name derived from its content, and exists
    assert meta["state_artifact"].startswith("customers.vec_behavior.embedder.")
    assert meta["state_artifact"] in s.list_artifacts()


def test_fold_in_reproduces_written_vectors(bank):
    s, _, _ = bank
    emb = load_embedder(s, "customers", "vec_behavior")
    ids, v = _customer_vectors(s)
    raw, raw_ids, items = BehaviorEmbedder(dim=16).build_matrix(s, "customers")
    order = {cid: i for i, cid in enumerate(raw_ids.to_pylist())}
    pick = [order[i] for i in ids[:50]]
    rows = raw[pick]
    batch = pa.record_batch({
        "items": [[items[j] for j in rows.indices[rows.indptr[i]:rows.indptr[i + 1]]]
                  for i in range(50)],
        "weights": [rows.data[rows.indptr[i]:rows.indptr[i + 1]].tolist() for i in range(50)],
    })
    folded = from_vector_array(emb.transform(batch), 16)
    np.testing.assert_allclose(folded, v[:50], atol=2e-4)


def test_deterministic(bank):
    s, _, _ = bank
    _, v1 = _customer_vectors(s)
    embed_behavior(s, BehaviorEmbedder(dim=16))
    _, v2 = _customer_vectors(s)
    np.testing.assert_allclose(v1, v2, atol=1e-5)


def test_combined_weighted_cosine(bank):
    s, _, _ = bank
    from ingest.embedders import TabularEmbedder, embed

    embed(s, "customers", TabularEmbedder(exclude=["note", "segment"], pca=8))
    embed_combined(s, "customers", {"vec_tabular": 1.0, "vec_behavior": 3.0})
    t = s.to_arrow("customers", columns=["vec_tabular", "vec_behavior", "vec_combined"])
    a = l2_normalize(from_vector_array(t.column("vec_tabular"), 8).astype(np.float64))
    b = l2_normalize(from_vector_array(t.column("vec_behavior"), 16).astype(np.float64))
    c = from_vector_array(t.column("vec_combined"), 24).astype(np.float64)
    want = 0.25 * (a[:20] @ a[:20].T) + 0.75 * (b[:20] @ b[:20].T)
    np.testing.assert_allclose(c[:20] @ c[:20].T, want, atol=1e-5)


def test_behavior_errors_write_nothing(bank):
    s, _, _ = bank
    with pytest.raises(UnknownColumnError, match="nope"):
        embed_behavior(s, BehaviorEmbedder(event_items=["nope"]), column="vec_b2")
    s.add_columns("products", [], vectors=[VectorColumn("vec_b3", 5)])
    with pytest.raises(DimensionConflictError, match="dim 5"):
        embed_behavior(s, BehaviorEmbedder(dim=8), column="vec_b3")
    names = s.table_info("customers").schema.names
    assert "vec_b2" not in names
    assert "vec_b3" not in names
