"""The synthetic bank: deterministic, the right shape, learnable holdings, visible anomalies."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import vectorstore
from ingest.errors import IngestError
from synthetic_bank import (
    ANOMALY_KINDS,
    CATEGORIES,
    PAGES,
    PRODUCT_IDS,
    RISKY_CATEGORIES,
    GeneratedBank,
    generate,
    load_into_store,
    read_products,
    split_products,
)

N = 6_000
EPC = 12


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> GeneratedBank:
    return generate(tmp_path_factory.mktemp("bank"), n_customers=N, events_per_customer=EPC,
                    seed=7)


@pytest.fixture(scope="module")
def frames(bank: GeneratedBank) -> dict[str, pd.DataFrame]:
    return {
        "customers": pd.read_csv(bank.customers, keep_default_na=False),
        "tx": pq.read_table(bank.transactions).to_pandas(),
        "web": pd.read_json(bank.web_events, lines=True),
        "truth": pq.read_table(bank.truth).to_pandas(),
    }


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", n_customers=600, events_per_customer=8, seed=3)
    b = generate(tmp_path / "b", n_customers=600, events_per_customer=8, seed=3)
    c = generate(tmp_path / "c", n_customers=600, events_per_customer=8, seed=4)
    for f in ("customers", "transactions", "web_events", "products", "truth"):
        assert _digest(getattr(a, f)) == _digest(getattr(b, f)), f
    for f in ("customers", "transactions", "web_events", "truth"):
        assert _digest(getattr(a, f)) != _digest(getattr(c, f)), f


def test_sizes_and_columns(bank: GeneratedBank, frames: dict[str, pd.DataFrame]) -> None:
    cust, tx, web, truth = frames["customers"], frames["tx"], frames["web"], frames["truth"]
    assert len(cust) == len(truth) == bank.n_customers == N
    assert cust["customer_id"].is_unique
    assert len(tx) == bank.n_transactions
    assert len(web) == bank.n_web_events
    # events per customer close to the request (anomalies and purchases add a little)
    assert 0.9 * EPC <= (len(tx) + len(web)) / N <= 1.2 * EPC
    assert tx["event_id"].is_unique
    assert web["event_id"].is_unique
    assert set(tx["customer_id"]) <= set(cust["customer_id"])
    assert set(web["customer_id"]) <= set(cust["customer_id"])
    assert list(cust.columns) == ["customer_id", "age", "income", "region", "tenure_years",
                                  "occupation", "marital_status", "segment", "note", "products"]
    assert (cust["age"] >= 18).all()
    assert (cust["income"] > 0).all()
    assert (cust["tenure_years"] <= cust["age"] - 17).all()
    assert cust["note"].str.len().min() > 10
    assert set(tx["category"]) <= set(CATEGORIES)
    assert set(web["page"]) <= set(PAGES)
    assert set(web["kind"]) == {"page_view", "purchase"}
    assert (tx["amount"] > 0).all()
    products = read_products(bank.products)
    assert [p["product_id"] for p in products] == PRODUCT_IDS
    assert len(products) >= 8
    assert all(p["name"] and len(p["description"]) > 30 for p in products)
    manifest = json.loads(bank.manifest.read_text())
    assert manifest["n_transactions"] == len(tx)
    assert manifest["seed"] == 7
    assert GeneratedBank.open(bank.out_dir).n_web_events == len(web)


def test_csv_products_are_truth_minus_recent_online_purchases(
        frames: dict[str, pd.DataFrame]) -> None:
    cust, web, truth = frames["customers"], frames["web"], frames["truth"]
    csv_sets = dict(zip(cust["customer_id"], cust["products"].map(
        lambda s: set(s.split(";")) if s else set()), strict=True))
    truth_sets = dict(zip(truth["customer_id"], truth["holdings"].map(set), strict=True))
    bought = web[web["kind"] == "purchase"].groupby("customer_id")["product_id"].agg(set)
    assert len(bought) > 0
    for cid, held in truth_sets.items():
        online = bought.get(cid, set())
        assert csv_sets[cid] | online == held
        assert not (csv_sets[cid] & online)


def test_segments_shape_holdings(frames: dict[str, pd.DataFrame]) -> None:
    truth = frames["truth"]
    for p in PRODUCT_IDS:
        truth[p] = truth["holdings"].map(lambda h, p=p: p in h)
    rates = truth.groupby("latent_segment")[PRODUCT_IDS].mean()
    assert rates.loc["family", "mortgage"] > 0.5 > 0.05 > rates.loc["student", "mortgage"]
    assert rates.loc["affluent", "investment_fund"] > 3 * rates.loc["family", "investment_fund"]
    assert rates.loc["retiree", "term_deposit"] > 3 * rates.loc["young_professional",
                                                                 "term_deposit"]
    # holdings are drawn from the recorded propensities
    for p in ("mortgage", "investment_fund", "credit_card"):
        assert abs(truth[p].mean() - truth[f"p_{p}"].mean()) < 0.03


def _behaviour_features(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    tx, web = frames["tx"], frames["web"]
    views = web[web["kind"] == "page_view"]
    parts = [
        tx.pivot_table(index="customer_id", columns="category", values="amount",
                       aggfunc="sum", fill_value=0).add_prefix("spend_"),
        tx.pivot_table(index="customer_id", columns="channel", values="amount",
                       aggfunc="size", fill_value=0).add_prefix("n_"),
        views.pivot_table(index="customer_id", columns="page", values="event_id",
                          aggfunc="size", fill_value=0).add_prefix("view_"),
    ]
    cust = frames["customers"].set_index("customer_id")[["age", "income", "tenure_years"]]
    return cust.join(parts, how="left").fillna(0)


def test_holdings_predictable_from_behaviour_but_not_trivially(
        frames: dict[str, pd.DataFrame]) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = _behaviour_features(frames)
    x = np.log1p(x.clip(lower=0))
    truth = frames["truth"].set_index("customer_id").loc[x.index]
    half = len(x) // 2
    aucs = {}
    for p in ("mortgage", "investment_fund", "term_deposit", "credit_card"):
        y = truth["holdings"].map(lambda h, p=p: p in h).to_numpy()
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(x.iloc[:half], y[:half])
        aucs[p] = roc_auc_score(y[half:], model.predict_proba(x.iloc[half:])[:, 1])
    assert all(0.7 < a < 0.99 for a in aucs.values()), aucs


def test_anomalies_planted_and_visible_in_raw_data(frames: dict[str, pd.DataFrame]) -> None:
    tx, truth = frames["tx"], frames["truth"].set_index("customer_id")
    rate = truth["is_anomaly"].mean()
    assert 0.005 < rate < 0.016
    assert set(truth.loc[truth["is_anomaly"], "anomaly_kind"]) == set(ANOMALY_KINDS)
    assert truth.loc[~truth["is_anomaly"], "anomaly_kind"].isna().all()

    tx = tx.sort_values(["customer_id", "ts"])
    same = tx["customer_id"].eq(tx["customer_id"].shift())
    gap = tx["ts"].diff().dt.total_seconds()
    tx = tx.assign(night=tx["ts"].dt.hour.between(1, 4),
                   risky=tx["category"].isin(RISKY_CATEGORIES),
                   quick=same & gap.lt(3 * 3600))
    g = tx.groupby("customer_id")
    stats = pd.DataFrame({
        "amount": g["amount"].max() / g["amount"].median(),
        "night": g["night"].mean(),
        "category": g["risky"].mean(),
        "velocity": g["quick"].mean(),
    }).join(truth[["is_anomaly", "anomaly_kind"]])
    normal = stats[~stats["is_anomaly"]]
    for kind in ANOMALY_KINDS:
        planted = stats[stats["anomaly_kind"] == kind][kind]
        assert planted.median() > normal[kind].quantile(0.95), kind


def test_load_into_store_builds_the_three_tables(tmp_path: Path) -> None:
    bank = generate(tmp_path / "small", n_customers=500, events_per_customer=10, seed=2)
    frames = {"customers": pd.read_csv(bank.customers, keep_default_na=False),
              "tx": pq.read_table(bank.transactions).to_pandas(),
              "web": pd.read_json(bank.web_events, lines=True)}
    store = vectorstore.connect(str(tmp_path / "db"))
    written = load_into_store(store, bank.out_dir)
    assert written == {"customers": 500, "events": bank.n_events, "products": len(PRODUCT_IDS)}
    assert store.table_info("customers").key == "customer_id"
    assert store.count("events", "kind = 'purchase'") == int(
        (frames["web"]["kind"] == "purchase").sum())
    rows = store.to_arrow("customers", columns=["customer_id", "holdings"]).to_pandas()
    expected = frames["customers"].set_index("customer_id")["products"]
    got = rows.set_index("customer_id")["holdings"].map(list)
    assert (got.map(";".join) == expected.loc[got.index]).all()
    ev = store.to_arrow("events", filter="customer_id = 'C00000010'").to_pandas()
    raw = frames["tx"][frames["tx"]["customer_id"] == "C00000010"]
    assert np.isclose(ev["amount"].sum(), raw["amount"].sum())
    # loading again replaces rather than duplicates
    load_into_store(store, bank)
    assert store.count("events") == bank.n_events


def test_split_products_handles_blanks() -> None:
    import pyarrow as pa

    out = split_products(pa.array(["a;b", "", None, " c ;;d"]))
    assert out.to_pylist() == [["a", "b"], [], [], ["c", "d"]]


def test_bad_arguments_and_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="n_customers"):
        generate(tmp_path, n_customers=-1)
    with pytest.raises(IngestError, match=r"bank\.json"):
        GeneratedBank.open(tmp_path / "nothing")
