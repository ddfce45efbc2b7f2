"""A small latent-factor customer set with planted product propensities, written into a store.

Customers have a few latent factors; their vectors are a noisy linear image of the factors
plus a large shared offset (so centring matters), unit-normalised for cosine columns. Each
product's holding probability is a logistic function of the factors: the ground truth that
matching should recover.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from vectorstore import VectorColumn, VectorStore


@dataclass
class Synth:
    ids: list[str]
    X: np.ndarray            # the stored vectors (float32)
    propensity: np.ndarray   # (n, products) true holding probabilities
    holds: np.ndarray        # (n, products) bool
    products: list[str]
    region: np.ndarray
    age: np.ndarray
    product_vectors: np.ndarray


def make_synth(n: int = 2000, d: int = 16, factors: int = 4, products: int = 4, seed: int = 0,
               unit: bool = True, offset: float = 3.0, rare: int | None = None) -> Synth:
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, factors))
    A = rng.normal(size=(factors, d))
    X = Z @ A + 0.7 * rng.normal(size=(n, d)) + offset * rng.normal(size=d)
    if unit:
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    B = rng.normal(size=(factors, products)) * 1.5
    bias = np.full(products, -2.0)
    prop = 1 / (1 + np.exp(-(Z @ B + bias)))
    holds = rng.random((n, products)) < prop
    names = [f"p{j}" for j in range(products)]
    if rare is not None:  # an extra product held by exactly `rare` customers
        extra = np.zeros((n, 1), dtype=bool)
        extra[rng.choice(n, rare, replace=False)] = True
        holds = np.hstack([holds, extra])
        prop = np.hstack([prop, np.full((n, 1), rare / n)])
        names.append("rare")
    region = np.where(Z[:, 0] > 0, "EU", np.where(Z[:, 1] > 0, "UK", "US"))
    age = (40 + 12 * Z[:, 2]).clip(18, 90).astype(np.int64)
    pv = B.T @ A  # products live in the same space as customers (direction of their factors)
    return Synth([f"c{i:05d}" for i in range(n)], X.astype(np.float32), prop, holds, names,
                 region, age, pv.astype(np.float32))


def write_rows(store: VectorStore, s: Synth, lo: int = 0, hi: int | None = None, *,
               column: str = "vec") -> None:
    """Append customers ``lo:hi`` of ``s`` to the customers table."""
    sl = slice(lo, hi)
    d = s.X.shape[1]
    holdings = [[p for p, h in zip(s.products, row, strict=False) if h] for row in s.holds[sl]]
    store.write("customers", pa.table({
        "customer_id": s.ids[sl], "age": s.age[sl], "region": s.region[sl].tolist(),
        "holdings": pa.array(holdings, pa.list_(pa.string())),
        column: pa.FixedSizeListArray.from_arrays(pa.array(s.X[sl].ravel()), d),
    }))


def load_synth(store: VectorStore, s: Synth, *, column: str = "vec", metric: str = "cosine",
               with_products: bool = False, rows: int | None = None) -> None:
    """Create the customers (and products) tables and write the first ``rows`` customers."""
    d = s.X.shape[1]
    schema = pa.schema([("customer_id", pa.string()), ("age", pa.int64()),
                        ("region", pa.string()), ("holdings", pa.list_(pa.string()))])
    vc = VectorColumn(column, d, metric)
    store.create_table("customers", schema, key="customer_id", vectors=[vc])
    write_rows(store, s, 0, rows, column=column)
    if with_products:
        m = len(s.product_vectors)
        store.create_table("products", pa.schema([("product_id", pa.string()),
                                                  ("name", pa.string())]),
                           key="product_id", vectors=[vc])
        store.write("products", pa.table({
            "product_id": s.products[:m], "name": [f"Product {p}" for p in s.products[:m]],
            column: pa.FixedSizeListArray.from_arrays(pa.array(s.product_vectors.ravel()), d),
        }))
