"""The default fit of a large table: a seeded sample of DEFAULT_FIT_ROWS rows, said in the
run's messages; a smaller table is fitted on every row; fit_sample still overrides."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import vectorstore
from services import risk
from services.risk import features


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setattr(features, "DEFAULT_FIT_ROWS", 300)
    s = vectorstore.connect(str(tmp_path / "store"))
    rng = np.random.default_rng(1)
    n = 1000
    X = rng.normal(size=(n, 4))
    s.create_table("customers", pa.schema([("customer_id", pa.string()),
                                           *[(f"a{i}", pa.float64()) for i in range(4)]]),
                   key="customer_id",
                   data=pa.table({"customer_id": [f"c{i}" for i in range(n)],
                                  **{f"a{i}": X[:, i] for i in range(4)}}))
    return s


def _fit_rows(det) -> int:
    return int(det.decision_scores_.shape[0])


def test_large_table_fits_on_a_seeded_sample(store):
    det, _ = risk.fit(store, "customers", "iforest", attributes=["a0", "a1", "a2", "a3"])
    assert _fit_rows(det) == 300
    assert any("seeded sample of 300 of 1,000 rows" in m for m in det.messages_)
    again, _ = risk.fit(store, "customers", "iforest", attributes=["a0", "a1", "a2", "a3"])
    np.testing.assert_array_equal(det.decision_scores_, again.decision_scores_)


def test_fit_sample_overrides_the_default(store):
    det, _ = risk.fit(store, "customers", "iforest", attributes=["a0", "a1", "a2", "a3"],
                      fit_sample=1.0)
    assert _fit_rows(det) == 1000
    assert not any("seeded sample" in m for m in det.messages_)
    det, _ = risk.fit(store, "customers", "iforest", attributes=["a0", "a1", "a2", "a3"],
                      fit_sample=500)
    assert _fit_rows(det) == 500


def test_small_table_fits_on_every_row(store, monkeypatch):
    monkeypatch.setattr(features, "DEFAULT_FIT_ROWS", 5000)
    det, _ = risk.fit(store, "customers", "iforest", attributes=["a0", "a1", "a2", "a3"])
    assert _fit_rows(det) == 1000
    assert not any("seeded sample" in m for m in det.messages_)
