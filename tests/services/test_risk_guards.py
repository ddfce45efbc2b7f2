"""Never a non-finite risk score: rank-deficient and one-hot features for every detector,
members that fail, bad thresholds; a failed run writes nothing."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import vectorstore
from services import risk
from services.risk import InvalidRiskInput, RiskDetector
from services.risk import detector as detector_module
from services.risk.config import SINGLE_KINDS
from vectorstore import VectorColumn

EVERY_DETECTOR = [*SINGLE_KINDS, "default"]


def rank_deficient(n: int = 500, seed: int = 0) -> np.ndarray:
    """Numbers with exact linear dependencies (a sum, a multiple, a copy), a one-hot block
    (its levels sum to one) and a constant: rank 6 of 11 columns, plus 5 planted outliers."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(3, n))
    level = rng.integers(0, 3, n)
    onehot = np.eye(3)[level]
    X = np.column_stack([a, b, c, a + b, 2 * a, c, onehot, np.full(n, 7.0), a - c])
    X[:5, :3] += 6.0
    X[:5, 3] = X[:5, 0] + X[:5, 1]
    X[:5, 4] = 2 * X[:5, 0]
    X[:5, 5] = X[:5, 2]
    X[:5, 10] = X[:5, 0] - X[:5, 2]
    return X.astype(np.float32)


@pytest.mark.parametrize("kind", EVERY_DETECTOR)
def test_rank_deficient_features_score_finitely(kind: str) -> None:
    X = rank_deficient()
    det = RiskDetector(kind).fit(X)
    scores = det.risk_score(X)
    assert np.isfinite(scores).all()
    assert np.isfinite(det.threshold_)
    # it still ranks: the planted outliers are among the highest scores
    top = set(np.argsort(-scores)[:25].tolist())
    assert len(top & set(range(5))) >= (3 if kind in ("hbos", "lof") else 4), kind
    new = rank_deficient(50, seed=9)
    assert np.isfinite(det.risk_score(new)).all()


def test_pca_uses_the_rank_reduced_basis_and_says_so() -> None:
    X = rank_deficient()
    det = RiskDetector("pca").fit(X)
    # 11 columns, 1 constant dropped; 10 left span a, b, c and two one-hot dimensions
    assert any("span 5 of 10 dimensions" in m for m in det.messages_), det.messages_
    from pyod.models.pca import PCA

    with np.errstate(all="ignore"):
        varying = X[:, np.ptp(X, axis=0) > 0].astype(np.float64)
        raw = PCA(random_state=0).fit(varying).decision_scores_
    assert not np.isfinite(raw).all()  # raw PyOD divides by the zero eigenvalues
    # full-rank data is untouched: equal to PyOD's own PCA
    Y = np.random.default_rng(1).normal(size=(300, 6))
    np.testing.assert_allclose(RiskDetector("pca").fit(Y).decision_function(Y),
                               PCA(random_state=0).fit(Y).decision_function(Y), rtol=1e-9)


def _table(store: vectorstore.VectorStore, X: np.ndarray) -> None:
    store.create_table("customers", pa.schema([("customer_id", pa.string())]),
                       key="customer_id", vectors=[VectorColumn("v", X.shape[1], "l2")])
    store.write("customers", pa.table({
        "customer_id": [f"c{i:04d}" for i in range(X.shape[0])],
        "v": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])}))


@pytest.mark.parametrize("kind", EVERY_DETECTOR)
def test_written_scores_are_finite_for_every_detector(tmp_path, kind: str) -> None:
    s = vectorstore.connect(str(tmp_path / "s"))
    _table(s, rank_deficient())
    run = risk.score_table(s, "customers", kind)
    t = s.to_arrow("customers", columns=["risk_score", "risk_flag"])
    scores = t.column("risk_score").to_numpy()
    assert np.isfinite(scores).all()
    flags = t.column("risk_flag").to_numpy(zero_copy_only=False)
    np.testing.assert_array_equal(flags, scores > run.threshold)
    assert 0 < run.n_flagged <= 0.1 * scores.size


class _BrokenHBOS:
    """An estimator whose scores are NaN for some rows (a numerical failure)."""

    def __init__(self, *, at_fit: bool) -> None:
        self.at_fit = at_fit

    def fit(self, X: np.ndarray) -> _BrokenHBOS:
        self.decision_scores_ = self.decision_function(X) if self.at_fit else np.zeros(len(X))
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        out = np.asarray(X[:, 0], dtype=np.float64).copy()
        out[::7] = np.nan
        return out


def _patch_hbos(monkeypatch: pytest.MonkeyPatch, *, at_fit: bool) -> None:
    real = detector_module._pyod_estimator
    monkeypatch.setattr(detector_module, "_pyod_estimator", lambda cfg: (
        _BrokenHBOS(at_fit=at_fit) if cfg.kind == "hbos" else real(cfg)))


def test_a_member_that_scores_nan_is_left_out_with_a_message(monkeypatch) -> None:
    _patch_hbos(monkeypatch, at_fit=True)
    X = rank_deficient()
    cfg = {"kind": "ensemble", "members": [{"kind": "iforest"}, {"kind": "hbos"},
                                           {"kind": "pca"}]}
    det = RiskDetector(cfg).fit(X)
    assert det.member_kinds_ == ["iforest", "pca"]
    assert any("HBOS gave a non-finite score to 72 of 500 fit rows" in m
               and "left out of the ensemble" in m for m in det.messages_), det.messages_
    assert np.isfinite(det.risk_score(X)).all()
    with pytest.raises(InvalidRiskInput, match=r"^HBOS gave a non-finite score .*another"):
        RiskDetector("hbos").fit(X)
    monkeypatch.setattr(detector_module, "_pyod_estimator", lambda cfg: _BrokenHBOS(at_fit=True))
    with pytest.raises(InvalidRiskInput, match="no ensemble member could score"):
        RiskDetector({"kind": "ensemble", "members": [{"kind": "hbos"}, {"kind": "hbos"}]}).fit(X)


def test_a_member_that_raises_is_left_out(monkeypatch) -> None:
    real = detector_module._pyod_estimator

    class Exploding:
        def fit(self, X: np.ndarray) -> None:
            raise ValueError("Input contains infinity or a value too large for dtype('float64').")

    monkeypatch.setattr(detector_module, "_pyod_estimator",
                        lambda cfg: Exploding() if cfg.kind == "knn" else real(cfg))
    det = RiskDetector("default").fit(rank_deficient())
    assert det.member_kinds_ == ["iforest", "pca"]
    assert any(m.startswith("KNN could not be fitted on these features (Input contains "
                            "infinity") for m in det.messages_)


def test_a_non_finite_score_at_scoring_time_writes_nothing(tmp_path, monkeypatch) -> None:
    _patch_hbos(monkeypatch, at_fit=False)  # finite at fit, NaN for rows scored afterwards
    s = vectorstore.connect(str(tmp_path / "s"))
    _table(s, rank_deficient())
    before = s.version("customers")
    with pytest.raises(InvalidRiskInput, match=r"customer_id='c0000' got a non-finite risk "
                                               r"score from hbos .*nothing was written"):
        risk.score_table(s, "customers", "hbos")
    assert "risk_score" not in s.table_info("customers").schema.names
    assert s.version("customers") == before
    keys = pa.array(["c0000", "c0001"])
    with pytest.raises(InvalidRiskInput, match="NaN or infinite; nothing was written"):
        risk.write_scores(s, "customers", keys, np.array([1.0, np.nan]), threshold=0.0,
                          model_id="m")
    assert "risk_score" not in s.table_info("customers").schema.names


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_threshold_is_refused(tmp_path, bad: float) -> None:
    s = vectorstore.connect(str(tmp_path / "s"))
    _table(s, rank_deficient())
    with pytest.raises(risk.RiskError, match="must be a finite number"):
        risk.score_table(s, "customers", "iforest", threshold=bad)
    assert "risk_score" not in s.table_info("customers").schema.names
