"""The matching commands end to end on the prepared synthetic bank: fit, propensity matches
with audiences, evaluation options and failures as rows, recommendations with reasons, and a
report whose figures are the evaluation's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.facade import Kindred
from tests.services.test_cli import run, run_json


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.services._bank import copy_store

    return copy_store(tmp_path_factory, tmp_path_factory.mktemp("cli-matching") / "store")


def test_fit_then_match_by_propensity(store: Path) -> None:
    fit = run_json("fit", "term_deposit", "--exclude", "is_anomaly", store=store)
    d = fit["details"]["products"]["term_deposit"]
    assert d["column"] == "propensity_term_deposit"
    assert d["rows_scored"] == 2000
    assert d["assessment"]["predictable"] is True
    assert "is_anomaly" not in d["features"]
    r = run_json("match", "term_deposit", "--method", "propensity", "--top", "20", "--where",
                 "age >= 30", "--attribute", "age", "--prospects", store=store)
    s = r["summary"]
    assert s["metric"] == "probability"
    assert s["details"]["served_from"] == d["column"]
    assert len(r["prospects"]) == 20
    assert all(p["age"] >= 30 for p in r["prospects"])
    probs = [p["score"] for p in r["prospects"]]
    assert probs == sorted(probs, reverse=True)
    assert all(0 <= p <= 1 for p in probs)
    assert s["audience"]["expected_conversions"] == pytest.approx(sum(probs), abs=0.01)
    assert s["predictability"]["predictable"] is True
    _, out, _ = run("match", "term_deposit", "--method", "propensity", "--top", "5",
                    store=store)
    assert "probability" in out
    assert "expected conversions" in out
    assert re.search(r"lift \d+\.\d+x the base rate", out)
    assert "Predictable: propensity ROC-AUC" in out


def test_evaluate_matching_options_and_failed_methods(store: Path) -> None:
    args = ["evaluate", "matching", "--label", "is_anomaly", "--method", "centroid",
            "--column", "vec_tabular", "--test-size", "0.25", "--seed", "3", "--repeats", "2"]
    rep = run_json(*args, store=store)
    assert rep["params"]["test_size"] == 0.25
    assert rep["params"]["seed"] == 3
    assert rep["params"]["repeats"] == 2
    with Kindred(str(store)) as k:  # the facade takes the same options, same figures
        same = k.evaluate_matching(label="is_anomaly", methods=["centroid"],
                                   vector_columns=["vec_tabular"], test_size=0.25, seed=3,
                                   repeats=2)
    assert same.model_dump(mode="json")["rows"] == rep["rows"]
    bad = run_json("evaluate", "matching", "--product", "term_deposit", "--method", "centroid",
                   "--method", "product", "--column", "vec_tabular", "--repeats", "1",
                   store=store)
    by = {r["method"]: r for r in bad["rows"]}
    assert by["centroid"]["roc_auc"] > 0.6
    assert by["product"]["roc_auc"] is None
    assert "vec_tabular" in by["product"]["error"]
    _, out, _ = run("evaluate", "matching", "--product", "term_deposit", "--method", "product",
                    "--method", "centroid", "--column", "vec_tabular", "--repeats", "1",
                    store=store)
    assert "could not run" in out


def test_recommendations_commands(store: Path) -> None:
    rep = run_json("evaluate", "recommendations", store=store)
    assert [r["method"] for r in rep["rows"]][-1] == "kindred"
    w = run_json("recommend", "--top", "2", store=store)
    assert w["details"]["method"] == "behavior"
    assert w["details"]["written"]
    _, out, _ = run("recommendations", "C00000042", "--top", "3", store=store)
    assert out.startswith("C00000042:")
    assert len([line for line in out.splitlines() if re.match(r"\s+\d+\. ", line)]) >= 1
    code, _, err = run("recommendations", "NOPE", store=store, ok=False)
    assert code == 1
    assert "NOPE" in err


def test_report_figures_are_the_evaluations(store: Path, tmp_path: Path) -> None:
    rep = run_json("evaluate", "matching", "--product", "mortgage", "--method", "centroid",
                   "--column", "vec_tabular", "--repeats", "2", "--seed", "5", store=store)
    auc = next(r for r in rep["rows"] if r["method"] == "centroid")["roc_auc"]
    with Kindred(str(store)) as k:
        fitted = k.report_products()
        assert fitted == ["term_deposit"]  # the fitted product comes first by default
        out = k.report(tmp_path / "rep", products=["mortgage"], column="vec_tabular",
                       methods=["centroid", "propensity"], repeats=2, seed=5,
                       propensity_options={"grid": [{"learning_rate": 0.1,
                                                     "max_leaf_nodes": 15,
                                                     "min_samples_leaf": 20,
                                                     "l2_regularization": 0.0}],
                                           "folds": 3, "max_iter": 150})
    assert "calibration" in out.sections
    assert "gain" in out.sections
    html = Path(out.html).read_text()
    assert f"{auc:.3f}" in html  # the same ROC-AUC as `evaluate matching`, same seed
