"""The next days of a synthetic bank: the files a nightly load would receive.

``generate_day(bank_dir, day)`` writes ``<bank_dir>/day<N>/`` for a bank that
:func:`synthetic_bank.generate` wrote to ``bank_dir`` (day 1), with the same file formats:

``customers.csv``
    The customers whose CRM record is new or changed that day, as full rows: about 2% of day
    1's count are new customers (ids continuing after the last one), about 1% of the existing
    ones changed (income drifts, one in five moved region, three in ten opened a product; the
    CRM also catches up with their recent online purchases).
``transactions.parquet``, ``web_events.jsonl``
    Every customer's events of that day (the 24 hours after the previous day's files end),
    event ids continuing after the previous day's; new customers' online purchases appear as
    ``purchase`` web events on their first day.
``truth.parquet``
    Ground truth of the new and changed customers (holdings as they are now).
``bank.json``
    The day's manifest: counts, window, the first new customer id.

Consistent with day 1: a customer keeps the latent segment, propensities, activity and
anomaly kind drawn for them on day 1, so their new events look like their old ones. The days
are a deterministic chain: day N replays days 2..N-1 in memory (their changes and event
counts), so it does not depend on which earlier days were written, and the same seed gives
byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ingest.errors import IngestError

from .generator import (
    _ACTIVITY,
    _END_S,
    _WEB_SHARE,
    ANOMALY_KINDS,
    BLOCK,
    CUSTOMERS_CSV_SCHEMA,
    END,
    REGIONS,
    TRANSACTIONS_SCHEMA,
    TRUTH_SCHEMA,
    WEB_SCHEMA,
    WINDOW_DAYS,
    GeneratedBank,
    _customers_table,
    _events_table,
    _jsonl,
    _sample_rows,
    _State,
    _state,
    _transactions,
    _truth_table,
    _web,
)

NEW_RATE = 0.02
"""New customers per day, as a share of day 1's customers (at least one)."""
CHANGE_RATE = 0.01
"""Share of the existing customers whose CRM record changes on a given day."""
_TAG_NEW, _TAG_CHANGE, _TAG_EVENTS = 101, 102, 103  # RNG streams, apart from day 1's
_DAY_S = 86_400
FILES = {"customers": "customers.csv", "transactions": "transactions.parquet",
         "web_events": "web_events.jsonl", "truth": "truth.parquet", "manifest": "bank.json"}


@dataclass(frozen=True)
class GeneratedDay:
    """Where one later day of a bank was written, and what it holds."""

    out_dir: Path
    customers: Path
    transactions: Path
    web_events: Path
    truth: Path
    manifest: Path
    day: int
    n_new_customers: int
    n_changed_customers: int
    n_transactions: int
    n_web_events: int
    n_anomalies: int
    """Planted anomalies among the day's new customers."""
    seed: int


@dataclass
class _Group:
    """Customers generated together: a day-1 block, or one day's new customers."""

    tag: int
    state: _State
    born: int


def _day1_groups(bank: GeneratedBank) -> list[_Group]:
    """Day 1's customers, rebuilt from the first draws of each block's RNG (as written)."""
    groups = []
    for index, first in enumerate(range(0, bank.n_customers, BLOCK)):
        n = min(BLOCK, bank.n_customers - first)
        st = _state(np.random.default_rng([bank.seed, index]), n, first)
        groups.append(_Group(index, st, 1))
    return groups


def _change(group: _Group, seed: int, day: int) -> np.ndarray:
    """Change some customers of ``group`` on ``day`` (in place); their row indexes."""
    rng = np.random.default_rng([seed, _TAG_CHANGE, group.tag, day])
    c = group.state.c
    n = len(group.state.ids)
    idx = np.nonzero(rng.random(n) < CHANGE_RATE)[0]
    k = len(idx)
    drift = rng.lognormal(0.03, 0.05, k)
    c["income"][idx] = (np.rint(c["income"][idx] * drift / 100) * 100).astype(np.int64)
    moved = idx[rng.random(k) < 0.2]
    c["region"][moved] = rng.integers(0, len(REGIONS), len(moved))
    opens = idx[rng.random(k) < 0.3]
    weights = np.where(c["hold"][opens], 0.0, c["prop"][opens])
    can = weights.sum(axis=1) > 0
    opens, weights = opens[can], weights[can]
    if len(opens):
        product = _sample_rows(rng, weights, np.arange(len(opens)))
        c["hold"][opens, product] = True
    group.state.recent[idx] = False  # the CRM catches up with online purchases
    return idx


def _events(group: _Group, seed: int, day: int, epc: float, end_s: int
            ) -> tuple[dict, dict]:
    """The group's transactions and web events of ``day`` (one day's share of activity)."""
    rng = np.random.default_rng([seed, _TAG_EVENTS, group.tag, day])
    st = group.state
    c = st.c
    seg = c["seg"]
    lam = epc * _ACTIVITY[seg] * st.activity / WINDOW_DAYS
    n_tx = rng.poisson(lam * (1 - _WEB_SHARE[seg]))
    n_web = rng.poisson(lam * _WEB_SHARE[seg])
    velocity = c["anom_kind"] == ANOMALY_KINDS.index("velocity")
    n_tx = np.where(velocity, n_tx * 6, n_tx)
    recent = st.recent if group.born == day else np.zeros_like(st.recent)
    tx = _transactions(rng, c, c["hold"], n_tx, end_s=end_s, days=1)
    web = _web(rng, c, c["hold"], recent, n_web, end_s=end_s, days=1)
    return tx, web


def generate_day(bank_dir: str | Path, day: int) -> GeneratedDay:
    """Write day ``day`` (2 or later) of the bank in ``bank_dir`` to ``bank_dir/day<day>``."""
    root = Path(bank_dir)
    if day < 2:
        raise IngestError(f"day {day}: later days start at 2 (day 1 is the bank itself, "
                          "written by generate without a day)")
    if not (root / "bank.json").is_file():
        raise IngestError(f"{root} holds no generated bank (no bank.json): generate day 1 "
                          "there first")
    bank = GeneratedBank.open(root)
    seed, epc, n1 = bank.seed, float(bank.events_per_customer), bank.n_customers
    groups = _day1_groups(bank)
    total, tx_next, web_next = n1, bank.n_transactions, bank.n_web_events
    out = root / f"day{day}"
    for d in range(2, day + 1):
        end_s = _END_S + (d - 1) * _DAY_S
        changed = [(g, _change(g, seed, d)) for g in groups]
        n_new = max(1, round(n1 * NEW_RATE))
        new = _Group(100_000 + d, _state(np.random.default_rng([seed, _TAG_NEW, d]), n_new,
                                         total), d)
        first_new = new.state.ids[0].as_py()
        total += n_new
        groups.append(new)
        tx_parts, web_parts = [], []
        for g in groups:
            tx, web = _events(g, seed, d, epc, end_s)
            t = _events_table(tx, g.state.ids, "T", tx_next, web=False)
            w = _events_table(web, g.state.ids, "W", web_next, web=True)
            tx_next += t.num_rows
            web_next += w.num_rows
            if d == day:
                tx_parts.append(t)
                web_parts.append(w)
    cust_parts = [_customers_table(g.state).take(pa.array(i)) for g, i in changed if len(i)]
    truth_parts = [_truth_table(g.state).take(pa.array(i)) for g, i in changed if len(i)]
    n_changed = sum(len(i) for _, i in changed)
    cust_parts.append(_customers_table(new.state))
    truth_parts.append(_truth_table(new.state))
    return _write(out, day, seed, first_new, n_new, n_changed,
                  pa.concat_tables(cust_parts), pa.concat_tables(truth_parts),
                  pa.concat_tables(tx_parts).cast(TRANSACTIONS_SCHEMA),
                  pa.concat_tables(web_parts).cast(WEB_SCHEMA),
                  int(pc.sum(new.state.c["is_anom"]).as_py() or 0))


def _write(out: Path, day: int, seed: int, first_new: str, n_new: int, n_changed: int,
           customers: pa.Table, truth: pa.Table, tx: pa.Table, web: pa.Table,
           n_anomalies: int) -> GeneratedDay:
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in FILES.items()}
    csv_opts = pacsv.WriteOptions(include_header=True, quoting_style="needed")
    pacsv.write_csv(customers.cast(CUSTOMERS_CSV_SCHEMA), paths["customers"],
                    write_options=csv_opts)
    pq.write_table(tx, paths["transactions"])
    pq.write_table(truth.cast(TRUTH_SCHEMA), paths["truth"])
    paths["web_events"].write_bytes(_jsonl(web))
    start = END + dt.timedelta(days=day - 2)
    manifest = {
        "generator": "synthetic_bank.days", "day": day, "seed": seed,
        "n_new_customers": n_new, "n_changed_customers": n_changed,
        "first_new_customer": first_new,
        "n_transactions": tx.num_rows, "n_web_events": web.num_rows,
        "n_anomalies": n_anomalies,
        "window": {"start": start.isoformat(),
                   "end": (start + dt.timedelta(days=1)).isoformat()},
        "files": {k: v for k, v in FILES.items() if k != "manifest"},
        "products": "../products.json", "products_separator": ";",
    }
    paths["manifest"].write_text(json.dumps(manifest, indent=2) + "\n")
    return GeneratedDay(out_dir=out, **{k: paths[k] for k in FILES}, day=day,
                        n_new_customers=n_new, n_changed_customers=n_changed,
                        n_transactions=tx.num_rows, n_web_events=web.num_rows,
                        n_anomalies=n_anomalies, seed=seed)


__all__ = ["CHANGE_RATE", "NEW_RATE", "GeneratedDay", "generate_day"]
