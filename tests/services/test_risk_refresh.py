"""Risk scores of new and changed customers with the persisted model; the others untouched."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import vectorstore
from ingest.freshness import ROW_STAMP, source_touch, stale_count
from services import risk
from vectorstore import VectorColumn


def _table(store: vectorstore.VectorStore, n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    X[:4] += 6.0
    store.create_table("customers", pa.schema([("customer_id", pa.string()),
                                               (ROW_STAMP, pa.int64())]),
                       key="customer_id", vectors=[VectorColumn("vec", 6, "l2")])
    _write(store, [f"c{i:04d}" for i in range(n)], X)
    return X


def _write(store: vectorstore.VectorStore, ids: list[str], X: np.ndarray) -> None:
    with store.transaction("customers") as tx:  # as ingest + embed would leave them
        tx.write(pa.table({"customer_id": ids, "vec": pa.FixedSizeListArray.from_arrays(
            pa.array(X.ravel()), X.shape[1])}), mode="upsert", touch=source_touch(tx.info))


def _scores(store: vectorstore.VectorStore) -> pa.Table:
    return store.to_arrow("customers", columns=["customer_id", "risk_score", "risk_percentile",
                                                "risk_flag"]).sort_by("customer_id")


def test_rescoring_stale_rows_leaves_the_others_and_matches_a_full_run(store):
    X = _table(store)
    first = risk.score_table(store, "customers", "iforest", column="vec")
    before = _scores(store)
    rng = np.random.default_rng(1)
    _write(store, ["c0010", "c0011", "new1", "new2"], np.r_[rng.normal(size=(3, 6)),
                                                            np.full((1, 6), 9.0)].astype(np.float32))
    assert stale_count(store, "customers", "risk") == 4
    run = risk.rescore(store, "customers", stale_only=True)
    assert (run.mode, run.rows_scored, run.n_rows) == ("stale", 4, 302)
    after = _scores(store)
    ids = after.column("customer_id").to_pylist()
    kept = [i for i, c in enumerate(ids) if c not in {"c0010", "c0011", "new1", "new2"}]
    for col in ("risk_score", "risk_percentile", "risk_flag"):
        assert after.column(col).take(pa.array(kept)).equals(
            before.column(col).take(pa.array([i for i, c in enumerate(
                before.column("customer_id").to_pylist()) if c not in {"c0010", "c0011"}])))
    # the same as scoring every row with the model now
    full = risk.rescore(store, "customers")
    assert full.mode == "all"
    np.testing.assert_allclose(_scores(store).column("risk_score").to_numpy(),
                               after.column("risk_score").to_numpy())
    assert run.n_flagged == full.n_flagged == int(np.sum(
        after.column("risk_flag").to_numpy(zero_copy_only=False)))
    assert first.n_flagged <= run.n_flagged  # new2 is far out
    top = risk.top(store, "customers", 3)
    assert top.column("customer_id").to_pylist()[0] == "new2"
    assert top.column("risk_rank").to_pylist() == [1, 2, 3]
    v = store.data_version("customers") if store.capabilities.versions else None
    again = risk.rescore(store, "customers", stale_only=True)
    assert again.rows_scored == 0
    if v is not None:
        assert store.data_version("customers") == v
    assert X.shape[0] == 300


def test_a_new_threshold_rescores_every_row(store):
    _table(store, 120)
    risk.score_table(store, "customers", "hbos", column="vec")
    run = risk.rescore(store, "customers", threshold=0.5, stale_only=True)
    assert (run.mode, run.rows_scored) == ("all", 120)
    with pytest.raises(risk.RiskError, match="finite"):
        risk.rescore(store, "customers", threshold=float("nan"))
