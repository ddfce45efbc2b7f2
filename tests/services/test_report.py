"""The HTML report: plots drawn from arrays, page opened in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from services.report import (
    CalibrationCurve,
    CustomerMap,
    ProductScores,
    RankingCurve,
    ReportData,
    RiskScores,
    gain_curve,
    lift_at,
    pca_2d,
    write_report,
)

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--no-first-run", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _data(rng: np.random.Generator, n: int = 600) -> ReportData:
    y = rng.random(n) < 0.2
    good = y + rng.normal(0, 0.6, n)
    noise = rng.normal(0, 1, n)
    vecs = rng.normal(size=(n, 8)) + y[:, None] * 2.0
    risk = rng.normal(size=n)
    return ReportData(
        title="Test report", subtitle="synthetic arrays",
        curves=[RankingCurve("term_deposit", "centroid", y, good, auc=0.8),
                RankingCurve("term_deposit", "random", y, noise)],
        calibration=[CalibrationCurve("term_deposit", [
            {"predicted": p, "observed": min(1.0, p * 1.1), "rows": 60}
            for p in np.linspace(0.02, 0.6, 10)])],
        distributions=[ProductScores("term_deposit", good[y], good[~y])],
        risk=RiskScores(risk, threshold=float(np.quantile(risk, 0.95)), model="iforest"),
        customer_map=CustomerMap("vec_tabular", vecs, {"term_deposit": y},
                                 risk_flag=risk > np.quantile(risk, 0.95)),
        facts={"customers": f"{n:,}"},
    )


def test_gain_curve_and_lift_measure_ranking() -> None:
    y = np.array([1, 1, 0, 0, 0, 0, 0, 0, 0, 0], dtype=bool)
    perfect = np.arange(10, 0, -1).astype(float)  # holders first
    x, g = gain_curve(y, perfect)
    assert g[2] == 1.0
    assert x[2] == pytest.approx(0.2)
    assert lift_at(y, perfect, 0.2) == pytest.approx(5.0)
    worst = -perfect  # holders last
    assert lift_at(y, worst, 0.2) == 0.0
    _, g_worst = gain_curve(y, worst)
    assert g_worst[8] == 0.0
    assert g_worst[-1] == 1.0


def test_pca_2d_finds_the_main_direction() -> None:
    rng = np.random.default_rng(0)
    t = rng.normal(size=500)
    x = np.outer(t, [3.0, 0, 0, 4.0]) + rng.normal(0, 0.01, size=(500, 4))
    xy = pca_2d(x)
    assert abs(np.corrcoef(xy[:, 0], t)[0, 1]) > 0.999
    assert xy[:, 1].std() < 0.05


def test_report_writes_self_contained_html_and_pngs(tmp_path: Path) -> None:
    r = write_report(_data(np.random.default_rng(1)), tmp_path / "rep")
    page = Path(r.html).read_text()
    assert r.sections == ["gain", "calibration", "distributions", "risk", "map"]
    assert len(r.images) == 5
    for img in r.images:
        assert Path(img).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # every plot is embedded (no external file needed to view the page)
    assert page.count('src="data:image/png;base64,') == 5
    assert "src=\"http" not in page
    assert "src=\"/" not in page


def test_empty_report_says_what_is_missing(tmp_path: Path) -> None:
    r = write_report(ReportData(), tmp_path)
    assert r.images == []
    assert "No data to plot yet" in Path(r.html).read_text()


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install -y chromium)")
    r = write_report(_data(np.random.default_rng(2)), tmp_path / "rep")
    url = Path(r.html).as_uri()
    profile = tmp_path / "profile"
    base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=False)
    assert dom.returncode == 0, dom.stderr[-2000:]
    loaded = re.search(r'data-plots-loaded="(\d+)"', dom.stdout)
    assert loaded, "the page's load handler did not run"
    assert int(loaded.group(1)) == len(r.images) == 5  # every plot decoded
    assert dom.stdout.count("<img") == 5
    console = [ln for ln in dom.stderr.splitlines() if ":CONSOLE" in ln]
    assert console == [], console
    shot = tmp_path / "report.png"
    res = subprocess.run([*base, "--window-size=1200,2400", f"--screenshot={shot}", url],
                         capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels.shape[0] >= 2000
    assert pixels.shape[1] >= 1100
    assert pixels[..., :3].std() > 0.05  # not a blank page
    kept = Path(__file__).resolve().parents[2] / "build" / "report-screenshot.png"
    kept.parent.mkdir(exist_ok=True)
    shutil.copyfile(shot, kept)
