"""The store path gives the same scores as raw PyOD on small ADBench files."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest

from bench.risk_quality import run_dataset


@pytest.mark.datasets
@pytest.mark.parametrize("stem", ["18_Ionosphere", "29_Pima"])
def test_store_path_agrees_with_raw_pyod(datasets_dir, stem: str) -> None:
    path = datasets_dir / "adbench" / f"{stem}.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    detectors = {"ecod": "ecod", "iforest": "iforest", "knn": "knn",
                 "ens": {"kind": "ensemble", "members": [{"kind": "ecod"}, {"kind": "iforest"}]}}
    with tempfile.TemporaryDirectory() as tmp:
        rows = run_dataset(path, detectors, tmp)
    assert [r["detector"] for r in rows] == list(detectors)
    for r in rows:
        assert r["max_rel_diff"] < 1e-6, r
        assert r["roc_auc"] == pytest.approx(r["raw_roc_auc"], abs=1e-9)
        assert r["roc_auc"] > 0.55, r  # above chance on both files (ECOD on Pima: 0.594)
    assert np.isfinite([r["roc_auc"] for r in rows]).all()


@pytest.mark.slow
@pytest.mark.datasets
def test_default_detector_meets_the_adbench_target(datasets_dir) -> None:
    """The default ensemble's average ROC-AUC over the ADBench files is at least the best
    single detector's (the issue's target; table in docs/quality.md). KNN and LOF use the
    same 10,000-row fit guard rail as ``bench.risk_quality`` (shuttle and mammography
    exceed it)."""
    from scipy.stats import rankdata
    from sklearn.metrics import roc_auc_score

    from bench.risk_quality import SINGLES, standardise, with_row_limit
    from services import risk
    from services.risk import RiskDetector

    files = sorted((datasets_dir / "adbench").glob("*.npz"))
    if len(files) < 10:
        pytest.skip(f"expected the 10 ADBench files, found {len(files)}")
    cfg = risk.parse_detector("default")
    kinds = [m.kind for m in cfg.members]
    assert set(kinds) <= set(SINGLES)
    auc: dict[str, list[float]] = {k: [] for k in (*SINGLES, "default")}
    for i, path in enumerate(files):
        with np.load(path, allow_pickle=False) as f:
            X, y = standardise(f["X"]), np.asarray(f["y"]).astype(bool)
        scores = {k: RiskDetector(with_row_limit(k, 10_000)).fit(X).decision_function(X)
                  for k in SINGLES}
        # the default scores every fit row as the combination of its members' scores (checked
        # against the real default detector on the first file), so the members run once
        parts = [scores[k] for k in kinds]
        if cfg.combine == "zscore":
            default = np.mean([(s - s.mean()) / (s.std() or 1.0) for s in parts], axis=0)
        else:
            default = np.mean([rankdata(s, method="max") / s.size for s in parts], axis=0)
        if i == 0:
            real = RiskDetector(with_row_limit("default", 10_000)).fit(X).decision_function(X)
            np.testing.assert_allclose(real, default, rtol=1e-9, atol=1e-12)
        for k in SINGLES:
            auc[k].append(roc_auc_score(y, scores[k]))
        auc["default"].append(roc_auc_score(y, default))
    avg = {k: float(np.mean(v)) for k, v in auc.items()}
    best = max(SINGLES, key=avg.__getitem__)
    assert avg["default"] >= avg[best], avg
    assert avg["default"] > 0.75, avg  # well above chance on average, not a degenerate pass
