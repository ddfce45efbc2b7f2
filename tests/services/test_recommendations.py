"""Behaviour recommendations: next-basket quality against the references, repeat rules,
one customer's list with reasons, and the bulk write-back."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import vectorstore
from services.facade import Kindred
from services.matching.evaluate_recs import evaluate_next_basket
from services.matching.interactions import read_interactions, repeat_flags
from synthetic_bank import generate, load_into_store


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> vectorstore.VectorStore:
    d = tmp_path_factory.mktemp("recs")
    st = vectorstore.connect(str(d / "db"))
    load_into_store(st, generate(d / "files", 1500, events_per_customer=20, seed=2))
    return st


def test_next_basket_beats_the_references_in_the_same_run(bank):
    rep = evaluate_next_basket(bank, k=10)
    by = {r.method: r for r in rep.rows}
    assert list(by) == ["popularity", "popularity, excluding history",
                        "implicit ALS (defaults)", "kindred"]
    assert rep.customers > 1000
    for r in rep.rows:
        assert 0 <= r.recall_at_k <= r.hit_at_k <= 1
        assert 0 <= r.ndcg_at_k <= 1
    k = by["kindred"]
    assert k.hit_at_k >= by["popularity"].hit_at_k
    assert k.hit_at_k > by["implicit ALS (defaults)"].hit_at_k
    assert k.hit_at_k > by["popularity, excluding history"].hit_at_k
    assert "| kindred |" in rep.to_markdown()


def test_repeatable_items_from_the_data_and_the_products_table(bank):
    inter = read_interactions(bank)
    flags = dict(zip(inter.items, repeat_flags(bank, inter), strict=True))
    assert flags["category:groceries"]  # bought again and again
    assert flags["mortgage"]  # a monthly instalment
    bank.add_columns("products", [pa.field("repeatable", pa.bool_())])
    bank.update("products", pa.table({"product_id": ["mortgage"], "repeatable": [False]}))
    try:
        flags = dict(zip(inter.items, repeat_flags(bank, inter), strict=True))
        assert not flags["mortgage"]  # declared one-time: the products table wins
    finally:
        bank.update("products", pa.table({"product_id": ["mortgage"], "repeatable": [None]}))


def test_bulk_recommendations_and_one_customers_reasons(bank, tmp_path):
    k = Kindred(bank)
    r = k.recommend(top=3, method="behavior")
    d = r.details
    assert d["customers"] == bank.count("customers")
    assert d["written"]
    got = bank.to_arrow("customers", columns=["customer_id", "holdings", "rec_products",
                                              "rec_scores"])
    products = set(bank.to_arrow("products", columns=["product_id"]).column(
        "product_id").to_pylist())
    inter = read_interactions(bank)
    flags = dict(zip(inter.items, repeat_flags(bank, inter), strict=True))
    n_checked = 0
    for held, recs, scores in zip(got.column("holdings").to_pylist(),
                                  got.column("rec_products").to_pylist(),
                                  got.column("rec_scores").to_pylist(), strict=True):
        assert 1 <= len(recs) <= 3
        assert set(recs) <= products
        assert all(np.isfinite(scores))
        assert scores == sorted(scores, reverse=True)
        for p in held or []:  # a held one-time product is never recommended again
            if not flags.get(p, True):
                assert p not in recs
                n_checked += 1
    assert n_checked > 0
    cid = got.column("customer_id")[0].as_py()
    one = k.recommendations(cid, top=5)
    assert one.source == "saved recommender"
    assert 1 <= len(one.recommendations) <= 5
    for item in one.recommendations:
        assert item.reasons
        assert item.item in products
        assert set(item.parts) == {"history", "profile", "factors"}
    all_items = k.recommendations(cid, top=5, only_products=False)
    assert any(i.item.startswith("category:") for i in all_items.recommendations)
    # the result was a dict before it was typed: dict access still works, with a warning
    with pytest.warns(DeprecationWarning, match=r"\.recommendations"):
        assert one["recommendations"][0].item == one.recommendations[0].item
    with pytest.raises(KeyError), pytest.warns(DeprecationWarning, match="no such field"):
        one["no such field"]


def test_written_lists_match_the_one_customer_view_and_the_saved_state(bank):
    """The written list, the saved recommender's state and one customer's view agree: the
    same ranking (coverage or not) and the same class prior from the customer's attributes."""
    from services.matching.behaviour import Recommender, saved_recommender

    k = Kindred(bank)
    k.recommend(top_n=4, method="behavior")
    rec = Recommender.load(bank, saved_recommender(bank))
    fitted = rec.details["validation"]
    assert {"half_life", "attributes", "diversify"} <= set(fitted[0])
    assert (rec.class_prior is not None) == bool(rec.attribute_columns)
    got = bank.to_arrow("customers", columns=["customer_id", "rec_products"])
    for cid, written in list(zip(got.column("customer_id").to_pylist(),
                                 got.column("rec_products").to_pylist(), strict=True))[:5]:
        one = k.recommendations(cid, top=4)
        assert [i.item for i in one.recommendations] == written


def test_cover_top_skips_an_item_that_always_comes_with_a_picked_one():
    import scipy.sparse as sp

    from services.matching.rec_blocks import cover_top

    # item 1 is on every day item 0 is on (a product's page beside the product); item 2 is
    # independent of both
    co = sp.csr_matrix(np.array([[1.0, 1.0, 0.2], [0.9, 1.0, 0.2], [0.3, 0.3, 1.0]]))
    s = np.array([[0.5, 0.45, 0.3], [0.5, 0.45, -np.inf]])
    idx, sc = cover_top(s, 2, co)
    assert idx[0].tolist() == [0, 2]  # by score alone it would be [0, 1]
    assert sc[0, 0] == 0.5
    assert sc[0, 1] <= sc[0, 0]
    assert idx[1].tolist() == [0, 1]  # item 2 is excluded: the covered item is what is left


def test_soft_logistic_recovers_a_class_prior_from_attributes():
    from services.matching.recommend_prior import soft_logistic

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 1))
    p1 = 1 / (1 + np.exp(-3 * x[:, 0]))
    R = np.column_stack([1 - p1, p1])  # soft labels
    coef, intercept = soft_logistic(x, R, c=100.0)
    slope = coef[1, 0] - coef[0, 0]
    assert 2.5 < slope < 3.5
    assert abs(intercept[1] - intercept[0]) < 0.3
