"""Planted anomalies of the synthetic bank rank high under the default risk detector.

The bank plants about 1% anomalous customers (huge amounts, night-time activity, risky
categories, bursts of transactions). Per-customer features are aggregated from their
transactions here, standardised into a ``vec_tabular`` vector column, and scored through the
store. With ~30 anomalies among 3,000 customers the AUC of a random ranking is 0.5 with a
standard deviation of about 0.053, so the asserted floor of 0.8 is more than 5 standard
deviations above chance; a detector that ignored the vectors could not pass.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from services import risk
from synthetic_bank import RISKY_CATEGORIES, iter_blocks
from vectorstore import VectorColumn, connect

N = 3_000


def _customer_features(tx: pa.Table, ids: pa.Array) -> np.ndarray:
    cust = pc.index_in(tx.column("customer_id"), value_set=ids).to_numpy()
    amount = tx.column("amount").to_numpy()
    hour = pc.hour(tx.column("ts")).to_numpy()
    day = pc.cast(pc.cast(tx.column("ts"), pa.int64()), pa.int64()).to_numpy() // (3 * 3600 * 10**6)
    risky = pc.is_in(tx.column("category"), value_set=pa.array(RISKY_CATEGORIES)).to_numpy(
        zero_copy_only=False)
    n = len(ids)
    count = np.bincount(cust, minlength=n).astype(float)
    safe = np.maximum(count, 1)
    max_amount = np.zeros(n)
    np.maximum.at(max_amount, cust, amount)
    mean_log = np.bincount(cust, weights=np.log1p(amount), minlength=n) / safe
    night = np.bincount(cust, weights=(hour < 5).astype(float), minlength=n) / safe
    risky_share = np.bincount(cust, weights=risky.astype(float), minlength=n) / safe
    # busiest 3-hour window per customer
    pair = cust.astype(np.int64) * (day.max() + 1) + (day - day.min())
    _, inv, per = np.unique(pair, return_inverse=True, return_counts=True)
    burst = np.zeros(n)
    np.maximum.at(burst, cust, per[inv])
    return np.column_stack([np.log1p(count), np.log1p(max_amount), mean_log, night,
                            risky_share, np.log1p(burst)])


@pytest.mark.slow
def test_planted_anomalies_rank_high(tmp_path) -> None:
    customers, tx, _web, truth = next(iter_blocks(N, events_per_customer=20, seed=5))
    ids = customers.column("customer_id").combine_chunks()
    F = _customer_features(tx, ids)
    X = ((F - F.mean(axis=0)) / F.std(axis=0)).astype(np.float32)
    y = pc.index_in(ids, value_set=truth.column("customer_id").combine_chunks())
    y = truth.column("is_anomaly").take(y).to_numpy(zero_copy_only=False).astype(bool)
    assert 10 <= y.sum() <= 80
    store = connect(str(tmp_path / "bank"))
    store.create_table("customers", pa.schema([("customer_id", pa.string()),
                                               ("is_anomaly", pa.bool_())]),
                       key="customer_id", vectors=[VectorColumn("vec_tabular", X.shape[1], "l2")])
    store.write("customers", pa.table({
        "customer_id": ids, "is_anomaly": y,
        "vec_tabular": pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), X.shape[1])}))
    rows = risk.evaluate(store, "customers", "is_anomaly", ["default", "ecod"],
                         column="vec_tabular")
    by = {r.detector: r for r in rows}
    assert by["default"].roc_auc > 0.8, by
    assert by["ecod"].roc_auc > 0.8, by
    # written back, the planted customers fill the top of the ranking far beyond chance (1%)
    risk.score_table(store, "customers", column="vec_tabular")
    top = risk.top(store, "customers", int(y.sum()), columns=["customer_id", "is_anomaly"])
    assert pc.mean(pc.cast(top.column("is_anomaly"), pa.float64())).as_py() > 0.3
