"""The synthetic bank's model: products, segments, categories, behaviour parameters, the
file and table schemas, and :class:`GeneratedBank` (where a generated bank lies). The
generator (:mod:`synthetic_bank.generator`) draws from these; tests and benchmarks read
them to know what was planted."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ingest.errors import IngestError

BLOCK = 25_000
"""Customers generated per block (fixed: changing it changes the output for a seed)."""

END = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
WINDOW_DAYS = 365
_END_S = int(END.timestamp())

# --------------------------------------------------------------------------- catalogue

PRODUCTS: list[dict[str, str]] = [
    {"product_id": "current_account", "name": "Everyday Current Account", "family": "accounts",
     "description": "A current account for salary, bills and card payments, with a debit card, "
                    "mobile banking and an arranged overdraft."},
    {"product_id": "savings", "name": "Flexible Savings", "family": "savings",
     "description": "An easy-access savings account paying variable interest, for building a "
                    "rainy-day fund with regular transfers."},
    {"product_id": "credit_card", "name": "Rewards Credit Card", "family": "lending",
     "description": "A credit card with cashback on everyday spending, travel insurance and "
                    "up to 56 days interest-free."},
    {"product_id": "mortgage", "name": "Home Mortgage", "family": "lending",
     "description": "A fixed or tracker rate mortgage to buy a home or remortgage, repaid in "
                    "monthly instalments over up to 35 years."},
    {"product_id": "personal_loan", "name": "Personal Loan", "family": "lending",
     "description": "An unsecured loan for a car, home improvements or consolidating debts, "
                    "with fixed monthly repayments."},
    {"product_id": "term_deposit", "name": "Fixed Term Deposit", "family": "savings",
     "description": "A deposit locked for one to five years at a guaranteed fixed interest "
                    "rate, for savers who do not need access to their money."},
    {"product_id": "investment_fund", "name": "Managed Investment Fund", "family": "investments",
     "description": "A diversified fund of shares and bonds managed by professionals, for "
                    "long-term growth and retirement planning."},
    {"product_id": "insurance", "name": "Home and Life Insurance", "family": "insurance",
     "description": "Cover for your home, belongings and family, paid as a monthly premium."},
]
PRODUCT_IDS = [p["product_id"] for p in PRODUCTS]
_P = len(PRODUCTS)
_PIDX = {p: i for i, p in enumerate(PRODUCT_IDS)}

SEGMENTS = ["student", "young_professional", "family", "affluent", "retiree", "self_employed"]
_SEG_W = np.array([0.14, 0.22, 0.25, 0.12, 0.17, 0.10])
_S = len(SEGMENTS)

REGIONS = ["capital", "north", "south", "east", "west"]
_REGION_W = np.array([
    [0.40, 0.15, 0.15, 0.15, 0.15],
    [0.45, 0.15, 0.15, 0.12, 0.13],
    [0.15, 0.22, 0.22, 0.20, 0.21],
    [0.40, 0.12, 0.20, 0.13, 0.15],
    [0.10, 0.22, 0.30, 0.18, 0.20],
    [0.25, 0.20, 0.20, 0.17, 0.18],
])
OCCUPATIONS = ["student", "engineer", "teacher", "nurse", "sales", "clerk", "manager", "doctor",
               "lawyer", "retired", "shop_owner", "contractor", "unemployed"]
_OCC_W = np.array([
    # stu   eng   tea   nur   sal   cle   man   doc   law   ret   shop  con   une
    [0.80, 0.02, 0.00, 0.00, 0.08, 0.04, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.06],
    [0.02, 0.22, 0.10, 0.10, 0.16, 0.14, 0.10, 0.05, 0.05, 0.00, 0.02, 0.02, 0.02],
    [0.00, 0.15, 0.15, 0.12, 0.15, 0.15, 0.12, 0.04, 0.03, 0.00, 0.03, 0.03, 0.03],
    [0.00, 0.12, 0.02, 0.02, 0.04, 0.02, 0.35, 0.15, 0.18, 0.05, 0.03, 0.02, 0.00],
    [0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.95, 0.02, 0.00, 0.03],
    [0.00, 0.03, 0.00, 0.00, 0.05, 0.00, 0.02, 0.02, 0.03, 0.00, 0.45, 0.40, 0.00],
])
MARITAL = ["single", "married", "divorced", "widowed"]
_MAR_W = np.array([
    [0.95, 0.04, 0.01, 0.00],
    [0.60, 0.35, 0.05, 0.00],
    [0.10, 0.78, 0.12, 0.00],
    [0.20, 0.62, 0.15, 0.03],
    [0.10, 0.55, 0.12, 0.23],
    [0.35, 0.50, 0.14, 0.01],
])
#                       age mu, sd, lo, hi   log-income mu, sd   activity  web share
_AGE = np.array([[21, 2.0, 18, 27], [29, 3.5, 22, 40], [40, 6.0, 27, 58], [50, 8.0, 32, 75],
                 [71, 6.0, 60, 95], [45, 9.0, 24, 75]], dtype=float)
_LOGINC = np.array([[9.3, 0.35], [10.6, 0.30], [10.8, 0.30], [11.8, 0.40], [10.1, 0.30],
                    [10.9, 0.60]])
_ACTIVITY = np.array([0.9, 1.2, 1.1, 1.0, 0.7, 1.0])
_ACTIVITY = _ACTIVITY / (_ACTIVITY @ _SEG_W)  # weighted mean 1: events/customer as requested
_WEB_SHARE = np.array([0.40, 0.35, 0.25, 0.25, 0.10, 0.20])

TX_CHANNELS = ["card", "online", "branch", "atm", "app"]
_TX_CH_W = np.array([
    [0.45, 0.20, 0.01, 0.09, 0.25],
    [0.45, 0.25, 0.02, 0.05, 0.23],
    [0.50, 0.20, 0.06, 0.10, 0.14],
    [0.50, 0.28, 0.08, 0.04, 0.10],
    [0.40, 0.08, 0.30, 0.20, 0.02],
    [0.35, 0.35, 0.12, 0.08, 0.10],
])
WEB_CHANNELS = ["web", "app"]
_WEB_APP_SHARE = np.array([0.75, 0.60, 0.45, 0.35, 0.10, 0.30])

# merchant categories; the signature categories are payments tied to a product
CATEGORIES = ["groceries", "restaurants", "travel", "fuel", "utilities", "rent", "electronics",
              "fashion", "entertainment", "healthcare", "education", "childcare", "luxury_goods",
              "cash_withdrawal", "mortgage_payment", "loan_repayment", "insurance_premium",
              "investment_purchase", "savings_transfer", "gambling", "crypto_exchange",
              "money_transfer_abroad"]
_C = len(CATEGORIES)
_CIDX = {c: i for i, c in enumerate(CATEGORIES)}
RISKY_CATEGORIES = ["gambling", "crypto_exchange", "money_transfer_abroad"]
# product -> the category its payments fall in (current account and credit card have none)
_SIGNATURE = {"mortgage": "mortgage_payment", "personal_loan": "loan_repayment",
              "insurance": "insurance_premium", "investment_fund": "investment_purchase",
              "savings": "savings_transfer", "term_deposit": "savings_transfer"}
_SIG_STRENGTH = {"mortgage": 0.10, "personal_loan": 0.08, "insurance": 0.07,
                 "investment_fund": 0.08, "savings": 0.08, "term_deposit": 0.05}
# everyday spending profile per segment (signature and risky categories get weights separately)
_BASE_CAT = {
    #                    gro  res  tra  fue  uti  ren  ele  fas  ent  hea  edu  chi  lux  cash
    "student":          [.25, .20, .04, .01, .03, .12, .07, .08, .12, .02, .10, .00, .00, .06],
    "young_professional": [.20, .18, .10, .04, .07, .10, .06, .09, .08, .02, .02, .00, .02, .02],
    "family":           [.30, .08, .05, .08, .10, .02, .04, .06, .05, .05, .03, .10, .01, .03],
    "affluent":         [.18, .15, .16, .05, .07, .00, .06, .08, .06, .04, .02, .03, .08, .02],
    "retiree":          [.35, .08, .06, .04, .12, .03, .02, .04, .04, .14, .00, .00, .01, .07],
    "self_employed":    [.22, .12, .08, .12, .10, .05, .08, .05, .05, .03, .02, .03, .02, .03],
}
_CAT_MEDIAN = np.array([45, 35, 420, 60, 110, 900, 260, 80, 40, 70, 300, 250, 900, 100,
                        1150, 320, 65, 500, 220, 120, 600, 1500], dtype=float)
_CAT_SIGMA = np.array([0.6, 0.6, 0.8, 0.4, 0.4, 0.3, 0.8, 0.7, 0.7, 0.8, 0.7, 0.4, 0.8, 0.6,
                       0.3, 0.3, 0.4, 0.8, 0.7, 1.0, 1.0, 0.8])

# product affinity logits per segment (columns follow PRODUCT_IDS)
_AFFINITY = np.array([
    # cur   sav   cc    mort  loan  term  inv   ins
    [2.0, -1.0, -1.0, -5.0, -0.8, -4.0, -3.5, -3.0],
    [2.6, 0.0, 1.2, -1.4, 0.0, -2.2, -0.8, -1.5],
    [2.6, -0.2, 0.4, 1.4, 0.2, -1.5, -1.2, 1.2],
    [2.6, 0.6, 1.4, 0.0, -1.5, 0.4, 1.6, 0.3],
    [2.6, 1.0, -0.8, -3.0, -2.2, 1.2, -0.4, 0.4],
    [2.6, -0.3, 0.3, -0.5, 1.2, -1.0, -0.5, -0.5],
])
# attribute effects on the logit: per standardised age and log-income
_B_AGE = np.array([0.0, 0.2, -0.2, 0.1, -0.3, 0.3, 0.2, 0.2])
_B_INC = np.array([0.2, 0.3, 0.4, 0.5, -0.3, 0.4, 0.7, 0.2])
_NOISE_SD = 0.8
_RECENT_ONLINE = 0.12  # share of holdings bought online recently (absent from customers.csv)

PAGES = ["home", "login", "help", "rates", "contact"] + [f"product_{p}" for p in PRODUCT_IDS]
_GENERIC_W = np.array([0.30, 0.45, 0.10, 0.10, 0.05])

ANOMALY_KINDS = ["amount", "night", "category", "velocity"]
ANOMALY_RATE = 0.01
_HOUR_W = np.array([0.3, 0.15, 0.1, 0.1, 0.1, 0.3, 1.0, 2.5, 4.0, 5.0, 5.5, 6.0, 7.0, 6.5,
                    6.0, 6.0, 6.5, 7.0, 7.0, 6.0, 4.5, 3.0, 1.5, 0.7])
_HOUR_W = _HOUR_W / _HOUR_W.sum()

_NOTE_OPEN = ["Adviser notes:", "Branch visit:", "Phone call:", "Online chat:", "Customer says:",
              "Relationship manager:", "Contact note:", "Review meeting:"]
_NOTE_SEG = {
    "student": ["studying at university", "asked about a student overdraft",
                "part-time job in hospitality", "wants a cheap phone contract"],
    "young_professional": ["recently started a new job", "travels often for work",
                           "interested in cashback rewards", "saving for a first home"],
    "family": ["two children at school", "planning a bigger house",
               "asked about family cover", "renovating the kitchen"],
    "affluent": ["owns several properties", "asked about wealth management",
                 "frequent business traveller", "interested in portfolio diversification"],
    "retiree": ["recently retired", "prefers to bank in the branch",
                "asked about fixed rates for savings", "receives a pension monthly"],
    "self_employed": ["runs a small shop", "works as an independent contractor",
                      "irregular monthly income", "needs finance for equipment"],
}
_NOTE_PRODUCT = {
    "current_account": "wants a better current account",
    "savings": "asked how to start saving",
    "credit_card": "asked about a credit card limit",
    "mortgage": "asked about mortgage rates",
    "personal_loan": "enquired about a loan for a car",
    "term_deposit": "wants a guaranteed return on a lump sum",
    "investment_fund": "curious about investing in funds",
    "insurance": "asked about home insurance",
}

CUSTOMERS_CSV_SCHEMA = pa.schema([
    ("customer_id", pa.string()), ("age", pa.int64()), ("income", pa.int64()),
    ("region", pa.string()), ("tenure_years", pa.int64()), ("occupation", pa.string()),
    ("marital_status", pa.string()), ("segment", pa.string()), ("note", pa.string()),
    ("products", pa.string()),
])
TRANSACTIONS_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("customer_id", pa.string()), ("ts", pa.timestamp("us", "UTC")),
    ("kind", pa.string()), ("category", pa.string()), ("amount", pa.float64()),
    ("channel", pa.string()), ("product_id", pa.string()),
])
WEB_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("customer_id", pa.string()), ("ts", pa.timestamp("us", "UTC")),
    ("kind", pa.string()), ("page", pa.string()), ("product_id", pa.string()),
    ("channel", pa.string()),
])
TRUTH_SCHEMA = pa.schema(
    [("customer_id", pa.string()), ("latent_segment", pa.string()), ("is_anomaly", pa.bool_()),
     ("anomaly_kind", pa.string()), ("holdings", pa.list_(pa.string()))]
    + [(f"p_{p}", pa.float32()) for p in PRODUCT_IDS]
)
# the tables load_into_store builds (docs/data-model.md)
CUSTOMERS_TABLE_SCHEMA = pa.schema(
    [f for f in CUSTOMERS_CSV_SCHEMA if f.name != "products"]
    + [pa.field("holdings", pa.list_(pa.string()))]
)
EVENTS_TABLE_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("customer_id", pa.string()), ("ts", pa.timestamp("us", "UTC")),
    ("kind", pa.string()), ("product_id", pa.string()), ("category", pa.string()),
    ("amount", pa.float64()), ("channel", pa.string()),
])
PRODUCTS_TABLE_SCHEMA = pa.schema([
    ("product_id", pa.string()), ("name", pa.string()), ("description", pa.string()),
    ("family", pa.string()),
])

FILES = {"customers": "customers.csv", "transactions": "transactions.parquet",
         "web_events": "web_events.jsonl", "products": "products.json", "truth": "truth.parquet",
         "manifest": "bank.json"}


@dataclass(frozen=True)
class GeneratedBank:
    """Where a generated bank was written, and how many rows each file holds."""

    out_dir: Path
    customers: Path
    transactions: Path
    web_events: Path
    products: Path
    truth: Path
    manifest: Path
    n_customers: int
    n_transactions: int
    n_web_events: int
    n_products: int
    n_anomalies: int
    seed: int
    events_per_customer: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_events(self) -> int:
        return self.n_transactions + self.n_web_events

    @classmethod
    def open(cls, out_dir: str | Path) -> GeneratedBank:
        """Describe a bank already written to ``out_dir`` (reads its ``bank.json``)."""
        out = Path(out_dir)
        manifest = out / FILES["manifest"]
        if not manifest.is_file():
            raise IngestError(f"{out} is not a generated bank: {manifest} is missing")
        m = json.loads(manifest.read_text())
        files: dict[str, Any] = {k: out / FILES[k] for k in FILES if k != "manifest"}
        return cls(out_dir=out, **files,
                   manifest=manifest, n_customers=m["n_customers"],
                   n_transactions=m["n_transactions"], n_web_events=m["n_web_events"],
                   n_products=m["n_products"], n_anomalies=m["n_anomalies"], seed=m["seed"],
                   events_per_customer=m["events_per_customer"])
