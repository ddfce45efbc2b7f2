"""Product matching against real LanceDB: consumers, prospects, filters, methods, refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import spearmanr

import vectorstore
from services.errors import MatchingError, NotEnoughData, UnknownProduct
from services.matching import build_query, explain, match
from services.matching.query import DEFAULT_CS
from tests.services._matching_synth import load_synth, make_synth
from vectorstore.filters import parse_filter, to_mask

SYNTH = make_synth(n=1500, rare=5)
FAST_PROPENSITY = {"grid": [{"learning_rate": 0.1, "max_leaf_nodes": 15, "min_samples_leaf": 20,
                             "l2_regularization": 0.0}], "folds": 3, "max_iter": 100}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> vectorstore.VectorStore:
    st = vectorstore.connect(str(tmp_path_factory.mktemp("matching") / "db"))
    load_synth(st, SYNTH, with_products=True)
    return st


def _holders(product: str) -> set[str]:
    j = SYNTH.products.index(product)
    return {i for i, h in zip(SYNTH.ids, SYNTH.holds[:, j], strict=True) if h}


def _cos(X: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (X @ q) / (np.linalg.norm(X, axis=1) * np.linalg.norm(q))


def test_consumers_are_exactly_holders_and_prospects_exactly_non_holders(store):
    load_synth(store, SYNTH)
    holders = _holders("p1")
    r = match(store, "p1", top_k=len(SYNTH.ids), exact=True)
    assert set(r.consumers.column("customer_id").to_pylist()) == holders
    assert set(r.prospects.column("customer_id").to_pylist()) == set(SYNTH.ids) - holders
    for tbl in (r.consumers, r.prospects):
        scores = tbl.column("score").to_numpy()
        assert np.all(np.diff(scores) <= 1e-9)
        assert tbl.column("rank").to_pylist() == list(range(1, tbl.num_rows + 1))
    assert r.summary.known_consumers == len(holders)


def test_filtered_prospects_respect_filter_and_return_k_rows(store):
    load_synth(store, SYNTH)
    text = "region = 'EU' and age between 25 and 60"
    r = match(store, "p0", top_k=40, filter=text, columns=["region", "age"], exact=True,
)
    assert r.prospects.num_rows == 40
    assert set(r.prospects.column("region").to_pylist()) == {"EU"}
    ages = np.array(r.prospects.column("age").to_pylist())
    assert ages.min() >= 25
    assert ages.max() <= 60
    # equals the numpy top-40 among the eligible rows, by the centred centroid
    tbl = pa.table({"region": SYNTH.region.tolist(), "age": SYNTH.age})
    ok = np.asarray(to_mask(parse_filter(text, tbl.schema), tbl)) & ~SYNTH.holds[:, 0]
    s = _cos(SYNTH.X, r.query.vector)
    s[~ok] = -np.inf
    expected = [SYNTH.ids[i] for i in np.argsort(-s)[:40]]
    assert r.prospects.column("customer_id").to_pylist() == expected


def test_centroid_uses_centred_vectors(store):
    load_synth(store, SYNTH)
    q = build_query(store, "p2", "centroid")
    held = SYNTH.holds[:, 2]
    centred = SYNTH.X[held].astype(np.float64).mean(0) - SYNTH.X.astype(np.float64).mean(0)
    np.testing.assert_allclose(q.vector, centred / np.linalg.norm(centred), atol=1e-5)
    uncentred = SYNTH.X[held].mean(0)
    assert float(_cos(uncentred[None, :], q.vector)[0]) < 0.9  # the offset would dominate
    mean = store.table_info("customers").metadata["embedders"]["vec"]["mean"]
    np.testing.assert_allclose(mean, SYNTH.X.astype(np.float64).mean(0), atol=1e-5)


def test_refuses_below_min_consumers_and_unknown_products(store):
    load_synth(store, SYNTH)
    with pytest.raises(NotEnoughData, match=r"5 known consumers.*at least 20"):
        match(store, "rare")
    r = match(store, "rare", min_consumers=5, top_k=10, exact=True)
    assert r.summary.known_consumers == 5
    with pytest.raises(UnknownProduct, match="nope"):
        match(store, "nope")
    with pytest.raises(MatchingError, match="unknown method"):
        match(store, "p0", method="magic")


def test_audience_pct_and_min_score(shared):
    eligible = len(SYNTH.ids) - len(_holders("p0"))
    r = match(shared, "p0", audience_pct=10, exact=True)
    assert r.prospects.num_rows == math.ceil(eligible * 0.10)
    assert r.summary.eligible_prospects == eligible
    cut = float(r.prospects.column("score")[20].as_py())
    r2 = match(shared, "p0", min_score=cut, exact=True)
    scores = r2.prospects.column("score").to_numpy()
    assert scores.min() >= cut
    all_scores = _cos(SYNTH.X[~SYNTH.holds[:, 0]], r2.query.vector)
    assert r2.prospects.num_rows == int((all_scores >= cut - 1e-6).sum())


def _decision_check(st: vectorstore.VectorStore, s, **kw):
    """Match scores equal LogisticRegression.decision_function, in its order."""
    r = match(st, "p0", method="learned", top_k=len(s.ids), exact=True,
              **kw)
    model = r.query.model_
    assert model is not None
    assert model.tol <= 1e-6
    pos = {cid: i for i, cid in enumerate(s.ids)}
    for tbl in (r.prospects, r.consumers):
        rows = [pos[c] for c in tbl.column("customer_id").to_pylist()]
        dec = model.decision_function(s.X[rows].astype(np.float64))
        np.testing.assert_allclose(tbl.column("score").to_numpy(), dec, rtol=1e-4, atol=1e-4)
        # the returned order is the model's order (up to float32 near-ties)
        assert np.all(np.diff(dec) <= 1e-4 * max(1.0, np.abs(dec).max()))
        assert spearmanr(dec, -np.arange(len(dec))).statistic > 0.9999
    return r.query


def test_learned_ranking_is_logistic_regression_order_cosine(shared):
    q = _decision_check(shared, SYNTH)
    assert q.searchable  # ranked by the store's cosine search
    assert q.details["C"] in DEFAULT_CS
    assert q.details["C"] == q.model_.C_  # the LogisticRegressionCV that chose it
    assert set(q.details["cv_roc_auc"]) == set(DEFAULT_CS)


def test_learned_ranking_on_dot_and_non_unit_cosine_columns(tmp_path):
    raw = make_synth(n=800, unit=False)
    for metric, searchable in (("dot", True), ("cosine", False)):
        st = vectorstore.connect(str(tmp_path / metric))
        load_synth(st, raw, metric=metric)
        q = _decision_check(st, raw, learned_options={"Cs": (1.0,)})
        assert q.searchable is searchable


def test_product_method_ranks_by_the_product_vector(shared):
    r = match(shared, "p3", method="product", top_k=25, exact=True)
    s = _cos(SYNTH.X, SYNTH.product_vectors[3])
    s[SYNTH.holds[:, 3]] = -np.inf
    assert r.prospects.column("customer_id").to_pylist() == \
        [SYNTH.ids[i] for i in np.argsort(-s)[:25]]
    np.testing.assert_allclose(r.prospects.column("score").to_numpy(),
                               np.sort(s)[::-1][:25], atol=1e-5)


def test_auto_picks_best_holdout_method_and_says_so(shared):
    r = match(shared, "p1", method="auto", top_k=5, learned_options={"Cs": (10.0,)},
              propensity_options=FAST_PROPENSITY)
    auto = r.summary.details["auto"]
    assert set(auto["holdout_roc_auc"]) == {"centroid", "learned", "product", "propensity"}
    assert auto["repeats"] == 3
    assert set(auto["holdout_roc_auc_sd"]) == set(auto["holdout_roc_auc"])
    best = max(auto["holdout_roc_auc"], key=auto["holdout_roc_auc"].get)
    assert auto["picked"] == best == r.summary.method
    assert r.summary.predictability["predictable"] is True
    assert r.summary.predictability["interval"][0] > 0.5
    json.dumps(r.to_dict())


def test_matching_recovers_planted_propensities(shared):
    """Scores of non-holders rank like the true propensities, far above chance."""
    for method in ("centroid", "learned"):
        for j, p in enumerate(SYNTH.products[:4]):
            r = match(shared, p, method=method, top_k=len(SYNTH.ids), exact=True,
                      learned_options={"Cs": (10.0,)})
            pos = {cid: i for i, cid in enumerate(SYNTH.ids)}
            rows = [pos[c] for c in r.prospects.column("customer_id").to_pylist()]
            rho = spearmanr(r.prospects.column("score").to_numpy(),
                            SYNTH.propensity[rows, j]).statistic
            assert rho > 0.6, (method, p, rho)


def test_explain_lists_nearest_consumers_and_shared_attributes(shared):
    r = match(shared, "p0", top_k=3, exact=True)
    cid = r.prospects.column("customer_id")[0].as_py()
    e = explain(shared, cid, "p0", k=4, attributes=["region", "age"])
    assert not e.holds_product
    i = SYNTH.ids.index(cid)
    s = _cos(SYNTH.X, SYNTH.X[i])
    s[~SYNTH.holds[:, 0]] = -np.inf
    s[i] = -np.inf
    expected = [SYNTH.ids[j] for j in np.argsort(-s)[:4]]
    assert [n.customer_id for n in e.neighbours] == expected
    for n in e.neighbours:
        j = SYNTH.ids.index(n.customer_id)
        assert ("region" in n.shared) == (SYNTH.region[j] == SYNTH.region[i])
        assert ("age" in n.shared) == (abs(SYNTH.age[j] - SYNTH.age[i])
                                       <= 0.1 * max(SYNTH.age[j], SYNTH.age[i]))
    with pytest.raises(MatchingError, match="no customer"):
        explain(shared, "missing", "p0")


def test_cached_population_mean_refreshes_when_table_grows(tmp_path):
    from services.matching._data import population_mean
    from tests.services._matching_synth import write_rows

    st = vectorstore.connect(str(tmp_path / "db"))
    load_synth(st, SYNTH, rows=500)
    m1 = population_mean(st, "customers", "vec")
    np.testing.assert_allclose(m1, SYNTH.X[:500].astype(np.float64).mean(0), atol=1e-5)
    write_rows(st, SYNTH, 500, 520)  # +4%: the cached mean is kept
    np.testing.assert_allclose(population_mean(st, "customers", "vec"), m1)
    write_rows(st, SYNTH, 520, 1500)
    np.testing.assert_allclose(population_mean(st, "customers", "vec"),
                               SYNTH.X.astype(np.float64).mean(0), atol=1e-5)
    assert st.table_info("customers").metadata["embedders"]["vec"]["mean_rows"] == 1500


def test_bands_come_from_the_base_not_from_the_returned_list(shared):
    r = match(shared, "p0", top_k=90, exact=True)
    hi, lo = r.query.details["base_edges"]
    # the edges are the non-holders' top 10% and top 30% (a seeded sample of the base)
    non = ~SYNTH.holds[:, 0]
    base = r.query.score(SYNTH.X[non])
    assert np.mean(base >= hi) == pytest.approx(0.10, abs=0.03)
    assert np.mean(base >= lo) == pytest.approx(0.30, abs=0.04)
    for name, tbl in (("consumers", r.consumers), ("prospects", r.prospects)):
        scores = tbl.column("score").to_numpy()
        bands = np.array(tbl.column("band").to_pylist())
        np.testing.assert_array_equal(bands == "high", scores >= hi)
        np.testing.assert_array_equal(bands == "low", scores < lo)
        report = r.summary.bands[name]
        assert [b["band"] for b in report] == ["high", "medium", "low"]
        assert sum(b["rows"] for b in report) == tbl.num_rows
        for b in report:
            in_band = scores[bands == b["band"]]
            assert b["rows"] == len(in_band)
            if len(in_band):
                assert b["min_score"] == pytest.approx(in_band.min())
                assert b["max_score"] == pytest.approx(in_band.max())
    # the top 10 of 90 are the top 10 of 10: the same bands whatever the list length
    assert set(r.prospects.column("band").to_pylist()[:10]) == {"high"}
    short = match(shared, "p0", top_k=10, exact=True, query=r.query)
    assert short.prospects.column("band").to_pylist() == ["high"] * 10
    assert "non-holders" in r.summary.band_basis or "not holding" in r.summary.band_basis
    mid = float(np.median(r.prospects.column("score").to_numpy()))
    fixed = match(shared, "p0", top_k=90, exact=True, bands=[mid + 1.0, mid], query=r.query)
    got = fixed.prospects.column("band").to_pylist()
    scores = fixed.prospects.column("score").to_numpy()
    assert "high" not in got  # nothing scores a full 1.0 above the median
    assert [b == "medium" for b in got] == list(scores >= mid)
    assert fixed.summary.bands["prospects"][1]["min_edge"] == pytest.approx(mid)
    assert json.loads(json.dumps(fixed.to_dict()))["summary"]["bands"]["prospects"][2]["rows"] \
        == int((scores < mid).sum())
    with pytest.raises(MatchingError, match="bands"):
        match(shared, "p0", top_k=5, bands=[0.1, 0.5], query=r.query)


def test_prospects_only_skips_consumers_and_keeps_the_same_prospects(shared):
    both = match(shared, "p0", top_k=30, exact=True)
    only = match(shared, "p0", top_k=30, exact=True, consumers=False, query=both.query)
    assert only.consumers.num_rows == 0
    assert only.summary.consumers_returned == 0
    assert both.consumers.num_rows == 30
    assert (only.prospects.column("customer_id").to_pylist()
            == both.prospects.column("customer_id").to_pylist())


def test_learned_query_is_cached_until_holdings_change(tmp_path, monkeypatch):
    from services.matching import query as query_mod

    s = make_synth(n=600, seed=11)
    st = vectorstore.connect(str(tmp_path / "db"))
    load_synth(st, s)
    first = build_query(st, "p0", "learned", Cs=(1.0, 10.0))
    assert first.details["cached"] is False

    def no_refit(*args, **kwargs):
        raise AssertionError("refitted although the table did not change")

    monkeypatch.setattr(query_mod, "fit_learned", no_refit)
    again = build_query(st, "p0", "learned", Cs=(1.0, 10.0))
    assert again.details["cached"] is True
    np.testing.assert_array_equal(again.vector, first.vector)
    assert (again.scale, again.offset, again.searchable) == (first.scale, first.offset,
                                                             first.searchable)
    X = s.X[:50].astype(np.float64)
    np.testing.assert_allclose(again.model_.decision_function(X),
                               first.model_.decision_function(X))
    np.testing.assert_allclose(again.score(s.X[:50]), first.score(s.X[:50]))
    with pytest.raises(AssertionError, match="refitted"):  # other options: a new fit
        build_query(st, "p0", "learned", Cs=(10.0,))
    # a customer who takes up p0 changes the table: the cached fit is stale
    non_holder = next(i for i, h in enumerate(s.holds[:, 0]) if not h)
    held = [p for p, h in zip(s.products, s.holds[non_holder], strict=False) if h] + ["p0"]
    st.update("customers", pa.table({"customer_id": [s.ids[non_holder]],
                                     "holdings": pa.array([held], pa.list_(pa.string()))}))
    with pytest.raises(AssertionError, match="refitted"):
        build_query(st, "p0", "learned", Cs=(1.0, 10.0))
    monkeypatch.undo()
    refit = build_query(st, "p0", "learned", Cs=(1.0, 10.0))
    assert refit.details["cached"] is False
    assert refit.n_consumers == first.n_consumers + 1
