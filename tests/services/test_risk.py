"""Risk scoring against real stores: equality with raw PyOD, write-back, persistence, guards."""

from __future__ import annotations

import hashlib
import itertools
import json
import pickle
import warnings

import numpy as np
import pyarrow as pa
import pytest
from pyod.models.copod import COPOD
from pyod.models.ecod import ECOD
from pyod.models.hbos import HBOS
from pyod.models.iforest import IForest
from pyod.models.knn import KNN
from pyod.models.lof import LOF
from pyod.models.pca import PCA

import vectorstore
from services import risk
from services.risk import (
    InvalidRiskInput,
    KNNConfig,
    ModelIntegrityError,
    RiskDetector,
    TooManyRows,
)
from vectorstore import VectorColumn
from vectorstore.base import ARTIFACT_TABLE

DIM = 8


def _data(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, DIM)).astype(np.float32)
    X[:, 1] = rng.exponential(size=n)  # skewed feature
    X[:, 2] = np.round(X[:, 2])  # ties
    X[:5] += 5.0  # five planted outliers
    return X


def _make_table(store: vectorstore.VectorStore, X: np.ndarray, metric: str = "l2") -> pa.Table:
    n = X.shape[0]
    rng = np.random.default_rng(1)
    schema = pa.schema([("customer_id", pa.string()), ("age", pa.int64()),
                        ("income", pa.float64()), ("region", pa.string()),
                        ("holdings", pa.list_(pa.string())), ("is_fraud", pa.bool_())])
    store.create_table("customers", schema, key="customer_id",
                       vectors=[VectorColumn("vec", X.shape[1], metric)])
    data = pa.table({
        "customer_id": [f"c{i:04d}" for i in range(n)],
        "age": rng.integers(18, 90, n), "income": rng.normal(50_000, 8_000, n),
        "region": rng.choice(["EU", "UK", "US"], n).tolist(),
        "holdings": [["savings"] if i % 3 else [] for i in range(n)],
        "is_fraud": np.arange(n) < 5,
        "vec": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1]),
    })
    store.write("customers", data)
    return data


def _stored(store: vectorstore.VectorStore, columns: list[str] | None = None) -> pa.Table:
    return store.to_arrow("customers", columns=columns).sort_by("customer_id")


RAW = {
    "iforest": lambda: IForest(random_state=0, contamination=0.05),
    "hbos": lambda: HBOS(contamination=0.05),
    "knn": lambda: KNN(contamination=0.05),
    "lof": lambda: LOF(contamination=0.05),
    "pca": lambda: PCA(random_state=0, contamination=0.05),
}


@pytest.mark.parametrize("kind", sorted(RAW))
def test_inductive_detectors_equal_raw_pyod(kind: str) -> None:
    X = _data()
    ours = RiskDetector(kind).fit(X).decision_function(X)
    # Kindred runs PCA in float64 (its score divides by the smallest eigenvalues)
    Xp = X.astype(np.float64) if kind == "pca" else X
    raw = RAW[kind]().fit(Xp).decision_function(Xp)
    np.testing.assert_allclose(ours, raw, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("kind", "cls"), [("ecod", ECOD), ("copod", COPOD)])
def test_transductive_detectors_equal_pyod_on_training_rows(kind: str, cls: type) -> None:
    X = _data()
    det = RiskDetector(kind).fit(X)
    np.testing.assert_allclose(det.decision_function(X), cls().fit(X).decision_scores_,
                               rtol=1e-9, atol=1e-9)
    # a row's score does not depend on the batch it is scored in (PyOD's would)
    new = _data(50, seed=7)
    one_by_one = np.concatenate([det.decision_function(new[i:i + 1]) for i in range(50)])
    np.testing.assert_array_equal(det.decision_function(new), one_by_one)
    pyod_fitted = cls().fit(X)
    assert not np.allclose(pyod_fitted.decision_function(new[:25]),
                           pyod_fitted.decision_function(new)[:25])


def test_ensemble_combines_member_scores() -> None:
    X = _data()
    cfg = risk.EnsembleConfig(members=(risk.IForestConfig(), risk.HBOSConfig()), combine="zscore")
    det = RiskDetector(cfg).fit(X)
    raw = [RAW["iforest"]().fit(X).decision_function(X), RAW["hbos"]().fit(X).decision_function(X)]
    expected = np.mean([(s - s.mean()) / s.std() for s in raw], axis=0)
    np.testing.assert_allclose(det.decision_function(X), expected, rtol=1e-9, atol=1e-12)
    rank = RiskDetector(cfg.model_copy(update={"combine": "rank"})).fit(X).decision_function(X)
    from scipy.stats import rankdata
    expected_rank = np.mean([rankdata(s, method="max") / s.size for s in raw], axis=0)
    np.testing.assert_allclose(rank, expected_rank, rtol=1e-12)


@pytest.mark.parametrize("kind", ["iforest", "ecod"])
def test_scores_through_the_store_equal_raw_pyod(store: vectorstore.VectorStore, kind: str) -> None:
    X = _data()
    _make_table(store, X)
    run = risk.score_table(store, "customers", kind, column="vec", batch_size=64)
    got = _stored(store, ["customer_id", "risk_score"]).column("risk_score").to_numpy()
    raw = (IForest(random_state=0, contamination=0.05).fit(X).decision_function(X) if kind == "iforest"
           else ECOD().fit(X).decision_scores_)
    # written as robust z-scores of raw PyOD's scores against the fit rows' (median, MAD)
    med = np.median(raw)
    z = (raw - med) / (1.4826 * np.median(np.abs(raw - med)))
    np.testing.assert_allclose(got, z, rtol=1e-9, atol=1e-9)
    assert run.threshold == pytest.approx(np.percentile(z, 95))
    assert run.n_rows == 400
    assert run.n_fit_rows == 400


def test_write_back_leaves_other_columns_unchanged(store: vectorstore.VectorStore) -> None:
    X = _data()
    _make_table(store, X)
    before = _stored(store)
    run = risk.score_table(store, "customers", "hbos")
    after = _stored(store)
    for name in before.column_names:
        assert after.column(name).equals(before.column(name)), name
    schema = store.table_info("customers").schema
    assert schema.field("risk_score").type == pa.float64()
    assert schema.field("risk_percentile").type == pa.float64()
    assert schema.field("risk_flag").type == pa.bool_()
    assert schema.field("risk_model").type == pa.string()
    assert "risk_rank" not in schema.names  # no global rank: scoring a row rewrites no other
    score = after.column("risk_score").to_numpy()
    pct = after.column("risk_percentile").to_numpy()
    # every customer was a fit row: the percentile is the share of scores at or below
    np.testing.assert_allclose(pct, 100 * (score[None, :] <= score[:, None]).mean(axis=1))
    flag = after.column("risk_flag").to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(flag, score > run.threshold)
    assert run.n_flagged == int(flag.sum())
    assert 0 < run.n_flagged < 60
    assert set(after.column("risk_model").to_pylist()) == {run.model_id}
    # a second run reuses the columns and an explicit threshold sets the flags
    run2 = risk.score_table(store, "customers", "hbos", threshold=float(np.sort(score)[-3]))
    assert run2.n_flagged == 2
    assert int(np.sum(_stored(store).column("risk_flag").to_numpy(zero_copy_only=False))) == 2


def test_top_lists_most_anomalous_first(store: vectorstore.VectorStore) -> None:
    _make_table(store, _data())
    risk.score_table(store, "customers", "ecod")
    t = risk.top(store, "customers", 5)
    assert t.column("risk_rank").to_pylist() == [1, 2, 3, 4, 5]
    assert set(t.column("customer_id").to_pylist()) == {f"c{i:04d}" for i in range(5)}


def test_persisted_model_reloads_and_scores_identically(tmp_path) -> None:
    path = str(tmp_path / "db")
    X = _data()
    with vectorstore.connect(path) as s:
        _make_table(s, X)
        run = risk.score_table(s, "customers", "iforest", fit_sample=200, seed=3)
        first = _stored(s, ["customer_id", "risk_score"]).column("risk_score").to_numpy()
    with vectorstore.connect(path) as s:  # a new process would see the same
        det, source, meta = risk.load_model(s, "customers")
        assert meta["model_id"] == run.model_id
        assert source.column == "vec"
        assert meta["versions"]["pyod"]
        assert meta["n_fit_rows"] == 200
        np.testing.assert_array_equal(det.risk_score(X), first)
        again = risk.rescore(s, "customers")  # no refit: same scores, same model id
        assert again.model_id == run.model_id
        np.testing.assert_array_equal(
            _stored(s, ["customer_id", "risk_score"]).column("risk_score").to_numpy(), first)
        new = _data(20, seed=11)
        out = risk.score_new(s, "customers", pa.table(
            {"vec": pa.FixedSizeListArray.from_arrays(pa.array(new.ravel()), DIM)}))
        np.testing.assert_array_equal(out.column("risk_score").to_numpy(),
                                      det.risk_score(new))


def _evil_pickle(marker) -> bytes:
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    return pickle.dumps(Evil())


def test_tampered_or_incompatible_models_are_refused(tmp_path) -> None:
    s = vectorstore.connect(str(tmp_path / "db"))
    _make_table(s, _data())
    run = risk.score_table(s, "customers", "hbos")
    name = run.artifact
    data, meta = s.get_artifact(name)
    marker = tmp_path / "unpickled"
    meta.pop("sha256")

    # 1. bytes changed in place, stored digest kept: the store's sha256 check fails
    evil = _evil_pickle(marker)
    row = pa.table({"name": [name], "data": [evil], "sha256": [hashlib.sha256(data).hexdigest()],
                    "metadata": [json.dumps(meta)], "created_at": [None]},
                   schema=s.table_info(ARTIFACT_TABLE).schema)
    s.write(ARTIFACT_TABLE, row, mode="upsert")
    with pytest.raises(ModelIntegrityError, match="sha256"):
        risk.load_model(s, "customers")
    # 2. bytes replaced with a fresh digest: the table recorded the original one
    s.put_artifact(name, evil, meta)
    with pytest.raises(ModelIntegrityError, match="recorded"):
        risk.load_model(s, "customers")
    # 3. versions that do not match this process are refused before unpickling
    s.put_artifact(name, data, {**meta, "versions": {**meta["versions"], "sklearn": "0.24.2"}})
    s.set_metadata("customers", {"risk": {**s.table_info("customers").metadata["risk"],
                                          "sha256": hashlib.sha256(data).hexdigest()}})
    with pytest.raises(ModelIntegrityError, match=r"sklearn 0\.24\.2"):
        risk.load_model(s, "customers")
    s.put_artifact(name, evil, {**meta, "versions": {**meta["versions"], "pyod": "1.0.0"}})
    s.set_metadata("customers", {"risk": {**s.table_info("customers").metadata["risk"],
                                          "sha256": hashlib.sha256(evil).hexdigest()}})
    with pytest.raises(ModelIntegrityError, match=r"pyod 1\.0\.0"):
        risk.load_model(s, "customers")
    assert not marker.exists()
    # the genuine artifact still loads
    s.put_artifact(name, data, meta)
    s.set_metadata("customers", {"risk": {**s.table_info("customers").metadata["risk"],
                                          "sha256": hashlib.sha256(data).hexdigest()}})
    assert isinstance(risk.load_model(s, "customers")[0], RiskDetector)


def test_quadratic_detectors_sample_or_refuse(store: vectorstore.VectorStore) -> None:
    _make_table(store, _data(300))
    with pytest.raises(TooManyRows, match="300 rows is above its limit of 100"):
        risk.score_table(store, "customers", KNNConfig(max_rows=100, on_large="refuse"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = risk.score_table(store, "customers", {"kind": "lof", "max_rows": 100})
    assert any("sample of 100 of 300 rows" in str(w.message) for w in caught)
    assert run.messages
    assert run.messages[0] == "risk scored vec: an l2 column, whose vectors keep their length"
    assert "LOF fitted on a seeded sample of 100 of 300" in run.messages[1]
    assert run.n_rows == 300


def test_bad_inputs_are_clear_errors(store: vectorstore.VectorStore) -> None:
    X = _data(50)
    _make_table(store, X)
    # the store refuses NaN vectors on write; vectors read from elsewhere are checked too
    bad = X.copy()
    bad[17, 3] = np.nan
    batch = pa.table({"customer_id": [f"c{i:04d}" for i in range(50)],
                      "vec": pa.FixedSizeListArray.from_arrays(pa.array(bad.ravel()), DIM)})
    with pytest.raises(InvalidRiskInput, match=r"customer_id='c0017' has a NaN"):
        risk.FeatureSource(column="vec").matrix(batch, "customers", "customer_id")
    store.update("customers", pa.table({"customer_id": ["c0017"], "income": [float("nan")]}))
    with pytest.raises(InvalidRiskInput, match=r"'income': customer_id='c0017' is NaN"):
        risk.score_table(store, "customers", "ecod", attributes=["age", "income"])
    store.add_columns("customers", [pa.field("flat", pa.float64())])
    store.update("customers", pa.table({"customer_id": [f"c{i:04d}" for i in range(50)],
                                        "flat": [1.0] * 50}))
    with pytest.raises(InvalidRiskInput, match=r"\['flat'\] are constant"):
        risk.score_table(store, "customers", "ecod", attributes=["age", "flat"])
    with pytest.raises(InvalidRiskInput, match="only numeric"):
        risk.score_table(store, "customers", "ecod", attributes=["region"])
    store.create_table("empty", pa.schema([("customer_id", pa.string())]), key="customer_id",
                       vectors=[VectorColumn("vec", DIM)])
    with pytest.raises(InvalidRiskInput, match="'empty' is empty"):
        risk.score_table(store, "empty", "ecod")
    with pytest.raises(InvalidRiskInput, match="every feature is constant"):
        RiskDetector("iforest").fit(np.ones((10, 3)))
    with pytest.raises(risk.RiskError, match="unknown detector 'magic'"):
        risk.score_table(store, "customers", "magic")


def test_explanation_names_deviating_features_and_normal_neighbours(store) -> None:
    X = _data()
    X[7, 6] = 40.0  # one customer far out on one dimension
    _make_table(store, X)
    risk.score_table(store, "customers", "knn")
    e = risk.explain(store, "customers", "c0007", n_features=3, n_neighbours=4)
    assert e.deviations[0].feature == "vec[6]"
    assert e.deviations[0].robust_z > 10
    assert e.risk_rank == 1
    assert e.percentile == 100.0
    assert e.risk_flag
    # "vec" was not made from the table's attributes: the detector used none of them, so
    # none is listed (age and income sit in the table, unused)
    assert e.attribute_deviations == []
    assert len(e.neighbours) == 4
    assert e.metric == "l2"
    flagged = set(risk.top(store, "customers", 400, flagged_only=True)
                  .column("customer_id").to_pylist())
    ids = [nb.key for nb in e.neighbours]
    assert "c0007" not in ids
    assert not flagged & set(ids)
    dists = [nb.distance for nb in e.neighbours]
    assert dists == sorted(dists)
    others = np.array([i for i in range(400) if f"c{i:04d}" not in flagged and i != 7])
    exact = np.sort(np.linalg.norm(X[others] - X[7], axis=1))[:4]
    np.testing.assert_allclose(dists, exact, rtol=1e-4)
    # a normal customer sits low and has no large deviation
    e2 = risk.explain(store, "customers", "c0200")
    assert e2.percentile < 99
    assert abs(e2.deviations[0].robust_z) < 6
    json.dumps(e.model_dump())


def test_evaluation_table_with_label(store: vectorstore.VectorStore) -> None:
    _make_table(store, _data())
    rows = risk.evaluate(store, "customers", "is_fraud", ["ecod", "iforest", "default"])
    assert [r.detector for r in rows] == ["ecod", "iforest", "default"]
    for r in rows:
        assert r.n_anomalies == 5
        assert r.roc_auc > 0.95
        assert r.precision_at_n >= 0.8
    ref = risk.label_metrics(np.arange(400) < 5, ECOD().fit(_data()).decision_scores_)
    assert rows[0].roc_auc == pytest.approx(ref["roc_auc"])
    assert rows[0].average_precision == pytest.approx(ref["average_precision"])
    t = risk.evaluation_table(rows)
    assert t.num_rows == 3
    assert "precision_at_n" in t.column_names
    json.dumps([r.model_dump() for r in rows])
    with pytest.raises(risk.RiskError, match="label column 'region'"):
        risk.evaluate(store, "customers", "region", ["ecod"])


def test_progress_reports_increasing_counts_up_to_the_row_count(tmp_path) -> None:
    with vectorstore.connect(str(tmp_path / "db")) as s:
        _make_table(s, _data())
        for call in (lambda p: risk.score_table(s, "customers", "hbos", batch_size=64, progress=p),
                     lambda p: risk.rescore(s, "customers", batch_size=100, progress=p)):
            seen: list[tuple[int, int | None]] = []
            run = call(lambda done, total, seen=seen: seen.append((done, total)))
            done = [d for d, _ in seen]
            assert len(done) >= 4  # one call per streamed batch, not one at the end
            assert all(b > a for a, b in itertools.pairwise(done)), done
            assert done[-1] == run.n_rows == 400
            assert {t for _, t in seen} == {400}


@pytest.mark.parametrize("detector", [None, "pca", "iforest"])
def test_constant_vector_dimensions_are_ignored_not_nan(tmp_path, detector):
    """One-hot or padded vectors have dimensions constant over every row: the scores must
    stay finite (PCA alone would divide by a zero eigenvalue) and rank like the varying part."""
    rng = np.random.default_rng(3)
    n, d = 600, 8
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, 2] = 0.0
    x[:5] += 6.0  # planted outliers, far out on every varying dimension
    x[:5, 2] = 0.0
    store = vectorstore.connect(str(tmp_path / "s"))
    store.create_table("customers", pa.schema([("customer_id", pa.string())]),
                       key="customer_id", vectors=[VectorColumn("v", d)])
    store.write("customers", pa.table({
        "customer_id": [f"c{i:04d}" for i in range(n)],
        "v": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), d)}))
    run = risk.score_table(store, "customers", detector, column="v")
    assert any("constant" in m for m in run.messages)
    t = store.to_arrow("customers", columns=["customer_id", "risk_score"])
    scores = t.column("risk_score").to_numpy()
    assert np.isfinite(scores).all()
    top5 = set(risk.top(store, "customers", 5).column("customer_id").to_pylist())
    assert top5 == {f"c{i:04d}" for i in range(5)}
