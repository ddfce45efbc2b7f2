"""Consolidation of events into customer features, checked against an independent pandas
computation, on every store backend."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from ingest.consolidate import ConsolidationConfig, consolidate, feature_name
from ingest.errors import ConsolidationError
from ingest.freshness import AGING_FEATURES
from ingest.synthetic import CUSTOMERS_TABLE_SCHEMA, EVENTS_TABLE_SCHEMA
from vectorstore import VectorStore

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
CUSTOMERS = ["c1", "c2", "c3", "c4", "c5", "c6"]
CATS = ["groceries", "Pet Shop!", "travel", "mortgage_payment"]
CHANNELS = ["card", "online", "branch"]
DAY = 86_400
TS = pa.timestamp("us", "UTC")


def _events(rng: np.random.Generator, n: int, customers: list[str], start: int,
            t_lo: int, t_hi: int, cats: list[str] = CATS) -> pa.Table:
    kind = rng.choice(["transaction", "transaction", "page_view", "purchase"], n)
    web = kind != "transaction"
    amount = np.where(web, np.nan, np.round(rng.uniform(1, 500, n), 2))
    product = rng.choice(["savings", "mortgage", "credit_card", ""], n)
    ts = [T0 + dt.timedelta(seconds=int(s)) for s in rng.integers(t_lo, t_hi, n)]
    return pa.table({
        "event_id": [f"e{start + i}" for i in range(n)],
        "customer_id": rng.choice(customers, n),
        "ts": ts,
        "kind": kind,
        "product_id": pa.array([p or None for p in product], pa.string()),
        "category": rng.choice(cats, n),
        "amount": pa.array(amount, pa.float64(), mask=web),
        "channel": rng.choice(CHANNELS, n),
    }, schema=EVENTS_TABLE_SCHEMA)


def _setup(store: VectorStore, n_events: int = 300, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    store.create_table("customers", CUSTOMERS_TABLE_SCHEMA, key="customer_id")
    store.create_table("events", EVENTS_TABLE_SCHEMA, key="event_id")
    n = len(CUSTOMERS)
    store.write("customers", pa.table({
        "customer_id": CUSTOMERS, "age": list(range(30, 30 + n)), "income": [50_000] * n,
        "region": ["north"] * n, "tenure_years": [3] * n, "occupation": ["clerk"] * n,
        "marital_status": ["single"] * n, "segment": ["mass"] * n, "note": ["x"] * n,
        "holdings": [["current_account"], [], None, ["insurance"], [], ["savings"]],
    }, schema=CUSTOMERS_TABLE_SCHEMA))
    # c6 has no events at all
    ev = _events(rng, n_events, CUSTOMERS[:5], 0, 0, 200 * DAY)
    store.write("events", ev)
    return ev


def _reference(events: pd.DataFrame, holdings: dict[str, list[str]],
               as_of: pd.Timestamp) -> pd.DataFrame:
    """The features computed independently with pandas."""
    g = events.groupby("customer_id")
    ref = pd.DataFrame({
        "n_events": g.size(),
        "monetary": g["amount"].sum(min_count=0),
        "first_seen": g["ts"].min(),
        "last_seen": g["ts"].max(),
    })
    ref["recency_days"] = (as_of - ref["last_seen"]).dt.total_seconds() / DAY
    span = ((as_of - ref["first_seen"]).dt.total_seconds() / DAY).clip(lower=1.0)
    ref["frequency"] = ref["n_events"] / span * 30
    paid = events[events["amount"].notna()]
    for cat, sub in paid.groupby("category"):
        ref[feature_name("spend", cat)] = sub.groupby("customer_id")["amount"].sum()
    for ch, sub in events.groupby("channel"):
        ref[feature_name("count", ch)] = sub.groupby("customer_id").size()
    held = events[events["kind"].isin(["transaction", "purchase"]) & events["product_id"].notna()]
    from_events = held.groupby("customer_id")["product_id"].agg(set)
    ref["holdings"] = [sorted(set(holdings.get(c) or []) | from_events.get(c, set()))
                       for c in ref.index]
    spend_count = [c for c in ref.columns if c.startswith(("spend_", "count_"))]
    ref[spend_count] = ref[spend_count].fillna(0)
    return ref


def _customers(store: VectorStore) -> pd.DataFrame:
    df = store.to_arrow("customers").to_pandas().set_index("customer_id").sort_index()
    df["holdings"] = df["holdings"].map(lambda h: sorted(h) if h is not None else None)
    return df


def _check(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    for cid in ref.index:
        for col in ref.columns:
            want, have = ref.at[cid, col], got.at[cid, col]
            if col == "holdings":
                assert list(have) == want, (cid, col)
            elif isinstance(want, pd.Timestamp):
                assert pd.Timestamp(have) == want, (cid, col)
            else:
                assert np.isclose(float(have), float(want), rtol=1e-9, atol=1e-9), (cid, col)


def test_features_equal_an_independent_pandas_computation(store: VectorStore) -> None:
    ev = _setup(store)
    res = consolidate(store)
    events = ev.to_pandas()
    assert res.customers == 5
    assert res.updated == 5
    assert res.events_scanned == len(events)
    as_of = events["ts"].max()
    assert pd.Timestamp(res.as_of) == as_of
    holdings = {"c1": ["current_account"], "c4": ["insurance"]}
    got = _customers(store)
    _check(got, _reference(events, holdings, as_of))
    assert "spend_pet_shop" in got.columns  # "Pet Shop!" sanitised to an identifier
    assert "count_online" in got.columns
    # web events carry no amount, so their categories make no spend_ columns of their own
    assert not any(c.startswith("spend_") and c not in
                   {feature_name("spend", x) for x in CATS} for c in got.columns)
    assert pd.isna(got.at["c6", "n_events"])  # no events: untouched
    assert got.loc[CUSTOMERS[:5], "consolidation_run"].eq(1).all()


def test_incremental_run_touches_only_customers_of_the_new_batch(store: VectorStore) -> None:
    ev = _setup(store)
    consolidate(store)
    before = _customers(store)
    rng = np.random.default_rng(1)
    batch = _events(rng, 40, ["c2", "c4"], 10_000, 201 * DAY, 210 * DAY,
                    cats=["groceries", "garden centre"])
    store.write("events", batch)
    res = consolidate(store)
    assert res.customers == 2
    assert res.updated == 2
    assert res.run == 2
    after = _customers(store)
    # untouched rows: same values and still marked with the first run, but for the
    # features measured to as_of, which age with it (recency and frequency)
    untouched = ["c1", "c3", "c5", "c6"]
    same_cols = [c for c in before.columns if c not in ("holdings", *AGING_FEATURES)]
    pd.testing.assert_frame_equal(after.loc[untouched, same_cols], before.loc[untouched, same_cols])
    assert res.aged == 3  # c1, c3, c5 have events; c6 none
    new_as_of = pd.Timestamp(store.table_info("customers").metadata["consolidation"]["as_of"])
    for c in ["c1", "c3", "c5"]:
        assert after.at[c, "recency_days"] == pytest.approx(
            (new_as_of - after.at[c, "last_seen"]) / pd.Timedelta(days=1))
    assert after.loc[["c1", "c3", "c5"], "consolidation_run"].eq(1).all()
    assert after.loc[["c2", "c4"], "consolidation_run"].eq(2).all()
    # the new category became a column; untouched rows have no value for it
    assert after.loc[untouched, "spend_garden_centre"].isna().all()
    # touched rows: recomputed from all their events
    events = pd.concat([ev.to_pandas(), batch.to_pandas()])
    as_of = events["ts"].max()
    holdings = {"c1": ["current_account"], "c4": ["insurance"]}
    ref = _reference(events, holdings, as_of)
    _check(after.loc[["c2", "c4"]], ref.loc[["c2", "c4"]])
    # nothing new: nothing touched
    assert consolidate(store).customers == 0


def test_holdings_come_from_purchases_and_payments_not_page_views(store: VectorStore) -> None:
    _setup(store, n_events=0)
    t = [T0 + dt.timedelta(days=d) for d in (1, 2, 3, 4)]
    store.write("events", pa.table({
        "event_id": ["a", "b", "c", "d"], "customer_id": ["c1", "c1", "c3", "c4"], "ts": t,
        "kind": ["purchase", "page_view", "transaction", "transaction"],
        "product_id": ["savings", "mortgage", "personal_loan", None],
        "category": ["product_savings", "product_mortgage", "loan_repayment", "groceries"],
        "amount": [None, None, 250.0, 20.0], "channel": ["web", "app", "online", "card"],
    }, schema=EVENTS_TABLE_SCHEMA))
    consolidate(store)
    got = _customers(store)
    assert got.at["c1", "holdings"] == ["current_account", "savings"]
    assert got.at["c3", "holdings"] == ["personal_loan"]
    assert got.at["c4", "holdings"] == ["insurance"]
    assert got.at["c6", "holdings"] == ["savings"]
    assert got.at["c1", "monetary"] == 0.0
    assert got.at["c3", "spend_loan_repayment"] == 250.0


def test_unknown_customers_inserted_skipped_or_refused(store: VectorStore) -> None:
    _setup(store, n_events=20)
    store.write("events", pa.table({
        "event_id": ["x1"], "customer_id": ["stranger"], "ts": [T0],
        "kind": ["purchase"], "product_id": ["savings"], "category": ["product_savings"],
        "amount": [None], "channel": ["web"],
    }, schema=EVENTS_TABLE_SCHEMA))
    with pytest.raises(ConsolidationError, match="stranger"):
        consolidate(store, config=ConsolidationConfig(on_unknown="error"))
    res = consolidate(store, full=True, config=ConsolidationConfig(on_unknown="skip"))
    assert res.skipped == 1
    assert store.count("customers") == len(CUSTOMERS)
    res = consolidate(store, customer_ids=["stranger"])
    assert res.inserted == 1
    row = store.to_arrow("customers", filter="customer_id = 'stranger'").to_pylist()[0]
    assert row["holdings"] == ["savings"]
    assert row["n_events"] == 1
    assert row["age"] is None


def test_named_customers_and_the_full_scan_path_agree(store: VectorStore) -> None:
    ev = _setup(store)
    # more customers than in_filter_limit: one scan, filtered inside DuckDB
    cfg = ConsolidationConfig(in_filter_limit=1)
    res = consolidate(store, customer_ids=["c1", "c3", "c9"], config=cfg)
    assert res.customers == 2
    got = _customers(store)
    assert got.loc[["c2", "c4", "c5"], "n_events"].isna().all()
    events = ev.to_pandas()
    sub = events[events["customer_id"].isin(["c1", "c3"])]
    ref = _reference(sub, {"c1": ["current_account"]}, sub["ts"].max())
    _check(got.loc[["c1", "c3"]], ref)


def test_configurable_dimensions(store: VectorStore) -> None:
    ev = _setup(store).to_pandas()
    cfg = ConsolidationConfig(spend={"product_id": "product_spend"},
                              count={"kind": "n", "channel": "count"},
                              values={"channel": ["card"]})
    consolidate(store, config=cfg)
    got = _customers(store)
    assert "spend_groceries" not in got.columns
    assert "count_online" not in got.columns  # only the listed channel value
    for cid in CUSTOMERS[:5]:
        mine = ev[ev["customer_id"] == cid]
        paid = mine[mine["amount"].notna()]
        assert np.isclose(got.at[cid, "product_spend_mortgage"],
                          paid.loc[paid["product_id"] == "mortgage", "amount"].sum())
        assert got.at[cid, "n_purchase"] == (mine["kind"] == "purchase").sum()
        assert got.at[cid, "count_card"] == (mine["channel"] == "card").sum()


def test_missing_columns_are_reported(store: VectorStore) -> None:
    _setup(store, n_events=5)
    with pytest.raises(ConsolidationError, match="'merchant'"):
        consolidate(store, config=ConsolidationConfig(spend={"merchant": "spend"}))
    with pytest.raises(ConsolidationError, match="'ingested_at'"):
        consolidate(store, config=ConsolidationConfig(watermark_column="ingested_at"))


MAPPINGS = {
    "customers": {"table": "customers", "id_column": "customer_id", "text_columns": ["note"],
                  "holdings": {"list_column": "products", "separator": ";"}},
    "transactions": {"table": "events", "id_column": "event_id"},
    "web_events": {"table": "events", "id_column": "event_id", "rename": {"page": "category"}},
    "products": {"table": "products", "id_column": "product_id",
                 "text_columns": ["description"]},
}


def test_consolidates_a_synthetic_bank_ingested_by_the_pipeline(tmp_path) -> None:
    import vectorstore
    from ingest.pipeline import ingest
    from ingest.synthetic import generate

    bank = generate(tmp_path / "bank", n_customers=400, events_per_customer=10, seed=5)
    store = vectorstore.connect(str(tmp_path / "db"))
    for name, mapping in MAPPINGS.items():
        summary = ingest(store, getattr(bank, name), mapping)
        assert summary.skipped == summary.quarantined == 0
    assert store.count("events") == bank.n_events
    res = consolidate(store)
    c = store.to_arrow("customers").to_pandas()
    assert int(c["n_events"].fillna(0).sum()) == bank.n_events == res.events_scanned
    truth = pd.read_parquet(bank.truth).set_index("customer_id")["holdings"].map(set)
    csv = c.set_index("customer_id")["holdings"].map(set)
    # every holding found is true, and online purchases missing from the CRM are recovered
    assert all(csv[k] <= truth[k] for k in csv.index)
    assert (csv == truth.loc[csv.index]).all()
    assert set(c.columns) >= {"spend_groceries", "count_card", "count_web", "recency_days"}


# ---------------------------------------------------------------- the event files people have
def _purchase_log(path, n: int = 600, seed: int = 3) -> pd.DataFrame:
    """member,date,item rows, some bought again the same day (kept as repeats)."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "member": rng.integers(1000, 1030, n),
        "date": [f"{d:02d}-{m:02d}-2015" for d, m in zip(rng.integers(1, 29, n),
                                                        rng.integers(1, 13, n), strict=True)],
        "item": rng.choice(["whole milk", "rolls/buns", "soda", "yogurt", "Pip fruit"], n),
    })
    df = pd.concat([df, df.sample(40, random_state=seed)]).sample(frac=1, random_state=seed)
    df = df.reset_index(drop=True)
    df.to_csv(path, index=False)
    return df


LOG = {"table": "events", "rename": {"member": "customer_id", "date": "ts"},
       "timestamp_formats": {"date": "%d-%m-%Y"}}


def test_a_purchase_log_with_no_customers_table(store: VectorStore, tmp_path) -> None:
    from ingest.pipeline import ingest

    df = _purchase_log(tmp_path / "log.csv")
    assert df.duplicated().sum() >= 30  # repeated purchases
    ingest(store, tmp_path / "log.csv", LOG)
    assert not store.has_table("customers")
    with pytest.raises(ConsolidationError, match="'nope'"):
        consolidate(store, config=ConsolidationConfig(categories=["nope"]))
    assert not store.has_table("customers")  # a failed first run leaves no table behind
    res = consolidate(store, config=ConsolidationConfig(categories=["item"]))
    assert res.created_table
    assert res.inserted == res.customers == df["member"].nunique()
    assert res.notes == ("monetary and spend features (no 'amount' column)",
                         "per-channel features (no 'channel' column)",
                         "holdings from events (no 'product_id' column)")
    assert "monetary" not in res.feature_columns
    got = _customers(store)
    assert store.table_info("customers").key == "customer_id"
    ref = df.groupby(df["member"].astype(str))
    pd.testing.assert_series_equal(got["n_events"], ref.size(), check_names=False)
    for item in df["item"].unique():
        want = df[df["item"] == item].groupby(df["member"].astype(str)).size()
        want = want.reindex(got.index, fill_value=0)
        assert (got[feature_name("count", item)] == want).all(), item
    last = pd.to_datetime(ref["date"].apply(lambda s: pd.to_datetime(s, format="%d-%m-%Y")
                                            .max()), utc=True)
    assert (got["last_seen"] == last).all()
    # the next day: the remembered --category, a new item, a new member
    more = tmp_path / "more.csv"
    more.write_text("member,date,item\n1001,01-01-2016,bread\n1001,01-01-2016,bread\n"
                    "2000,01-01-2016,soda\n")
    ingest(store, more, LOG)
    res = consolidate(store)
    assert (res.updated, res.inserted) == (1, 1)
    got = _customers(store)
    assert got.at["1001", "count_bread"] == 2
    assert got.at["2000", "count_soda"] == 1
    assert got.at["1001", "n_events"] == ref.size()["1001"] + 2


def test_columns_named_by_options(store: VectorStore) -> None:
    store.create_table("events", pa.schema([("event_id", pa.string()),
                                            ("customer_id", pa.string()),
                                            ("ts", TS), ("price", pa.float64()),
                                            ("dept", pa.string()), ("shop", pa.string())]),
                       key="event_id")
    store.write("events", pa.table({
        "event_id": ["1", "2", "3", "4"], "customer_id": ["a", "a", "b", "b"],
        "ts": [T0 + dt.timedelta(days=i) for i in range(4)], "price": [1.5, 2.0, 4.0, None],
        "dept": ["food", "toys", "food", "food"], "shop": ["web", "mall", "web", "web"]}))
    res = consolidate(store, config=ConsolidationConfig(amount="price", categories=["dept"],
                                                        channels=["shop"]))
    assert res.notes == ("holdings from events (no 'product_id' column)",)
    got = _customers(store)
    assert got.at["a", "monetary"] == 3.5
    assert got.at["b", "monetary"] == 4.0
    assert got.at["a", "spend_toys"] == 2.0
    assert got.at["b", "spend_food"] == 4.0
    assert (got.at["a", "count_mall"], got.at["b", "count_web"]) == (1, 2)
    with pytest.raises(ConsolidationError, match=r"amount column\(s\) 'cost' not in"):
        consolidate(store, config=ConsolidationConfig(amount="cost"))


def test_values_per_column_are_capped(store: VectorStore) -> None:
    _setup(store, n_events=0)
    cats = [f"sku{i}" for i in range(12)]
    store.write("events", pa.table({
        "event_id": [f"x{i}" for i in range(40)],
        "customer_id": ["c1"] * 40, "ts": [T0 + dt.timedelta(hours=i) for i in range(40)],
        "kind": ["transaction"] * 40, "product_id": [None] * 40,
        "category": [cats[0]] * 20 + [cats[1]] * 10 + cats[2:],
        "amount": [1.0] * 40, "channel": ["card"] * 40}, schema=EVENTS_TABLE_SCHEMA))
    res = consolidate(store, config=ConsolidationConfig(max_values=2))
    assert [c for c in res.feature_columns if c.startswith("spend_")] == ["spend_sku0",
                                                                        "spend_sku1"]
    assert any("category: columns for 2 of 12 values" in n for n in res.notes)
    assert _customers(store).at["c1", "monetary"] == 40.0  # every event still counted
    res = consolidate(store, full=True)  # the limit is remembered
    assert len([c for c in res.feature_columns if c.startswith("spend_")]) == 2
