"""Small customer tables made straight with the store API."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest


def customers_table(n: int, start: int = 0, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed + start)
    income = rng.lognormal(10, 1, n)
    income[rng.random(n) < 0.1] = np.nan
    return pa.table({
        "customer_id": [f"c{i:05d}" for i in range(start, start + n)],
        "age": rng.integers(18, 90, n),
        "income": pa.array(income, from_pandas=True),
        "region": rng.choice(["North", "South", "East", "West", "Isles"], n,
                             p=[.4, .3, .2, .095, .005]).tolist(),
        "note": [None if i % 7 == 0 else f"customer {i} likes {['travel', 'food', 'cars'][i % 3]}"
                 for i in range(start, start + n)],
    })


@pytest.fixture
def customers(store):
    t = customers_table(400)
    store.create_table("customers", t.schema, key="customer_id")
    store.write("customers", t)
    return store
