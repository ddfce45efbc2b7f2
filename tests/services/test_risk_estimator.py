"""RiskDetector as a scikit-learn estimator: the common checks, flat parameters, PyOD's
fitted-attribute conventions, and detectors persisted before the flat parameters."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

import vectorstore
from services import risk
from services.risk import InvalidRiskInput, RiskDetector, RiskError
from services.risk.config import default_ensemble, parse_detector
from services.risk.persistence import TRUSTED
from vectorstore import estimators

from .test_risk import _data, _make_table

OLD_MODEL = Path(__file__).parent / "data" / "risk_model_before_flat_params"

PYOD_LABELS = ("predict and fit_predict return PyOD's labels (1 = anomaly, 0 = normal), not "
               "scikit-learn's outlier convention (-1 = outlier, +1 = inlier); likewise "
               "decision_function is higher for more anomalous rows, the opposite sign of "
               "scikit-learn's (negative = outlier)")


def _expected_failures(estimator: RiskDetector) -> dict[str, str]:
    """The common checks RiskDetector fails on purpose (PyOD's conventions, not sklearn's)."""
    return {"check_outliers_train": PYOD_LABELS, "check_outliers_fit_predict": PYOD_LABELS}


@parametrize_with_checks([RiskDetector(), RiskDetector("ecod"), RiskDetector("hbos")],
                         expected_failed_checks=_expected_failures)
def test_sklearn_common_checks(estimator, check) -> None:
    check(estimator)


def test_flat_parameters_round_trip_through_get_set_params_and_clone() -> None:
    det = RiskDetector("knn", n_neighbors=7, contamination=0.1)
    params = det.get_params()
    assert params["detector"] == "knn"
    assert params["n_neighbors"] == 7
    assert "config" not in params  # no parameter hiding the others
    copy = clone(det).set_params(n_neighbors=9)
    assert copy.get_params()["n_neighbors"] == 9
    assert det.n_neighbors == 7
    cfg = copy._config()
    assert (cfg.kind, cfg.n_neighbors, cfg.contamination) == ("knn", 9, 0.1)
    # n_neighbors=None: each detector's own default
    assert RiskDetector("lof")._config().n_neighbors == 20
    assert RiskDetector("knn")._config().n_neighbors == 5


def test_defaults_are_the_default_ensemble_and_configs_map_to_flat_parameters() -> None:
    assert RiskDetector()._config() == default_ensemble()
    spec = {"kind": "ensemble", "combine": "rank", "contamination": 0.02,
            "members": [{"kind": "knn", "n_neighbors": 12}, {"kind": "ecod"}]}
    cfg = parse_detector(spec)
    det = RiskDetector.from_config(spec)
    assert det.get_params()["combine"] == "rank"
    assert det._config() == cfg
    assert clone(det)._config() == cfg
    # a configuration handed to ``detector`` still works (callers holding one), but not mixed
    assert RiskDetector(cfg)._config() == cfg
    with pytest.raises(RiskError, match="contamination"):
        RiskDetector(cfg, contamination=0.3).fit(_data(50))
    with pytest.raises(RiskError, match="unknown detector"):
        RiskDetector("nope").fit(_data(50))


def test_decision_scores_in_row_order_predict_gives_int_labels() -> None:
    X = _data(200)
    det = RiskDetector("iforest").fit(X)
    np.testing.assert_allclose(det.decision_scores_, det.decision_function(X))
    assert not np.all(np.diff(det.decision_scores_) >= 0)  # row order, not sorted
    np.testing.assert_array_equal(det.sorted_risk_scores_,
                                  np.sort(det.to_risk_scale(det.decision_scores_)))
    np.testing.assert_array_equal(det.train_scores_, det.sorted_risk_scores_)  # former name
    labels = det.predict(X)
    assert labels.dtype.kind == "i"
    assert set(np.unique(labels)) <= {0, 1}
    np.testing.assert_array_equal(labels, det.labels_)
    assert labels[:5].sum() >= 4  # the planted outliers
    assert 0 < labels.sum() <= 0.06 * X.shape[0]


def test_unfitted_and_bad_input_raise_kindred_errors_that_sklearn_reads() -> None:
    with pytest.raises(NotFittedError) as info:
        RiskDetector().decision_function(_data(10))
    assert isinstance(info.value, RiskError)
    det = RiskDetector("ecod").fit(_data(50))
    with pytest.raises(InvalidRiskInput, match="has 3 features, but RiskDetector is expecting 8"):
        det.decision_function(_data(10)[:, :3])
    bad = _data(10)
    bad[4, 6] = np.nan
    with pytest.raises(InvalidRiskInput, match="row 4 has a NaN or infinite value in feature 6"):
        det.risk_score(bad)
    with pytest.raises(ValueError, match="minimum of 2 is required"):
        RiskDetector("ecod").fit(_data(1))


def _old() -> tuple[bytes, dict]:
    return OLD_MODEL.with_suffix(".skops").read_bytes(), json.loads(
        OLD_MODEL.with_suffix(".json").read_text())


def _check_old_detector(det: RiskDetector, ref: dict) -> None:
    probe = np.asarray(ref["probe"])
    np.testing.assert_array_equal(det.decision_function(probe), ref["decision"])
    np.testing.assert_array_equal(det.risk_score(probe), ref["risk"])
    np.testing.assert_array_equal(det.percentile(det.risk_score(probe)), ref["percentile"])
    np.testing.assert_array_equal(det.train_scores_, ref["train_scores"])
    assert det.threshold_ == ref["threshold"]
    # its parameters are readable as flat ones, and a clone refits to the same model
    assert det._config() == parse_detector(ref["config"])
    assert "config" not in det.get_params()
    X = np.asarray(ref["X"])
    np.testing.assert_allclose(clone(det).fit(X).decision_function(probe), ref["decision"])


def test_detector_persisted_before_flat_parameters_still_loads(tmp_path) -> None:
    data, ref = _old()
    det = estimators.loads(data, what="old model", expect=RiskDetector, trusted=TRUSTED)
    _check_old_detector(det, ref)
    # pickling (as a web app's cache would) keeps it working
    _check_old_detector(pickle.loads(pickle.dumps(det)), ref)


def test_old_model_loads_through_the_store(tmp_path) -> None:
    data, ref = _old()
    s = vectorstore.connect(str(tmp_path / "db"))
    _make_table(s, _data())
    run = risk.score_table(s, "customers", "ecod")
    _, meta = s.get_artifact(run.artifact)
    meta.pop("sha256")
    s.put_artifact(run.artifact, data, meta)
    s.set_metadata("customers", {"risk": {**s.table_info("customers").metadata["risk"],
                                          "sha256": hashlib.sha256(data).hexdigest()}})
    det, _, _ = risk.load_model(s, "customers")
    _check_old_detector(det, ref)
