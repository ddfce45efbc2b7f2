"""Holdout and label evaluation: metric definitions, baselines, splits, errors."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow as pa
import pytest

import vectorstore
from services.errors import EvaluationError, NotEnoughData
from services.matching.evaluate import EvaluationReport, evaluate_holdout, evaluate_labels, ranking_metrics
from tests.services._matching_synth import load_synth, make_synth

SYNTH = make_synth(n=1200, seed=7, rare=5)


@pytest.fixture(scope="module")
def st(tmp_path_factory: pytest.TempPathFactory) -> vectorstore.VectorStore:
    s = vectorstore.connect(str(tmp_path_factory.mktemp("evaluate") / "db"))
    load_synth(s, SYNTH)
    label = np.where(SYNTH.holds[:, 1], "yes", "no")
    split = np.where(np.arange(len(SYNTH.ids)) % 3 == 0, "test", "train")
    s.add_columns("customers", [pa.field("label", pa.string()), pa.field("split", pa.string())])
    s.update("customers", pa.table({"customer_id": SYNTH.ids, "label": label.tolist(),
                                    "split": split.tolist()}))
    return s


def test_ranking_metrics_by_hand():
    y = np.array([1, 0, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.1, 0.2])
    m = ranking_metrics(y, s, k=2)
    assert m["roc_auc"] == pytest.approx(5 / 6)
    assert m["precision_at_k"] == pytest.approx(0.5)
    assert m["recall_at_k"] == pytest.approx(0.5)
    assert m["lift_at_k"] == pytest.approx(0.5 / 0.4)
    with pytest.raises(EvaluationError, match="positives and negatives"):
        ranking_metrics(np.zeros(4), s[:4], 2)


def test_holdout_table_counts_baselines_and_json(st):
    rep = evaluate_holdout(st, "p0", methods=["centroid", "learned"], Cs=(10.0,))
    holders = int(SYNTH.holds[:, 0].sum())
    hidden = round(0.2 * holders)
    assert rep.params["hidden"] == hidden
    assert [r.method for r in rep.rows] == ["random", "popularity", "centroid", "learned"]
    for r in rep.rows:
        assert r.positives == hidden
        assert r.candidates == len(SYNTH.ids) - (holders - hidden)
        assert r.k == round(0.1 * r.candidates)
    by = {r.method: r for r in rep.rows}
    assert by["random"].roc_auc == 0.5
    assert by["random"].lift_at_k == 1.0
    assert by["centroid"].roc_auc > 0.75
    assert by["learned"].roc_auc > 0.75
    assert by["learned"].lift_at_k > 2.5
    again = EvaluationReport.model_validate(json.loads(json.dumps(rep.model_dump())))
    assert again.model_dump() == rep.model_dump()  # the curves (private) are not serialised
    assert rep.best().method in ("centroid", "learned")
    assert "| vec | learned |" in rep.to_markdown()


def test_holdout_is_seeded(st):
    a = evaluate_holdout(st, "p2", methods=["centroid"], seed=1)
    b = evaluate_holdout(st, "p2", methods=["centroid"], seed=1)
    c = evaluate_holdout(st, "p2", methods=["centroid"], seed=2)
    assert a.rows == b.rows
    assert a.rows[-1].roc_auc != c.rows[-1].roc_auc


def test_label_evaluation_with_split_column_and_seeded_split(st):
    rep = evaluate_labels(st, "label", positive="yes", split_column="split",
                          methods=["centroid", "learned"], Cs=(10.0,))
    test_rows = int((np.arange(len(SYNTH.ids)) % 3 == 0).sum())
    by = {r.method: r for r in rep.rows}
    assert by["learned"].candidates == test_rows
    assert by["learned"].positives == int(SYNTH.holds[np.arange(len(SYNTH.ids)) % 3 == 0, 1].sum())
    assert by["learned"].roc_auc > 0.75
    assert by["centroid"].roc_auc > 0.75
    seeded = evaluate_labels(st, "label", positive="yes", methods=["centroid"], test_size=0.25)
    row = seeded.rows[-1]
    assert row.candidates == pytest.approx(0.25 * len(SYNTH.ids), abs=1)
    # stratified: the test rows keep the base rate
    assert seeded.base_rate == pytest.approx(SYNTH.holds[:, 1].mean(), abs=0.01)


def test_evaluation_errors(st):
    with pytest.raises(EvaluationError, match="no vector column 'nope'"):
        evaluate_holdout(st, "p0", vector_columns=["nope"])
    with pytest.raises(EvaluationError, match="holdout"):
        evaluate_holdout(st, "p0", holdout=1.5)
    with pytest.raises(NotEnoughData, match="5 holders"):
        evaluate_holdout(st, "rare")
    with pytest.raises(EvaluationError, match="positive value"):
        evaluate_labels(st, "label")
    with pytest.raises(EvaluationError, match="missing_col"):
        evaluate_labels(st, "missing_col", positive="yes")


@pytest.mark.datasets
@pytest.mark.slow
def test_bank_marketing_matching_near_supervised_reference(datasets_dir):
    from bench.matching_quality import run

    out = run(datasets_dir / "bank_marketing" / "bank-full.csv", quick=True, repeats=1)
    rows = {r["method"]: r for r in out["single"]["rows"]}
    ref = out["reference"]
    # through the product path (ingest -> embed -> evaluate with defaults), same split
    assert out["best"]["method"] == "propensity"
    assert rows["propensity"]["roc_auc"] >= ref["roc_auc"] - 0.01
    assert rows["propensity"]["roc_auc"] > rows["learned"]["roc_auc"]
    assert rows["learned"]["lift_at_k"] > 3.0
    assert rows["centroid"]["roc_auc"] > 0.65


def test_evaluation_reports_progress_over_its_scoring_passes(st):
    n = st.count("customers")
    calls: list[tuple[int, int | None]] = []
    evaluate_holdout(st, "p0", methods=["centroid", "learned"], Cs=(10.0,), repeats=2,
                     progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (4 * n, 4 * n)  # one pass per method and repeat
    done = [d for d, _ in calls]
    assert all(b > a for a, b in itertools.pairwise(done))
    assert n in done  # the first pass ends before the second starts
    label_calls: list[tuple[int, int | None]] = []
    evaluate_labels(st, "label", positive="yes", split_column="split", methods=["centroid"],
                    progress=lambda done, total: label_calls.append((done, total)))
    assert label_calls[-1] == (n, n)
