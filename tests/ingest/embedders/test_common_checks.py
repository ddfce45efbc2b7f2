"""The contract every embedder keeps, checked once for all of them (scikit-learn's common-checks
idea): fitted on Arrow rows handed to it, it makes float32 vectors of its dimension, finite,
the same on every fit, the same for a row alone or in a batch, the same after a state round
trip, and it refuses unfitted use and rows that lack its columns with a clear error.

Cases: tabular, text (the packaged offline model, marked slow as the text tests are),
behaviour (holdings and events in memory), combined (two vector columns)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest

from ingest.embedders import (
    Embedder,
    FitData,
    TabularEmbedder,
    TextEmbedder,
    UnknownColumnError,
)
from ingest.embedders.base import from_vector_array
from ingest.embedders.behavior import BehaviorEmbedder
from ingest.embedders.combined import CombinedEmbedder
from ingest.embedders.errors import EmbeddingError
from vectorstore import VectorColumn

from .conftest import customers_table


@dataclass
class Case:
    make: Callable[[], Embedder]
    rows: pa.Table  # what fit reads (the key column is customer_id)
    transform_rows: pa.Table  # what transform reads
    related: dict[str, pa.Table] | None = None
    required: str = ""  # an input column: without it, fit and transform refuse

    def data(self, rows: pa.Table | None = None) -> FitData:
        return FitData.from_arrow(self.rows if rows is None else rows, name="customers",
                                  key="customer_id", related=self.related)

    def fit(self) -> Embedder:
        return self.make().fit(self.data())


def _tabular() -> Case:
    t = customers_table(120)
    return Case(lambda: TabularEmbedder(include=["age", "income", "region"]), t, t,
                required="region")


def _text() -> Case:
    notes = [f"customer {i} likes {['travel', 'food', 'cars'][i % 3]}" for i in range(12)]
    t = pa.table({"customer_id": [f"c{i}" for i in range(12)], "note": notes})
    return Case(lambda: TextEmbedder(column="note"), t, t, required="note")


def _behaviour() -> Case:
    rng = np.random.default_rng(0)
    products = ["savings", "mortgage", "card", "loan", "pension"]
    ids = [f"c{i:03d}" for i in range(60)]
    holdings = [sorted(set(rng.choice(products, int(rng.integers(0, 3))).tolist())) for _ in ids]
    n_ev = 300
    events = pa.table({
        "customer_id": rng.choice(ids, n_ev).tolist(),
        "product_id": rng.choice(products, n_ev).tolist(),
        "category": rng.choice(["travel", "food", "home", "cars"], n_ev).tolist(),
    })
    rows = pa.table({"customer_id": ids, "holdings": holdings})
    items = [[*h, f"category:{c}"] for h, c in
             zip(holdings, rng.choice(["travel", "food", "home"], len(ids)), strict=True)]
    return Case(lambda: BehaviorEmbedder(dim=4), rows, pa.table({"items": items}),
                related={"events": events}, required="holdings")


def _combined() -> Case:
    rng = np.random.default_rng(1)
    n = 50

    def vec(d: int) -> pa.FixedSizeListArray:
        return pa.FixedSizeListArray.from_arrays(
            pa.array(rng.normal(size=n * d).astype(np.float32)), d)

    t = pa.table({"customer_id": [f"c{i}" for i in range(n)], "v_a": vec(3), "v_b": vec(2)})
    return Case(lambda: CombinedEmbedder({"v_a": 1.0, "v_b": 2.0}), t, t, required="v_a")


CASES = {"tabular": _tabular, "text": _text, "behaviour": _behaviour, "combined": _combined}
PARAMS = [pytest.param(k, marks=pytest.mark.slow) if k == "text" else k for k in CASES]


@pytest.fixture(scope="module", params=PARAMS)
def case(request) -> tuple[str, Case, Embedder]:
    c = CASES[request.param]()
    return request.param, c, c.fit()


def _vectors(emb: Embedder, rows: pa.Table) -> np.ndarray:
    out = emb.transform(rows.combine_chunks().to_batches()[0])
    assert isinstance(out, pa.FixedSizeListArray)
    assert out.type.value_type == pa.float32()
    return from_vector_array(out, emb.dim_)


def test_fit_returns_self_and_transform_has_shape_dtype_and_finite_values(case) -> None:
    _, c, emb = case
    assert emb.is_fitted
    assert isinstance(emb.dim_, int)
    assert emb.dim_ > 0
    v = _vectors(emb, c.transform_rows)
    assert v.shape == (c.transform_rows.num_rows, emb.dim_)
    assert np.isfinite(v).all()
    assert np.abs(v).sum() > 0


def test_fit_is_deterministic(case) -> None:
    _, c, emb = case
    again = c.fit()
    assert again.dim_ == emb.dim_
    np.testing.assert_array_equal(_vectors(again, c.transform_rows),
                                  _vectors(emb, c.transform_rows))


def test_one_row_alone_equals_the_same_row_in_a_batch(case) -> None:
    name, c, emb = case
    batch = _vectors(emb, c.transform_rows)
    # the text model pads a batch to its longest sentence: float rounding only
    atol = 1e-5 if name == "text" else 0.0
    for i in (0, c.transform_rows.num_rows // 2, c.transform_rows.num_rows - 1):
        alone = _vectors(emb, c.transform_rows.slice(i, 1))
        np.testing.assert_allclose(alone[0], batch[i], rtol=0, atol=atol)


def test_state_round_trip_gives_the_same_vectors(case) -> None:
    _, c, emb = case
    back = Embedder.from_bytes(emb.to_bytes())
    assert type(back) is type(emb)
    assert back.get_params() == emb.get_params()
    np.testing.assert_array_equal(_vectors(back, c.transform_rows),
                                  _vectors(emb, c.transform_rows))


def test_unfitted_use_is_refused(case) -> None:
    _, c, _ = case
    fresh = c.make()
    assert not fresh.is_fitted
    with pytest.raises(EmbeddingError, match="not fitted"):
        fresh.transform(c.transform_rows.to_batches()[0])
    with pytest.raises(EmbeddingError, match="not fitted"):
        fresh.to_bytes()


def test_rows_without_an_input_column_are_refused_by_name(case) -> None:
    _, c, emb = case
    with pytest.raises(UnknownColumnError, match=repr(c.required)):
        c.make().fit(c.data(c.rows.drop_columns([c.required])))
    shown = c.transform_rows
    missing = "items" if "items" in shown.schema.names else c.required
    with pytest.raises(UnknownColumnError, match=repr(missing)):
        emb.transform(shown.drop_columns([missing]).to_batches()[0])


def test_fit_on_arrow_rows_equals_fit_through_the_store(case, store) -> None:
    """The runner's path (a store scan) and Arrow rows handed over learn the same state."""
    name, c, emb = case
    if name == "behaviour":
        store.create_table("events", c.related["events"].schema)
        store.write("events", c.related["events"])
    vectors = [VectorColumn(v.name, v.dim, v.metric) for v in c.data().info.vectors.values()]
    store.create_table("customers", c.rows.schema, key="customer_id", vectors=vectors)
    store.write("customers", c.rows)
    via_store = c.make().fit(store, "customers")
    np.testing.assert_allclose(_vectors(via_store, c.transform_rows),
                               _vectors(emb, c.transform_rows), rtol=0, atol=1e-6)
