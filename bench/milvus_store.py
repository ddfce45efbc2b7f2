"""Milvus Lite's indexes against exact search: recall@10 and recall@100 through ``store.search``.

Same data and queries as the other store benchmarks (:func:`bench.store_search.make_data`,
clustered unit vectors, queries fresh from the same mixture), top-k cosine. For each index the
Milvus backend builds with its defaults (HNSW: M=16, efConstruction=200, ef=max(64, k);
IVF_FLAT: nlist=sqrt(n), nprobe=max(16, nlist/4)) and for LanceDB's default index, all in one
run: the fraction of numpy's exact top-k (``X @ q``) the index returns, unfiltered and with a
filter keeping 1/10 of the rows (the exact answer then being the top-k among those rows).
``exact=True`` on the Milvus store is checked to give numpy's answer. Recall does not depend on
machine load; the build/query seconds printed beside it do, and are indicative only.

    .venv/bin/python -m bench.milvus_store            # 20,000 x 384, 100 queries
    .venv/bin/python -m bench.milvus_store --quick    # 5,000 x 128, 30 queries
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import vectorstore
from bench._harness import report
from bench.store_search import make_data
from vectorstore import VectorColumn, col

TABLE = "bench_vectors"


def _table(x: np.ndarray) -> pa.Table:
    n, dim = x.shape
    return pa.table({"id": np.arange(n, dtype=np.int64), "grp": np.arange(n) % 10,
                     "v": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), dim)})


def _truth(x: np.ndarray, q: np.ndarray, k: int, mask: np.ndarray | None) -> list[set[int]]:
    s = q @ x.T
    if mask is not None:
        s[:, ~mask] = -np.inf
    return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in s]


def _recall(store: Any, q: np.ndarray, k: int, truth: list[set[int]], flt: Any) -> tuple[float, float]:
    hits, t0 = 0, time.perf_counter()
    for one, want in zip(q, truth, strict=True):
        got = store.search(TABLE, one, k=k, columns=["id"], filter=flt).column("id").to_pylist()
        hits += len(want & set(got))
    return hits / (k * len(q)), (time.perf_counter() - t0) / len(q) * 1000


def run(n: int, dim: int, n_queries: int) -> list[dict[str, Any]]:
    x, q = make_data(n, dim, n_queries=n_queries)
    mask = np.arange(n) % 10 == 3
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="kindred-bench-milvus-") as tmp:
        stores = {"milvus-lite": f"milvus://{Path(tmp) / 'm.db'}", "lancedb": str(Path(tmp) / "l")}
        for backend, uri in stores.items():
            with vectorstore.connect(uri) as store:
                store.create_table(TABLE, pa.schema([("id", pa.int64()), ("grp", pa.int64())]),
                                   key="id", vectors=[VectorColumn("v", dim)])
                t0 = time.perf_counter()
                store.write(TABLE, _table(x))
                write_s = time.perf_counter() - t0
                kinds = ["HNSW", "IVF_FLAT"] if backend == "milvus-lite" else [None]
                if backend == "milvus-lite":  # exact search must be numpy's answer
                    got = store.search(TABLE, q[0], k=10, exact=True, columns=["id"])
                    assert set(got.column("id").to_pylist()) == _truth(x, q[:1], 10, None)[0]
                for kind in kinds:
                    t0 = time.perf_counter()
                    store.create_vector_index(TABLE, "v", index_type=kind)
                    build_s = time.perf_counter() - t0
                    row: dict[str, Any] = {"store": backend, "index": kind or "default",
                                           "rows": n, "dim": dim, "write s": round(write_s, 1),
                                           "build s": round(build_s, 1)}
                    for k in (10, 100):
                        for label, flt, m in (("", None, None), (" filtered", col("grp") == 3, mask)):
                            r, ms = _recall(store, q, k, _truth(x, q, k, m), flt)
                            row[f"recall@{k}{label}"] = round(r, 3)
                            if k == 10 and not label:
                                row["ms/query"] = round(ms, 1)
                    rows.append(row)
                    print(row, flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    n, dim, nq = (5_000, 128, 30) if args.quick else (20_000, 384, 100)
    report("Milvus Lite index recall vs exact search", run(n, dim, nq), json_out=args.json)


if __name__ == "__main__":
    main()
