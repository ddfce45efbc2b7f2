"""Reference data of the conformance suite: every supported column type, vectors with known
neighbours, and small helpers the suite's modules share.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import vectorstore as vs
from vectorstore import VectorColumn

TYPES_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("i8", pa.int8()), ("i16", pa.int16()), ("i32", pa.int32()), ("i64", pa.int64()),
    ("f32", pa.float32()), ("f64", pa.float64()), ("b", pa.bool_()), ("s", pa.string()),
    ("ts", pa.timestamp("us")), ("tstz", pa.timestamp("us", tz="UTC")), ("d", pa.date32()),
    ("tags", pa.list_(pa.string())),
])


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def vec_array(x: np.ndarray) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])


def make_vectors(store: vs.VectorStore, n: int, d: int, metric: str = "cosine", seed: int = 0,
                 name: str = "items") -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    if metric == "cosine":
        x = unit(x)
    ids = [f"r{i:06d}" for i in range(n)]
    store.create_table(name, pa.schema([("id", pa.string()), ("grp", pa.int64())]), key="id",
                       vectors=[VectorColumn("v", d, vs.Metric(metric))])
    store.write(name, pa.table({"id": ids, "grp": np.arange(n) % 7, "v": vec_array(x)}))
    return x, ids


def types_table() -> pa.Table:
    utc = dt.UTC
    return pa.table({
        "id": ["a", "b", "c", "d"],
        "i8": pa.array([-128, 127, None, 0], pa.int8()),
        "i16": pa.array([-32768, 32767, None, 1], pa.int16()),
        "i32": pa.array([-(2**31), 2**31 - 1, None, 2], pa.int32()),
        "i64": pa.array([-(2**63), 2**63 - 1, None, 3], pa.int64()),
        "f32": pa.array([1.5, -0.25, None, 3.0e38], pa.float32()),
        "f64": pa.array([1e-300, -2.5, None, 1e300], pa.float64()),
        "b": [True, False, None, True],
        "s": ["plain", "", None, "ünïcödé ✓ 客户 'quoted' \"dq\" \\ back"],
        "ts": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5, 678901), None,
                        dt.datetime(1970, 1, 1), dt.datetime(2038, 12, 31, 23, 59, 59)],
                       pa.timestamp("us")),
        "tstz": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=utc), None,
                          dt.datetime(2000, 6, 1, 12, tzinfo=utc), dt.datetime(1999, 1, 1, tzinfo=utc)],
                         pa.timestamp("us", tz="UTC")),
        "d": pa.array([dt.date(2024, 2, 29), None, dt.date(1900, 1, 1), dt.date(2100, 12, 31)],
                      pa.date32()),
        "tags": [["x", "y"], [], None, ["ü", "", "x"]],
        "v": vec_array(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0]], np.float32)),
    })


def sorted_by_id(t: pa.Table) -> pa.Table:
    return t.take(pc.sort_indices(t, [("id", "ascending")]))
