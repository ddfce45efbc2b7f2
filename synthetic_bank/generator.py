"""A realistic, deterministic synthetic bank for demos, tests and benchmarks.

``generate(out_dir, n_customers, events_per_customer, seed)`` writes these files:

``customers.csv`` (comma-separated, UTF-8, header)
    ``customer_id`` (``C00000001``...), ``age`` (int), ``income`` (int, yearly), ``region``,
    ``tenure_years`` (int), ``occupation``, ``marital_status``, ``segment`` (the bank's visible
    marketing segment: ``youth``, ``mass``, ``affluent``, ``senior``, ``business``; derived from
    age/income/occupation by rules with noise, *not* the latent segment), ``note`` (free text) and
    ``products``: the holdings the CRM knows about, product ids joined by ``;``
    (``current_account;savings``; empty when none). Products bought online recently are missing
    from this column (the CRM lags); they appear as ``purchase`` web events instead.
``transactions.parquet``
    ``event_id`` (``T000000000001``...), ``customer_id``, ``ts`` (timestamp[us, UTC]), ``kind``
    (always ``transaction``), ``category`` (merchant category), ``amount`` (float64, positive),
    ``channel`` (``card``, ``online``, ``branch``, ``atm``, ``app``), ``product_id`` (set when the
    payment goes to one of the bank's own products, e.g. a mortgage instalment; else null).
``web_events.jsonl`` (one JSON object per line)
    ``event_id`` (``W000000000001``...), ``customer_id``, ``ts`` (ISO-8601 UTC string,
    ``2024-05-01T10:22:03Z``), ``kind`` (``page_view`` or ``purchase``), ``page`` (``home``,
    ``login``, ``help``, ``rates``, ``contact`` or ``product_<product id>``), ``product_id``
    (the product a product page or purchase is about, else null), ``channel`` (``web``/``app``).
``products.json``
    JSON Lines, one ``{"product_id", "name", "description", "family"}`` object per line, for
    8 products (line-delimited so every JSON Lines reader, the ingest pipeline's included,
    streams it).
``truth.parquet``
    What a real bank would not know: ``customer_id``, ``latent_segment``, ``is_anomaly``,
    ``anomaly_kind`` (``amount``, ``night``, ``category``, ``velocity`` or null), ``holdings``
    (list<string>, every product held, including recent online purchases) and ``p_<product>``
    (float32 propensity the holding was drawn from).
``bank.json``
    The manifest: seed, counts, file names, the time window.

How it is built: each customer draws a latent segment (students, young professionals, families,
affluent, retirees, self-employed); the segment sets the attribute distributions, the activity
level, channel and merchant-category preferences and, with age/income effects and per-customer
noise, the propensity of each product. Holdings are Bernoulli draws of those propensities.
Behaviour then depends on both segment and holdings: holders pay instalments/premiums (mostly to
the bank itself, so ``product_id`` is set), credit-card holders pay more by card, people browse
pages of products they hold or are likely to want; non-holders pay similar categories to other
providers. So holdings are predictable from behaviour and attributes, but with noise and overlap.
About 1% of customers are planted anomalies: huge amounts, night-time activity, rare risky
categories (gambling, crypto, transfers abroad), or bursts of many transactions within hours.

Generation is vectorised with numpy, block by block (``BLOCK`` customers), and streamed to disk:
memory is bounded by the block size, not by ``n_customers``. Each block has its own RNG seeded
from ``(seed, block index)``, so the output is byte-identical for a given seed and size.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ingest.errors import IngestError

from .model import (
    _ACTIVITY,
    _AFFINITY,
    _AGE,
    _B_AGE,
    _B_INC,
    _BASE_CAT,
    _C,
    _CAT_MEDIAN,
    _CAT_SIGMA,
    _CIDX,
    _END_S,
    _GENERIC_W,
    _HOUR_W,
    _LOGINC,
    _MAR_W,
    _NOISE_SD,
    _NOTE_OPEN,
    _NOTE_PRODUCT,
    _NOTE_SEG,
    _OCC_W,
    _P,
    _PIDX,
    _RECENT_ONLINE,
    _REGION_W,
    _S,
    _SEG_W,
    _SIG_STRENGTH,
    _SIGNATURE,
    _TX_CH_W,
    _WEB_APP_SHARE,
    _WEB_SHARE,
    ANOMALY_KINDS,
    ANOMALY_RATE,
    BLOCK,
    CATEGORIES,
    CUSTOMERS_CSV_SCHEMA,
    END,
    FILES,
    MARITAL,
    OCCUPATIONS,
    PAGES,
    PRODUCT_IDS,
    PRODUCTS,
    REGIONS,
    RISKY_CATEGORIES,
    SEGMENTS,
    TRANSACTIONS_SCHEMA,
    TRUTH_SCHEMA,
    TX_CHANNELS,
    WEB_CHANNELS,
    WEB_SCHEMA,
    WINDOW_DAYS,
    GeneratedBank,
)

if TYPE_CHECKING:
    pass

# --------------------------------------------------------------------------- helpers

def _ids(prefix: str, start: int, n: int, width: int) -> pa.Array:
    """``prefix`` + zero-padded numbers ``start+1 .. start+n`` as an Arrow string array.

    Built as one fixed-width byte matrix (digits computed with integer arithmetic), which is
    far faster than formatting numbers as strings one kernel at a time.
    """
    nums = np.arange(start + 1, start + n + 1, dtype=np.int64)
    if n and nums[-1] >= 10**width:
        raise IngestError(f"id {prefix}{nums[-1]} does not fit in {width} digits")
    pre = np.frombuffer(prefix.encode("ascii"), dtype=np.uint8)
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    digits = ((nums[:, None] // powers) % 10 + 48).astype(np.uint8)
    rows = np.concatenate([np.broadcast_to(pre, (n, len(pre))), digits], axis=1)
    size = len(pre) + width
    offsets = np.arange(0, (n + 1) * size, size, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(rows.tobytes()))


def _sample_rows(rng: np.random.Generator, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """One categorical draw per entry of ``rows`` from the distribution ``weights[row]``."""
    cum = np.cumsum(weights, axis=1, dtype=np.float64)
    cum /= cum[:, -1:]
    cum = cum.astype(np.float32)
    u = rng.random(len(rows), dtype=np.float32)
    out = (u[:, None] > cum[rows]).sum(axis=1)
    return np.minimum(out, weights.shape[1] - 1)


def _take(labels: Sequence[str], idx: np.ndarray) -> pa.Array:
    """Strings ``labels[idx]`` as an Arrow array (dictionary decode, no Python loop)."""
    return pa.DictionaryArray.from_arrays(pa.array(idx.astype(np.int32)),
                                          pa.array(list(labels))).dictionary_decode()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _holdings_list(h: np.ndarray) -> pa.Array:
    """A list<string> array of the product ids set in the boolean matrix ``h`` (n x P)."""
    _, cols = np.nonzero(h)
    offsets = np.concatenate([[0], np.cumsum(h.sum(axis=1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), _take(PRODUCT_IDS, cols))


# --------------------------------------------------------------------------- one block

@dataclass
class _Block:
    customers: pa.Table
    truth: pa.Table
    transactions: pa.Table
    web: pa.Table


def _customers(rng: np.random.Generator, n: int) -> dict[str, Any]:
    seg = rng.choice(_S, size=n, p=_SEG_W)
    a = _AGE[seg]
    age = np.clip(np.rint(rng.normal(a[:, 0], a[:, 1])), a[:, 2], a[:, 3]).astype(np.int64)
    li = _LOGINC[seg]
    log_income = rng.normal(li[:, 0], li[:, 1])
    income = (np.rint(np.exp(log_income) / 100) * 100).astype(np.int64)
    region = _sample_rows(rng, _REGION_W, seg)
    occupation = _sample_rows(rng, _OCC_W, seg)
    marital = _sample_rows(rng, _MAR_W, seg)
    tenure = np.minimum(rng.geometric(1 / (1 + (age - 17) / 4)), age - 17).astype(np.int64)
    z_age = (age - 45.0) / 15.0
    z_inc = (log_income - 10.6) / 0.6
    logit = (_AFFINITY[seg] + z_age[:, None] * _B_AGE + z_inc[:, None] * _B_INC
             + rng.normal(0, _NOISE_SD, (n, _P)))
    prop = _sigmoid(logit)
    hold = rng.random((n, _P)) < prop
    # visible marketing segment: business rules on the attributes, 10% recorded wrongly
    occ_names = np.array(OCCUPATIONS)[occupation]
    visible = np.select(
        [np.isin(occ_names, ["shop_owner", "contractor"]), age >= 63, age <= 25, income >= 90_000],
        [4, 3, 0, 2], default=1)
    wrong = rng.random(n) < 0.10
    visible = np.where(wrong, rng.integers(0, 5, n), visible)
    is_anom = rng.random(n) < ANOMALY_RATE
    anom_kind = np.where(is_anom, rng.integers(0, len(ANOMALY_KINDS), n), -1)
    return {"seg": seg, "age": age, "income": income, "region": region, "occupation": occupation,
            "marital": marital, "tenure": tenure, "prop": prop, "hold": hold, "visible": visible,
            "is_anom": is_anom, "anom_kind": anom_kind}


def _notes(rng: np.random.Generator, c: dict[str, Any]) -> pa.Array:
    n = len(c["seg"])
    opener = rng.integers(0, len(_NOTE_OPEN), n)
    # segment phrase: own segment 75% of the time, another segment's otherwise
    seg_for_note = np.where(rng.random(n) < 0.75, c["seg"], rng.integers(0, _S, n))
    phrases = [p for s in SEGMENTS for p in _NOTE_SEG[s]]
    phrase = seg_for_note * 4 + rng.integers(0, 4, n)
    # product hint: the most likely product not yet held, for half of the customers
    p_masked = np.where(c["hold"], -1.0, c["prop"])
    best = p_masked.argmax(axis=1)
    hint_on = (rng.random(n) < 0.5) & (p_masked.max(axis=1) > 0.3)
    hints = [""] + [_NOTE_PRODUCT[p] for p in PRODUCT_IDS]
    hint = np.where(hint_on, best + 1, 0)
    first = pc.binary_join_element_wise(_take(_NOTE_OPEN, opener), _take(phrases, phrase), " ")
    sep = _take(["", "; "], (hint > 0).astype(np.int64))
    return pc.binary_join_element_wise(first, sep, _take(hints, hint), ".", "")


@dataclass
class _State:
    """A group of customers as the generator knows them: ids, attributes and latent state
    (``c``: segment, propensities, holdings...), the holdings bought online recently (absent
    from the CRM's ``products``), the notes and the per-customer activity factor."""

    ids: pa.Array
    c: dict[str, Any]
    recent: np.ndarray
    notes: pa.Array
    activity: np.ndarray

    @property
    def crm(self) -> np.ndarray:
        return self.c["hold"] & ~self.recent


def _state(rng: np.random.Generator, n: int, first_customer: int) -> _State:
    """The customers of one block (the first draws of its RNG, in a fixed order)."""
    c = _customers(rng, n)
    recent = c["hold"] & (rng.random(c["hold"].shape) < _RECENT_ONLINE)
    recent[:, _PIDX["current_account"]] = False
    notes = _notes(rng, c)
    activity = rng.lognormal(-0.125, 0.5, n)
    return _State(_ids("C", first_customer, n, 8), c, recent, notes, activity)


def _customers_table(st: _State) -> pa.Table:
    """customers.csv rows of a group of customers."""
    c = st.c
    return pa.table({
        "customer_id": st.ids,
        "age": c["age"], "income": c["income"],
        "region": _take(REGIONS, c["region"]), "tenure_years": c["tenure"],
        "occupation": _take(OCCUPATIONS, c["occupation"]),
        "marital_status": _take(MARITAL, c["marital"]),
        "segment": _take(["youth", "mass", "affluent", "senior", "business"], c["visible"]),
        "note": st.notes,
        "products": pc.binary_join(_holdings_list(st.crm), ";"),
    }, schema=CUSTOMERS_CSV_SCHEMA)


def _truth_table(st: _State) -> pa.Table:
    """truth.parquet rows of a group of customers."""
    c = st.c
    kinds = np.array([None, *ANOMALY_KINDS], dtype=object)
    return pa.table(
        {"customer_id": st.ids, "latent_segment": _take(SEGMENTS, c["seg"]),
         "is_anomaly": c["is_anom"],
         "anomaly_kind": pa.array(kinds[c["anom_kind"] + 1], pa.string()),
         "holdings": _holdings_list(c["hold"])}
        | {f"p_{p}": c["prop"][:, i].astype(np.float32) for i, p in enumerate(PRODUCT_IDS)},
        schema=TRUTH_SCHEMA)


def _block(seed: int, index: int, n: int, first_customer: int, epc: float) -> _Block:
    rng = np.random.default_rng([seed, index])
    st = _state(rng, n, first_customer)
    c = st.c
    seg = c["seg"]
    hold = c["hold"]

    # --- how many events each customer produces
    lam = epc * _ACTIVITY[seg] * st.activity
    n_tx = rng.poisson(lam * (1 - _WEB_SHARE[seg]))
    n_web = rng.poisson(lam * _WEB_SHARE[seg])
    velocity = c["anom_kind"] == ANOMALY_KINDS.index("velocity")
    n_tx = np.where(velocity, n_tx * 6 + 10, n_tx)

    transactions = _transactions(rng, c, hold, n_tx)
    web = _web(rng, c, hold, st.recent, n_web)
    return _Block(_customers_table(st), _truth_table(st), transactions, web)


def _timestamps(rng: np.random.Generator, m: int, night: np.ndarray | None = None, *,
                end_s: int = _END_S, days: int = WINDOW_DAYS) -> np.ndarray:
    """Seconds since the epoch: a uniform day of the ``days`` before ``end_s``, an hour from
    the daily profile."""
    day = rng.integers(0, days, m)
    hour = rng.choice(24, size=m, p=_HOUR_W)
    if night is not None:
        hour = np.where(night, rng.integers(1, 5, m), hour)
    sec = rng.integers(0, 3600, m)
    return end_s - days * 86_400 + day * 86_400 + hour * 3600 + sec


def _transactions(rng: np.random.Generator, c: dict[str, Any], hold: np.ndarray,
                  n_tx: np.ndarray, *, end_s: int = _END_S, days: int = WINDOW_DAYS
                  ) -> dict[str, Any]:
    n = len(n_tx)
    cust = np.repeat(np.arange(n), n_tx)
    m = len(cust)
    seg = c["seg"]
    # per-customer category weights: segment profile + product signatures
    w = np.zeros((n, _C), dtype=np.float64)
    base = np.array([_BASE_CAT[s] for s in SEGMENTS])
    w[:, : base.shape[1]] = base[seg]
    for p, signature in _SIGNATURE.items():
        j, k = _PIDX[p], _CIDX[signature]
        # holders pay into the product; non-holders sometimes pay a similar bill elsewhere
        w[:, k] += _SIG_STRENGTH[p] * np.where(hold[:, j], 1.0, 0.4 * c["prop"][:, j])
    cat = _sample_rows(rng, w, cust)

    kind = c["anom_kind"][cust]
    anom_cat = (kind == ANOMALY_KINDS.index("category")) & (rng.random(m) < 0.4)
    risky = np.array([_CIDX[r] for r in RISKY_CATEGORIES])
    cat = np.where(anom_cat, risky[rng.integers(0, len(risky), m)], cat)
    # a few ordinary customers gamble a little too (so the category alone is no giveaway)
    cat = np.where(rng.random(m) < 0.002, _CIDX["gambling"], cat)

    income_f = np.sqrt(c["income"] / 40_000.0)[cust]
    amount = _CAT_MEDIAN[cat] * income_f * np.exp(rng.normal(0, _CAT_SIGMA[cat]))
    big = (kind == ANOMALY_KINDS.index("amount")) & (rng.random(m) < 0.3)
    amount = np.where(big, amount * rng.uniform(20, 80, m), amount)
    amount = np.where(anom_cat, amount * 3, amount)
    amount = np.round(np.maximum(amount, 0.5), 2)

    # channel: segment preference; credit-card holders pay more by card
    cw = _TX_CH_W[seg].copy()
    cw[:, 0] += 0.35 * hold[:, _PIDX["credit_card"]]
    channel = _sample_rows(rng, cw, cust)

    night = (kind == ANOMALY_KINDS.index("night")) & (rng.random(m) < 0.6)
    ts = _timestamps(rng, m, night, end_s=end_s, days=days)
    velocity = kind == ANOMALY_KINDS.index("velocity")
    window = days * 86_400
    burst_start = end_s - rng.integers(min(3 * 86_400, window // 2), window, n)
    burst = velocity & (rng.random(m) < 0.7)
    ts = np.where(burst, burst_start[cust] + rng.integers(0, 3 * 3600, m), ts)

    # payments into the bank's own product carry its id (80% of holders pay from this bank)
    prod = np.full(m, -1)
    for p, catname in _SIGNATURE.items():
        j = _PIDX[p]
        sel = (cat == _CIDX[catname]) & hold[cust, j] & (prod < 0)
        prod = np.where(sel & (rng.random(m) < 0.8), j, prod)
    return {"cust": cust, "ts": ts, "cat": cat, "amount": amount, "channel": channel,
            "prod": prod}


def _web(rng: np.random.Generator, c: dict[str, Any], hold: np.ndarray, recent: np.ndarray,
         n_web: np.ndarray, *, end_s: int = _END_S, days: int = WINDOW_DAYS) -> dict[str, Any]:
    n = len(n_web)
    seg = c["seg"]
    cust = np.repeat(np.arange(n), n_web)
    # page weights: generic pages + held products (service) + likely-next products (shopping)
    prop = c["prop"]
    w = np.concatenate([np.tile(_GENERIC_W, (n, 1)),
                        0.05 * hold + 0.35 * prop * (1 - hold)], axis=1)
    page = _sample_rows(rng, w, cust)
    ts = _timestamps(rng, len(cust), end_s=end_s, days=days)
    kind = np.zeros(len(cust), dtype=np.int64)  # page_view
    # purchases of recently bought products, each preceded by a view of the product page
    pc_rows, pc_prod = np.nonzero(recent)
    k = len(pc_rows)
    # bought within the window, each after a view of the product page in the window too
    buy_ts = end_s - rng.integers(0, min(90 * 86_400, days * 86_400 - 1800), k)
    cust = np.concatenate([cust, pc_rows, pc_rows])
    page = np.concatenate([page, len(_GENERIC_W) + pc_prod, len(_GENERIC_W) + pc_prod])
    ts = np.concatenate([ts, buy_ts - rng.integers(60, 1800, k), buy_ts])
    kind = np.concatenate([kind, np.zeros(k, np.int64), np.ones(k, np.int64)])
    app = rng.random(len(cust)) < _WEB_APP_SHARE[seg][cust]
    prod = np.where(page >= len(_GENERIC_W), page - len(_GENERIC_W), -1)
    return {"cust": cust, "ts": ts, "page": page, "kind": kind, "channel": app.astype(np.int64),
            "prod": prod}


def _events_table(ev: dict[str, Any], cust_id: pa.Array, prefix: str, start: int,
                  web: bool) -> pa.Table:
    order = np.lexsort((ev["cust"], ev["ts"]))
    m = len(order)
    ts = pa.array((ev["ts"][order] * 1_000_000).astype(np.int64), pa.timestamp("us", "UTC"))
    cust = cust_id.take(pa.array(ev["cust"][order]))
    prod_idx = ev["prod"][order]
    prod = pa.array(np.array([*PRODUCT_IDS, None], dtype=object)[prod_idx], pa.string())
    eid = _ids(prefix, start, m, 12)
    if web:
        return pa.table({
            "event_id": eid, "customer_id": cust, "ts": ts,
            "kind": _take(["page_view", "purchase"], ev["kind"][order]),
            "page": _take(PAGES, ev["page"][order]), "product_id": prod,
            "channel": _take(WEB_CHANNELS, ev["channel"][order]),
        }, schema=WEB_SCHEMA)
    return pa.table({
        "event_id": eid, "customer_id": cust, "ts": ts,
        "kind": pa.array(np.full(m, "transaction", dtype=object), pa.string()),
        "category": _take(CATEGORIES, ev["cat"][order]), "amount": ev["amount"][order],
        "channel": _take(TX_CHANNELS, ev["channel"][order]), "product_id": prod,
    }, schema=TRANSACTIONS_SCHEMA)


def _jsonl(table: pa.Table) -> bytes:
    """JSON Lines bytes of a web-events table (timestamps as ISO-8601 UTC strings).

    Every value is an id or a word from a fixed vocabulary (nothing to escape), so each line is
    assembled with one vectorised string join and the joined buffer is written as is.
    """
    def q(name: str) -> pa.Array:
        return pc.binary_join_element_wise('"', table.column(name), '"', "")

    seconds = pc.cast(table.column("ts"), pa.timestamp("s", "UTC"))
    ts = pc.strftime(seconds, format="%Y-%m-%dT%H:%M:%SZ")
    product = pc.fill_null(q("product_id"), "null")
    lines = pc.binary_join_element_wise(
        '{"event_id":', q("event_id"), ',"customer_id":', q("customer_id"),
        ',"ts":"', ts, '","kind":', q("kind"), ',"page":', q("page"),
        ',"product_id":', product, ',"channel":', q("channel"), "}\n", "",
    ).combine_chunks()
    if len(lines) == 0:
        return b""
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1,
                            offset=lines.offset * 4)
    return lines.buffers()[2].to_pybytes()[offsets[0]:offsets[-1]]


# --------------------------------------------------------------------------- public API

def iter_blocks(n_customers: int, events_per_customer: float = 20, seed: int = 0
                ) -> Iterator[tuple[pa.Table, pa.Table, pa.Table, pa.Table]]:
    """Yield ``(customers, transactions, web_events, truth)`` Arrow tables block by block.

    The same data :func:`generate` writes (``customers`` has the ``products`` string column,
    ``web_events`` keeps ``ts`` as a timestamp), without touching the disk.
    """
    if n_customers < 0:
        raise IngestError(f"n_customers must be >= 0, got {n_customers}")
    if events_per_customer < 0:
        raise IngestError(f"events_per_customer must be >= 0, got {events_per_customer}")
    tx_start = web_start = 0
    for index, first in enumerate(range(0, n_customers, BLOCK)):
        n = min(BLOCK, n_customers - first)
        b = _block(seed, index, n, first, float(events_per_customer))
        cust_id = b.customers.column("customer_id").combine_chunks()
        tx = _events_table(b.transactions, cust_id, "T", tx_start, web=False)
        web = _events_table(b.web, cust_id, "W", web_start, web=True)
        tx_start += tx.num_rows
        web_start += web.num_rows
        yield b.customers, tx, web, b.truth


def generate(out_dir: str | Path, n_customers: int = 20_000, events_per_customer: float = 20,
             seed: int = 0) -> GeneratedBank:
    """Write a synthetic bank to ``out_dir`` (created if needed); see the module docstring."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / v for k, v in FILES.items()}
    counts: dict[str, Any] = {"n_customers": 0, "n_transactions": 0, "n_web_events": 0,
                              "n_anomalies": 0}
    csv_opts = pacsv.WriteOptions(include_header=True, quoting_style="needed")
    with (pacsv.CSVWriter(paths["customers"], CUSTOMERS_CSV_SCHEMA, write_options=csv_opts) as cw,
          pq.ParquetWriter(paths["transactions"], TRANSACTIONS_SCHEMA) as tw,
          pq.ParquetWriter(paths["truth"], TRUTH_SCHEMA) as gw,
          open(paths["web_events"], "wb") as ww):
        for customers, tx, web, truth in iter_blocks(n_customers, events_per_customer, seed):
            cw.write_table(customers)
            tw.write_table(tx)
            gw.write_table(truth)
            ww.write(_jsonl(web))
            counts["n_customers"] += customers.num_rows
            counts["n_transactions"] += tx.num_rows
            counts["n_web_events"] += web.num_rows
            counts["n_anomalies"] += int(pc.sum(truth.column("is_anomaly")).as_py() or 0)
    paths["products"].write_text("".join(json.dumps(p) + "\n" for p in PRODUCTS))
    manifest = {
        "generator": "synthetic_bank", "seed": seed,
        "events_per_customer": events_per_customer, **counts, "n_products": len(PRODUCTS),
        "window": {"start": (END - dt.timedelta(days=WINDOW_DAYS)).isoformat(),
                   "end": END.isoformat()},
        "files": {k: v for k, v in FILES.items() if k != "manifest"},
        "products_separator": ";",
    }
    paths["manifest"].write_text(json.dumps(manifest, indent=2) + "\n")
    files: dict[str, Any] = {k: paths[k] for k in FILES}
    return GeneratedBank(out_dir=out, **files, **counts,
                         n_products=len(PRODUCTS), seed=seed,
                         events_per_customer=events_per_customer)
