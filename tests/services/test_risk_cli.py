"""Risk end to end through the ``kindred`` CLI on tables with categorical columns: the column
risk picks, finite scores, the threshold as printed, stored and plotted, string labels,
explanations limited to the attributes used, a risk-only report, and quality against raw
PyOD on z-scored one-hot features in the same run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from click.testing import CliRunner

import vectorstore
from bench.risk_quality import bank_quality, onehot_zscores, raw_pyod_scores
from services.cli import main
from services.risk.config import SINGLE_KINDS

ATTRIBUTES = {"age", "income", "region", "plan"}


def kindred(store: Path, *argv: str, ok: bool = True) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, ["--store", str(store), *argv], catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, f"{argv}: {res.output}"
    return res.exit_code, res.stdout, res.stderr


def kindred_json(store: Path, *argv: str) -> object:
    return json.loads(kindred(store, "--json", *argv)[1])


def customers_csv(path: Path, n: int = 800, seed: int = 0) -> Path:
    """Customers with numbers (one with blanks), categories, a bookkeeping column and a
    string label; 3% planted anomalies (far out on income and age, in rare levels)."""
    rng = np.random.default_rng(seed)
    bad = np.zeros(n, bool)
    bad[rng.choice(n, n * 3 // 100, replace=False)] = True
    age = rng.integers(20, 70, n)
    income = rng.normal(40_000, 6_000, n).round(2)
    region = rng.choice(["north", "south", "east", "west"], n, p=[0.4, 0.3, 0.2, 0.1]
                        ).astype(object)
    plan = rng.choice(["basic", "plus", "premium"], n, p=[0.6, 0.3, 0.1])
    income[bad] *= rng.uniform(2.5, 4.0, bad.sum())
    age[bad] = rng.integers(85, 99, bad.sum())
    region[bad] = "island"
    plan[bad] = "premium"
    income_col = pa.array([None if rng.random() < 0.03 else float(v) for v in income])
    pacsv.write_csv(pa.table({
        "customer_id": [f"c{i:04d}" for i in range(n)], "age": age, "income": income_col,
        "region": region, "plan": plan, "consolidation_run": rng.integers(1, 5, n),
        "status": np.where(bad, "bad", "good")}), path)
    return path


@pytest.fixture
def scored(tmp_path: Path) -> tuple[Path, dict, str]:
    store = tmp_path / "store"
    csv = customers_csv(tmp_path / "customers.csv")
    kindred(store, "ingest", "customers", str(csv), "--id-column", "customer_id")
    r = kindred_json(store, "embed", "tabular", "--exclude", "status")
    assert r["details"]["raw_column"] == "vec_tabular_raw"
    _, out, _ = kindred(store, "risk", "score")
    meta = vectorstore.connect(str(store)).table_info("customers").metadata["risk"]
    return store, meta, out


def test_risk_scores_the_magnitude_column_and_the_threshold_agrees(scored) -> None:
    store, meta, out = scored
    assert "on vector column 'vec_tabular_raw'" in out
    assert "note: risk scored vec_tabular_raw: the table's attributes as z-scores" in out
    assert "ensemble (iforest + knn + pca)" in out
    printed = float(re.search(r"flagged \(risk_score > (-?[0-9.]+), the top 5%", out).group(1))
    assert printed == pytest.approx(meta["threshold"], abs=5e-4)
    with vectorstore.connect(str(store)) as s:
        t = s.to_arrow("customers", columns=["risk_score", "risk_flag"])
        scores = t.column("risk_score").to_numpy()
        flags = t.column("risk_flag").to_numpy(zero_copy_only=False)
        assert np.isfinite(scores).all()
        np.testing.assert_array_equal(flags, scores > meta["threshold"])
        assert int(flags.sum()) == meta["n_flagged"]
        assert f"{meta['n_flagged']:,} flagged" in out
        assert 0.03 * 800 <= meta["n_flagged"] <= 0.07 * 800  # contamination 5%
        from services.report import _risk_scores, risk_legend

        rs, _ = _risk_scores(s, s.to_arrow("customers"), None, None)
    assert (rs.threshold, rs.n_flagged) == (meta["threshold"], meta["n_flagged"])
    assert f"risk_score > {printed:.3f} ({meta['n_flagged']:,} flagged)" in risk_legend(
        rs.threshold, rs.n_flagged)
    _, out, _ = kindred(store, "risk", "top", "-n", "5")
    assert "nan" not in out.lower()


def test_string_labels_and_the_raw_pyod_reference(scored) -> None:
    store, _, _ = scored
    ev = kindred_json(store, "evaluate", "risk", "--label", "status", "--positive", "bad")
    assert ev["positive"] == "bad"
    assert ev["column"] == "vec_tabular_raw"
    by = {r["detector"]: r for r in ev["rows"]}
    assert set(by) == {"iforest", "hbos", "ecod", "default"}
    assert all(r["n_anomalies"] == 24 for r in by.values())
    # the reference a user would run: raw IForest on the same attributes, z-scored one-hot
    with vectorstore.connect(str(store)) as s:
        t = s.to_arrow("customers", columns=["age", "income", "region", "plan", "status"])
    y = np.asarray(t.column("status").to_pylist()) == "bad"
    from sklearn.metrics import roc_auc_score

    ref = roc_auc_score(y, raw_pyod_scores("iforest", onehot_zscores(
        t, ["age", "income"], ["region", "plan"])))
    # both rank these planted anomalies almost perfectly: the default is not worse than the
    # reference beyond the noise of 24 anomalies (the bank test below is the comparison
    # with a margin, on data this test did not make)
    assert by["default"]["roc_auc"] > 0.95
    assert ref > 0.95
    assert by["default"]["roc_auc"] >= ref - 0.01, (by["default"]["roc_auc"], ref)
    code, _, err = kindred(store, "evaluate", "risk", "--label", "status", ok=False)
    assert code == 1
    assert err.strip() == ("Error: table 'customers', label column 'status' holds 'bad', "
                           "'good': name the value that marks an anomaly with --positive VALUE "
                           "(positive= in Python)")
    code, _, err = kindred(store, "evaluate", "risk", "--label", "status", "--positive", "Bad",
                           ok=False)
    assert code == 1
    assert "has no value 'Bad'; its values are 'bad', 'good'" in err
    assert len(err.strip().splitlines()) == 1


def test_explanations_list_only_the_attributes_used(scored) -> None:
    store, _, _ = scored
    top = kindred_json(store, "risk", "top", "-n", "1", "--attr", "status")
    assert top[0]["status"] == "bad"
    e = kindred_json(store, "risk", "explain", top[0]["customer_id"])
    used = {d["feature"] for d in e["attribute_deviations"]}
    assert used <= ATTRIBUTES
    assert {"age", "income"} <= used
    dims = {d["feature"] for d in e["deviations"]}
    assert dims <= {"age", "income", "income__missing", *(f"region={v}" for v in
                    ("east", "island", "north", "south", "west")),
                    *(f"plan={v}" for v in ("basic", "plus", "premium"))}, dims
    for d in e["attribute_deviations"]:
        if d["feature"] == "region":  # a planted anomaly is in the rare level
            assert d["value"] == "island"
            assert d["share"] == pytest.approx(24 / 800)
            assert d["robust_z"] == pytest.approx(2.17, abs=0.01)
    _, out, _ = kindred(store, "risk", "explain", top[0]["customer_id"])
    for never in ("consolidation_run", "status", "customer_id ", "vec_tabular_raw["):
        assert never not in out.split("Nearest")[0], out
    assert "held by 3.0% of customers" in out


def test_a_risk_only_report_on_a_table_without_holdings(scored, tmp_path: Path) -> None:
    store, meta, _ = scored
    r = kindred_json(store, "report", "--out", str(tmp_path / "rep"), "--label", "status",
                     "--positive", "bad")
    assert r["sections"] == ["risk", "map"]
    names = [Path(p).name for p in r["images"]]
    assert names == ["risk_scores.png", "risk_curves.png", "customer_map.png"]
    page = Path(r["html"]).read_text()
    ev = kindred_json(store, "evaluate", "risk", "--label", "status", "--positive", "bad",
                      "--detector", "default")
    auc = re.search(r"risk ROC-AUC on status = bad</th><td>([0-9.]+)<", page).group(1)
    assert float(auc) == pytest.approx(ev["rows"][0]["roc_auc"], abs=5e-4)
    assert f"{meta['n_flagged']:,} flagged (risk_score &gt; {meta['threshold']:.3f})" in page


def test_a_label_inside_the_embedding_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    kindred(store, "ingest", "customers", str(customers_csv(tmp_path / "c.csv", n=200)),
            "--id-column", "customer_id")
    kindred(store, "embed", "tabular")
    code, _, err = kindred(store, "evaluate", "risk", "--label", "status", "--positive", "bad",
                           ok=False)
    assert code == 1
    assert err.strip() == ("Error: the label column 'status' is embedded in 'vec_tabular_raw': "
                           "embed without it (kindred embed tabular --exclude status)")


def test_unit_length_columns_are_scored_with_a_caveat(tmp_path: Path) -> None:
    store = tmp_path / "store"
    kindred(store, "ingest", "customers", str(customers_csv(tmp_path / "c.csv", n=200)),
            "--id-column", "customer_id")
    kindred(store, "embed", "tabular", "--exclude", "status", "--no-raw")
    _, out, _ = kindred(store, "risk", "score", "--detector", "iforest")
    assert "on vector column 'vec_tabular'" in out
    assert "note: vec_tabular is unit-normalised (cosine): a customer's distance from the " \
           "centre, which anomaly detectors rely on, is lost" in out
    _, out, _ = kindred(store, "risk", "--help")
    assert "vec_tabular_raw" in out


@pytest.mark.slow
def test_synthetic_bank_readme_commands_beat_raw_iforest(tmp_path: Path) -> None:
    """The README's quick start on a generated bank (3,000 customers, ~1% planted anomalies):
    the default detector ranks them at least as well as raw IForest on z-scored one-hot
    features of the same attributes (same run; docs/quality.md has several seeds)."""
    b = bank_quality(3_000, tmp_path, seed=0)
    assert b["finite"]
    assert b["column"] == "vec_tabular_raw"
    assert "consolidation_run" not in b["attributes"]
    assert "is_anomaly" not in b["attributes"]
    assert b["default"] >= b["raw"]["iforest"], b
    assert b["default"] > 0.8, b
    m = re.search(r": ([0-9,]+) flagged \(risk_score > ", b["output"])
    assert 0.03 * 3000 <= int(m.group(1).replace(",", "")) <= 0.07 * 3000


@pytest.mark.datasets
def test_bank_marketing_one_hot_table_is_finite_for_every_detector(datasets_dir: Path,
                                                                   tmp_path: Path) -> None:
    """UCI bank marketing (9 categorical columns, one-hot: collinear blocks), a seeded sample
    of 3,000 rows through the CLI: every detector and the default write finite scores, and
    the default detector list of `evaluate risk` runs on its string label."""
    src = datasets_dir / "bank_marketing" / "bank-full.csv"
    if not src.exists():
        pytest.skip(f"{src} not found")
    table = pacsv.read_csv(src, parse_options=pacsv.ParseOptions(delimiter=";"))
    pick = np.sort(np.random.default_rng(0).choice(table.num_rows, 3_000, replace=False))
    csv = tmp_path / "bank.csv"
    pacsv.write_csv(table.take(pa.array(pick)), csv,
                    pacsv.WriteOptions(delimiter=";"))
    store = tmp_path / "store"
    kindred(store, "ingest", "customers", str(csv), "--delimiter", ";")
    kindred(store, "embed", "tabular", "--exclude", "duration", "--exclude", "y")
    for detector in [*SINGLE_KINDS, "default"]:
        _, out, _ = kindred(store, "risk", "score", "--detector", detector)
        assert "nan" not in out.lower(), out
        with vectorstore.connect(str(store)) as s:
            scores = s.to_arrow("customers", columns=["risk_score"]).column("risk_score")
            assert np.isfinite(scores.to_numpy()).all(), detector
    ev = kindred_json(store, "evaluate", "risk", "--label", "y", "--positive", "yes")
    assert [r["detector"] for r in ev["rows"]] == ["iforest", "hbos", "ecod", "default"]
    assert all(0 < r["roc_auc"] < 1 for r in ev["rows"])
