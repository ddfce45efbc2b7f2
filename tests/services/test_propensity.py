"""The propensity method: fit, verified persistence, written scores served by a scalar filter,
calibrated audiences, bands from probabilities, leakage and chance guard rails."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

import vectorstore
from ingest.embedders import TabularEmbedder, embed
from services.errors import ModelIntegrityError
from services.matching import match
from services.matching.evaluate import evaluate_holdout
from services.matching.scores import fit_and_write, load_stored_model, score_column

FAST = {"grid": [{"learning_rate": 0.1, "max_leaf_nodes": 15, "min_samples_leaf": 20,
                  "l2_regularization": 0.0}], "folds": 3, "max_iter": 200}
N = 2400


def _table(seed: int = 0) -> tuple[pa.Table, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, N)
    region = rng.choice(["north", "south", "east", "west"], N)
    ctype = rng.integers(1, 21, N)
    income = np.exp(rng.normal(10.5, 0.5, N)).round()
    # non-linear: a middle age band, one region, three customer types (codes, not numbers)
    logit = (2.5 * (np.abs(age - 45) < 8) + 1.2 * (region == "north")
             + 1.5 * np.isin(ctype, [3, 7, 11]) - 2.6)
    p = 1 / (1 + np.exp(-logit))
    p0 = rng.random(N) < p
    coin = rng.random(N) < 0.25  # held at random: nothing predicts it
    leaky = rng.random(N) < 0.3
    flag = np.where(rng.random(N) < 0.005, ~leaky, leaky)  # records the outcome
    holdings = [[x for x, h in (("p0", a), ("coin", b), ("leaky", c)) if h]
                for a, b, c in zip(p0, coin, leaky, strict=True)]
    t = pa.table({"customer_id": [f"c{i:05d}" for i in range(N)], "age": age,
                  "region": region, "customer_type": ctype, "income": income,
                  "closing_flag": np.where(flag, "Y", "N"),
                  "holdings": pa.array(holdings, pa.list_(pa.string()))})
    return t, {"p0": p, "p0_held": p0}


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory):
    st = vectorstore.connect(str(tmp_path_factory.mktemp("propensity") / "db"))
    t, truth = _table()
    st.create_table("customers", t.schema, key="customer_id")
    st.write("customers", t)
    embed(st, "customers", TabularEmbedder(exclude=["closing_flag"]))
    entry = fit_and_write(st, "p0", options={**FAST, "exclude": ["closing_flag"]})
    return st, truth, entry


def test_scores_written_with_model_record_and_scalar_index(bank):
    st, _, entry = bank
    info = st.table_info("customers")
    col = score_column("p0")
    assert entry["column"] == col == "propensity_p0"
    assert info.schema.field(col).type == pa.float64()
    assert any(ix.columns == (col,) for ix in st.list_indexes("customers"))
    meta = info.metadata["propensity"]["p0"]
    assert meta["model_id"] == meta["model"]["sha256"][:16]
    assert meta["rows_scored"] == N
    assert meta["fitted_at"]
    assert meta["scored_at"]
    assert meta["model"]["versions"]["scikit-learn"]
    assert [f for f, _ in meta["thresholds"]] == [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
    scores = st.to_arrow("customers", columns=["customer_id", col])
    p = scores.column(col).to_numpy()
    assert np.isfinite(p).all()
    assert (p >= 0).all()
    assert (p <= 1).all()
    # the persisted model, loaded after its checks, gives the written probabilities
    model = load_stored_model(st, meta)
    rows = st.to_arrow("customers", columns=model.columns)
    np.testing.assert_allclose(model.score_rows(rows), p, rtol=1e-9)
    assert "closing_flag" not in model.spec.names
    assert "customer_type" in model.spec.categorical  # an integer code read as a category
    assert "similarity:vec_tabular" in model.spec.names  # the lookalike score as a feature
    # mean probability is the (weighted) base rate: calibrated, not raw logits
    assert p.mean() == pytest.approx(meta["base_rate"], abs=0.02)


def test_a_tampered_or_foreign_model_is_refused(bank):
    st, _, entry = bank
    record = dict(entry["model"])
    with pytest.raises(ModelIntegrityError, match="checksum"):
        load_stored_model(st, {**entry, "model": {**record, "sha256": "0" * 64}})
    versions = {**record["versions"], "scikit-learn": "0.0.1"}
    with pytest.raises(ModelIntegrityError, match="refit"):
        load_stored_model(st, {**entry, "model": {**record, "versions": versions}})
    with pytest.raises(ModelIntegrityError, match="format"):
        load_stored_model(st, {**entry, "model": {**record, "format": "pickle"}})


def test_match_serves_written_scores_exactly_and_writes_nothing(bank):
    st, _, entry = bank
    version = st.version("customers")
    flt = "region in ('south', 'east') and age >= 30"
    r = match(st, "p0", method="propensity", top_k=25, filter=flt,
              columns=["region", "age"])
    assert st.version("customers") == version
    assert r.summary.details["served_from"] == "propensity_p0"
    assert r.summary.metric == "probability"
    rows = st.to_arrow("customers", columns=["customer_id", "region", "age", "holdings",
                                             "propensity_p0"]).to_pandas()
    ok = rows.region.isin(["south", "east"]) & (rows.age >= 30) & \
        ~rows.holdings.apply(lambda h: "p0" in list(h))
    want = rows[ok].sort_values("propensity_p0", ascending=False).head(25)
    assert r.prospects.column("customer_id").to_pylist() == want.customer_id.tolist()
    np.testing.assert_allclose(r.prospects.column("score").to_numpy(),
                               want.propensity_p0.to_numpy())
    assert set(r.prospects.column("region").to_pylist()) <= {"south", "east"}
    # audience in business terms: expected conversions, lift, intervals
    a = r.summary.audience
    p = want.propensity_p0.to_numpy()
    assert a["size"] == 25
    assert a["expected_conversions"] == pytest.approx(p.sum(), abs=0.01)
    lo, hi = a["conversions_interval"]
    assert lo < p.sum() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt((p * (1 - p)).sum()), abs=0.03)
    assert a["lift"] == pytest.approx(p.mean() / entry["base_rate"], rel=1e-3)
    # bands by probability against the base rate, whatever the list length
    base = entry["base_rate"]
    for row in r.prospects.to_pylist():
        want_band = "high" if row["score"] >= 2 * base else \
            "medium" if row["score"] > base else "low"
        assert row["band"] == want_band
    assert "base rate" in r.summary.band_basis
    assert r.summary.predictability["predictable"] is True
    audience = match(st, "p0", method="propensity", audience_pct=10, consumers=False)
    assert audience.summary.prospects_returned == -(-audience.summary.eligible_prospects // 10)
    json.dumps(r.to_dict())


def test_propensity_beats_learned_where_the_signal_is_not_linear(bank):
    st, _truth, _ = bank
    rep = evaluate_holdout(st, "p0", methods=["learned", "propensity"], repeats=2, Cs=(10.0,),
                           propensity_options=FAST)
    by = {r.method: r for r in rep.rows}
    assert by["propensity"].vector_column == "attributes"
    assert by["propensity"].roc_auc > by["learned"].roc_auc + 0.02, rep.to_markdown()
    assert by["propensity"].repeats == 2
    assert by["propensity"].roc_auc_sd is not None
    lo, hi = by["propensity"].roc_auc_interval
    assert lo < by["propensity"].roc_auc < hi
    assert rep.predictability["predictable"] is True
    assert len(rep.curves[("attributes", "propensity")][0]) == by["propensity"].candidates
    assert rep.calibration
    assert all(0 <= b["observed"] <= 1 for b in rep.calibration)


def test_leakage_is_named(bank):
    st, _, _ = bank
    entry = fit_and_write(st, "leaky", options=FAST)
    (leak,) = [w for w in entry["leakage"] if w["attribute"] == "closing_flag"]
    assert leak["roc_auc"] >= 0.98
    assert "closing_flag" in leak["message"]
    assert "leakage" in leak["message"]
    r = match(st, "leaky", method="propensity", top_k=5)
    assert any("closing_flag" in w for w in r.summary.warnings)
    rep = evaluate_holdout(st, "leaky", methods=["propensity"], repeats=1,
                           propensity_options=FAST)
    assert [w["attribute"] for w in rep.warnings][:1] == ["closing_flag"]


def test_a_product_held_at_random_is_not_predictable(bank):
    st, _, _ = bank
    r = match(st, "coin", method="auto", top_k=5, learned_options={"Cs": (10.0,)},
              propensity_options=FAST)
    v = r.summary.predictability
    assert v["predictable"] is False
    assert v["interval"][0] <= 0.5 <= v["interval"][1]
    assert r.summary.warnings[0].startswith("not predictable from these data")
    assert json.loads(json.dumps(r.to_dict()))["summary"]["predictability"]["predictable"] \
        is False


def test_a_method_that_cannot_run_is_a_row_not_an_abort(bank):
    st, _, _ = bank
    rep = evaluate_holdout(st, "p0", methods=["centroid", "product"], repeats=1)
    by = {r.method: r for r in rep.rows}
    assert by["centroid"].roc_auc > 0.6
    assert by["product"].roc_auc is None
    assert "products" in by["product"].error
    assert by["product"].error in rep.to_markdown()


@pytest.mark.datasets
def test_telco_leakage_is_detected_and_named(datasets_dir, tmp_path):
    """IBM telco: `MultipleLines` says "No phone service" exactly when `PhoneService` is No,
    so it alone determines the phone holding: a leakage warning must name it."""
    from services.facade import Kindred

    csv = datasets_dir / "telco_churn" / "WA_Fn-UseC_-Telco-Customer-Churn.csv"
    with Kindred(str(tmp_path / "store"), create=True) as k:
        k.ingest(str(csv), table="customers", id_column="customerID",
                 holdings=["phone=PhoneService:Yes", "internet=InternetService:DSL|Fiber optic"])
        r = k.fit(["phone"], propensity_options=FAST)
        leak = r.details["products"]["phone"]["leakage"]
        assert leak
        assert leak[0]["attribute"] == "MultipleLines"
        assert leak[0]["roc_auc"] >= 0.98
        m = k.match("phone", method="propensity", top=5)
        assert any("MultipleLines" in w for w in m.summary.warnings)
