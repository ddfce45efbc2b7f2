"""The next days of a synthetic bank: consistent with day 1, deterministic, loadable."""

from __future__ import annotations

import hashlib
import json
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest

import vectorstore
from ingest.consolidate import consolidate
from ingest.errors import IngestError
from ingest.pipeline import ingest
from synthetic_bank import END, generate
from synthetic_bank.days import FILES, generate_day

N = 3000


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    out = tmp_path_factory.mktemp("bank")
    generate(out, N, events_per_customer=8, seed=7)
    return out


def _digest(folder):
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest()
            for f in FILES.values()}


def test_day_two_is_consistent_with_day_one(bank):
    day = generate_day(bank, 2)
    day1 = pd.read_csv(bank / "customers.csv").set_index("customer_id")
    cust = pd.read_csv(day.customers).set_index("customer_id")
    new = cust.index[~cust.index.isin(day1.index)]
    changed = cust.index[cust.index.isin(day1.index)]
    assert len(new) == day.n_new_customers == round(N * 0.02)
    assert list(new) == [f"C{i:08d}" for i in range(N + 1, N + 1 + len(new))]
    assert len(changed) == day.n_changed_customers > 0
    # a changed customer is the same person: what does not change in a day did not
    for col in ("age", "occupation", "marital_status", "tenure_years", "note"):
        assert (cust.loc[changed, col] == day1.loc[changed, col]).all(), col
    diff = (cust.loc[changed, ["income", "region", "products"]].fillna("")
            != day1.loc[changed, ["income", "region", "products"]].fillna("")).any(axis=1)
    assert diff.mean() > 0.8  # nearly every changed row differs in what may change
    truth = pq.read_table(day.truth).to_pandas().set_index("customer_id")
    assert set(truth.index) == set(cust.index)
    crm = cust["products"].fillna("").map(lambda s: set(filter(None, s.split(";"))))
    assert all(crm[c] <= set(truth.at[c, "holdings"]) for c in cust.index)
    # events: ids after day 1's, all in the day's 24 hours, from known customers
    m1 = json.loads((bank / "bank.json").read_text())
    tx = pq.read_table(day.transactions).to_pandas()
    assert tx["event_id"].min() == f"T{m1['n_transactions'] + 1:012d}"
    assert tx["event_id"].is_unique
    web = pd.read_json(day.web_events, lines=True)
    assert web["event_id"].min() == f"W{m1['n_web_events'] + 1:012d}"
    start = pd.Timestamp(END)
    assert tx["ts"].between(start, start + pd.Timedelta(days=1), inclusive="left").all()
    web_ts = pd.to_datetime(web["ts"], utc=True)
    assert web_ts.between(start, start + pd.Timedelta(days=1), inclusive="left").all()
    known = set(day1.index) | set(new)
    assert set(tx["customer_id"]) <= known
    assert set(web["customer_id"]) <= known
    assert len(tx) > 0.5 * N * 8 * 0.7 / 365  # about a day's share of the activity
    # new customers' online purchases arrive as purchase events on their first day
    bought = web[web["kind"] == "purchase"]
    assert set(bought["customer_id"]) <= set(new)
    assert len(bought) > 0


def test_days_are_a_deterministic_chain(bank, tmp_path):
    d3 = generate_day(bank, 3)
    first = _digest(d3.out_dir)
    other = tmp_path / "copy"
    shutil.copytree(bank, other, ignore=shutil.ignore_patterns("day*"))
    generate_day(other, 3)  # day 3 without day 2 written
    assert _digest(other / "day3") == first
    d2 = json.loads((generate_day(bank, 2).manifest).read_text())
    m3 = json.loads(d3.manifest.read_text())
    assert m3["first_new_customer"] == f"C{N + d2['n_new_customers'] + 1:08d}"
    tx2 = pq.read_table(bank / "day2" / "transactions.parquet").column("event_id")
    tx3 = pq.read_table(d3.transactions).column("event_id")
    assert tx3[0].as_py() > tx2[-1].as_py()


def test_errors(bank, tmp_path):
    with pytest.raises(IngestError, match="later days start at 2"):
        generate_day(bank, 1)
    with pytest.raises(IngestError, match="no generated bank"):
        generate_day(tmp_path, 2)


def test_day_two_loads_on_top_of_day_one(bank, tmp_path):
    """Day 1 then day 2 through the ingest pipeline; incremental consolidation equals a full
    one on the same events."""
    day = generate_day(bank, 2)
    store = vectorstore.connect(str(tmp_path / "db"))
    cust = {"table": "customers", "id_column": "customer_id",
            "holdings": {"list_column": "products", "separator": ";"}}
    web = {"table": "events", "rename": {"page": "category"},
           "timestamp_formats": {"ts": "%Y-%m-%dT%H:%M:%SZ"}, "holdings": {"from_events":
                                                                          ["purchase"]}}
    tx = {"table": "events"}
    for folder in (bank, day.out_dir):
        ingest(store, folder / "customers.csv", cust)
        ingest(store, folder / "transactions.parquet", tx)
        ingest(store, folder / "web_events.jsonl", web)
        consolidate(store)
    assert store.count("customers") == N + day.n_new_customers
    n_events = store.count("events")
    m1 = json.loads((bank / "bank.json").read_text())
    assert n_events == m1["n_transactions"] + m1["n_web_events"] + day.n_transactions \
        + day.n_web_events
    # (recency and frequency of customers without new events stay measured to the day they
    # were computed: an incremental run touches only customers with new events)
    cols = ["customer_id", "n_events", "monetary", "first_seen", "last_seen", "count_card",
            "spend_groceries"]
    incremental = store.to_arrow("customers", columns=[*cols, "holdings"]).sort_by("customer_id")
    consolidate(store, full=True)
    full = store.to_arrow("customers", columns=[*cols, "holdings"]).sort_by("customer_id")
    assert incremental.select(cols).equals(full.select(cols))
    # (a changed CRM row brings its holdings in the CRM's order; the products are the same)
    assert [sorted(h or []) for h in incremental.column("holdings").to_pylist()] == \
        [sorted(h or []) for h in full.column("holdings").to_pylist()]
    again = ingest(store, day.transactions, tx)
    assert (again.written, again.unchanged) == (0, day.n_transactions)
