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
    same 10,000-row fit guard rail as ``bench.risk_quality`` (only 32_shuttle exceeds it)."""
    from sklearn.metrics import roc_auc_score

    from bench.risk_quality import SINGLES, standardise, with_row_limit
    from services.risk import RiskDetector

    files = sorted((datasets_dir / "adbench").glob("*.npz"))
    if len(files) < 10:
        pytest.skip(f"expected the 10 ADBench files, found {len(files)}")
    auc: dict[str, list[float]] = {k: [] for k in (*SINGLES, "default")}
    for path in files:
        with np.load(path, allow_pickle=False) as f:
            X, y = standardise(f["X"]), np.asarray(f["y"]).astype(bool)
        for name in auc:
            det = RiskDetector(with_row_limit(name, 10_000)).fit(X)
            auc[name].append(roc_auc_score(y, det.decision_function(X)))
    avg = {k: float(np.mean(v)) for k, v in auc.items()}
    best = max(SINGLES, key=avg.__getitem__)
    assert avg["default"] >= avg[best], avg
    assert avg["default"] > 0.75, avg  # well above chance on average, not a degenerate pass
