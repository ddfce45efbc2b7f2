"""On the synthetic bank, matching beats chance by a wide margin and recovers planted propensities.

The bank draws each holding from a planted propensity (``truth.parquet``: ``p_<product>``) that
depends on a latent segment the store never sees; the customers' attributes are noisy signs of
it. Customers get tabular vectors from the tabular embedder, then:

- holdout: 20% of a product's holders are hidden; with ~180 hidden among ~2,000 candidates the
  ROC-AUC of a random ranking has a standard deviation of ~0.02, so a floor of 0.5 + 0.2 is
  about ten standard deviations above chance; the popularity baseline (number of other products
  held) must be beaten too;
- propensity recovery: the prospects' scores rank like the true propensities (Spearman).
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

import vectorstore
from ingest.embedders import TabularEmbedder, embed
from services.matching import match
from services.matching.evaluate import evaluate_holdout
from synthetic_bank import generate, load_into_store

PRODUCTS = ("mortgage", "term_deposit", "insurance")


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("bank")
    generated = generate(d / "files", 3000, events_per_customer=3, seed=1)
    st = vectorstore.connect(str(d / "db"))
    load_into_store(st, generated)
    embed(st, "customers", TabularEmbedder(exclude=["note"]))
    return st, pq.read_table(generated.truth)


@pytest.mark.parametrize("product", PRODUCTS)
def test_holdout_beats_random_and_popularity_by_wide_margin(bank, product):
    st, _ = bank
    rep = evaluate_holdout(st, product, vector_columns=["vec_tabular"], Cs=(10.0,))
    auc = {r.method: r.roc_auc for r in rep.rows}
    lift = {r.method: r.lift_at_k for r in rep.rows}
    assert auc["random"] == 0.5
    for method in ("centroid", "learned"):
        assert auc[method] >= 0.70, (method, auc)
        assert auc[method] > auc["popularity"] + 0.05, (method, auc)
        assert lift[method] >= 1.5, (method, lift)
    assert rep.params["hidden"] == round(0.2 * st.count("customers", f"has(holdings, '{product}')"))


@pytest.mark.parametrize("method", ["centroid", "learned"])
def test_prospect_scores_recover_planted_propensities(bank, method):
    st, truth = bank
    for product in PRODUCTS:
        r = match(st, product, method=method, top_k=3000, exact=True,
                  learned_options={"Cs": (10.0,)})
        idx = pc.index_in(r.prospects.column("customer_id"),
                          value_set=truth.column("customer_id")).to_numpy()
        planted = truth.column(f"p_{product}").to_numpy()[idx]
        rho = spearmanr(r.prospects.column("score").to_numpy(), planted).statistic
        assert rho > 0.6, (method, product, rho)
        # the top decile of prospects has a clearly higher planted propensity than the rest
        top = max(1, len(planted) // 10)
        assert planted[:top].mean() > 1.5 * np.median(planted)


@pytest.mark.slow
def test_propensity_recovers_planted_propensities_better_than_learned(tmp_path,
                                                                       tmp_path_factory):
    """On the bank as the CLI builds it (ingest, consolidate, tabular and behaviour
    embeddings): `kindred fit` then `match --method propensity` ranks the prospects closer to
    the planted propensities than the linear learned query on the tabular vectors."""
    from services.facade import Kindred
    from tests.services._bank import copy_store, prepared_bank

    bank_dir, _ = prepared_bank(tmp_path_factory)
    truth = pq.read_table(bank_dir / "truth.parquet")
    with Kindred(str(copy_store(tmp_path_factory, tmp_path / "store"))) as k:
        k.fit(["mortgage"], exclude=["is_anomaly"])
        rho = {}
        for method, column in (("learned", "vec_tabular"), ("propensity", None)):
            r = k.match("mortgage", method=method, column=column, top=2000,
                        exact=True, consumers=False)
            idx = pc.index_in(r.prospects.column("customer_id"),
                              value_set=truth.column("customer_id")).to_numpy()
            planted = truth.column("p_mortgage").to_numpy()[idx]
            rho[method] = spearmanr(r.prospects.column("score").to_numpy(), planted).statistic
    assert rho["propensity"] > rho["learned"] + 0.02, rho
