"""Risk quality on ADBench through the product path: CSV -> ingest -> embed tabular -> risk
score, with the defaults, against raw PyOD on z-scored X in the same run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from bench.risk_quality import RAW_DETECTORS, product_path, run_dataset, summarise, write_csv
from services.cli import main


def _adbench(datasets_dir: Path) -> list[Path]:
    files = sorted((datasets_dir / "adbench").glob("*.npz"))
    if len(files) < 10:
        pytest.skip(f"expected the 10 ADBench files in {datasets_dir / 'adbench'}, "
                    f"found {len(files)}")
    return files


@pytest.mark.datasets
def test_cli_commands_give_the_product_path_figures(datasets_dir: Path, tmp_path: Path) -> None:
    """The user's commands and the bench's calls are the same path: same scores, same AUC."""
    path = datasets_dir / "adbench" / "18_Ionosphere.npz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with np.load(path, allow_pickle=False) as f:
        X, y = f["X"], f["y"].astype(bool)
    csv = write_csv(tmp_path / "ionosphere.csv", X, y)
    store = str(tmp_path / "cli")

    def kindred(*argv: str) -> str:
        res = CliRunner().invoke(main, ["--store", store, *argv], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        return res.stdout

    kindred("ingest", "customers", str(csv), "--id-column", "customer_id")
    kindred("embed", "tabular", "--exclude", "is_anomaly")
    out = kindred("risk", "score")
    assert "on vector column 'vec_tabular_raw'" in out
    assert "flagged (risk_score > " in out
    assert "nan" not in out.lower()
    ev = json.loads(kindred("--json", "evaluate", "risk", "--label", "is_anomaly",
                            "--detector", "default"))
    assert ev["column"] == "vec_tabular_raw"
    bench = product_path(csv, tmp_path / "bench", ["default"], max_rows=None)
    assert bench["finite"]
    assert ev["rows"][0]["roc_auc"] == pytest.approx(bench["auc"]["default"], abs=1e-12)
    assert bench["auc"]["default"] > 0.8  # 351 rows, 126 anomalies: far above chance


@pytest.mark.slow
@pytest.mark.datasets
def test_default_detector_through_the_product_path_meets_the_adbench_target(
        datasets_dir: Path, tmp_path: Path) -> None:
    """Over the 10 files, the default detector through the user's path averages at least the
    best single raw PyOD detector on z-scored X (same run; table in docs/quality.md), with no
    non-finite score on any file. KNN uses the 10,000-row guard rail on both sides."""
    rows = [run_dataset(f, tmp_path, max_rows=10_000) for f in _adbench(datasets_dir)]
    summary = summarise(rows)
    assert summary["non_finite_files"] == []
    avg = summary["average_roc_auc"]
    assert set(rows[0]["raw"]) == set(RAW_DETECTORS)
    assert all(np.isfinite(list(r["raw"].values())).all() for r in rows)
    best = summary["best_raw"]
    assert avg["kindred default"] >= avg[f"raw {best}"], avg
    assert avg["kindred default"] > 0.75, avg  # well above chance, not a degenerate pass
    for r in rows:  # the written column is the magnitude-preserving one, on every file
        assert r["product"]["column"] == "vec_tabular_raw"
        assert r["product"]["members"] == ["iforest", "knn", "pca"]
