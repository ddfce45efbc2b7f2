"""Behaviour embedding at scale: customers x products interactions -> SVD -> vectors in the store.

Full size: 1,000,000 customers x 2,000 products, 30,000,000 interactions (``--quick``: 50,000 x
500, 1,500,000). Reports seconds and peak RSS of the whole ``embed_behavior`` run (matrix build
from streamed events, BM25, randomized SVD, customer and product write-back) in a fresh
process. Baseline in the same run: the SVD alone (sklearn ``TruncatedSVD``) on the same matrix
already in memory, i.e. the floor any implementation pays.

    .venv/bin/python -m bench.embed_behavior [--quick] [--dim 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from bench._harness import report, run_isolated


def _flat(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


def _make(path: str, n_cust: int, n_prod: int, n_inter: int, seed: int = 0) -> None:
    import vectorstore

    s = vectorstore.connect(path)
    rng = np.random.default_rng(seed)
    cid = _flat(pa.array([f"C{i:08d}" for i in range(n_cust)]))
    s.create_table("customers", pa.schema([("customer_id", pa.string())]), key="customer_id")
    s.write("customers", pa.table({"customer_id": cid}))
    pid = [f"P{i:05d}" for i in range(n_prod)]
    s.create_table("products", pa.schema([("product_id", pa.string())]), key="product_id")
    s.write("products", pa.table({"product_id": pid}))
    schema = pa.schema([("event_id", pa.string()), ("customer_id", pa.string()),
                        ("product_id", pa.string())])
    s.create_table("events", schema, key=None)
    pop = 1.0 / np.arange(1, n_prod + 1) ** 0.8
    pop /= pop.sum()
    step = 2_000_000

    def batches():
        for start in range(0, n_inter, step):
            m = min(step, n_inter - start)
            c = rng.integers(0, n_cust, m)
            p = rng.choice(n_prod, m, p=pop)
            yield pa.record_batch({
                "event_id": pc.binary_join_element_wise(
                    "E", pc.cast(pa.array(np.arange(start, start + m)), pa.string()), ""),
                "customer_id": _flat(cid.take(pa.array(c))),
                "product_id": _flat(pa.array(pid).take(pa.array(p)))})
    s.write("events", batches())


def kindred(path: str, dim: int) -> dict:
    import vectorstore
    from ingest.embedders.behavior import BehaviorEmbedder, embed_behavior

    s = vectorstore.connect(path)
    t0 = time.perf_counter()
    r = embed_behavior(s, BehaviorEmbedder(dim=dim, holdings_column=None,
                                           event_items=["product_id"]))
    return {"seconds": time.perf_counter() - t0, "nnz": r.extra["nnz"]}


def baseline(path: str, dim: int) -> dict:
    from sklearn.decomposition import TruncatedSVD

    import vectorstore
    from ingest.embedders.behavior import BehaviorEmbedder

    s = vectorstore.connect(path)
    emb = BehaviorEmbedder(dim=dim, holdings_column=None, event_items=["product_id"])
    raw, _, _ = emb.build_matrix(s, "customers")
    x = emb._weight(raw, fit=True)
    t0 = time.perf_counter()
    TruncatedSVD(dim, n_iter=5, random_state=0).fit_transform(x)
    return {"seconds": time.perf_counter() - t0, "nnz": raw.nnz}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1)
    a = ap.parse_args()
    n_cust, n_prod, n_inter = (50_000, 500, 1_500_000) if a.quick else \
        (1_000_000, 2_000, 30_000_000)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        _make(d, n_cust, n_prod, n_inter)
        print(f"data: {n_cust} customers, {n_prod} products, {n_inter} interactions "
              f"({time.perf_counter() - t0:.0f}s to write)")
        rows = []
        for name, fn in (("kindred embed_behavior (end to end)", kindred),
                         ("baseline: TruncatedSVD on the in-memory matrix", baseline)):
            secs, peak = [], 0.0
            for _ in range(a.repeats):
                res, p = run_isolated(fn, d, a.dim)
                secs.append(res["seconds"])
                peak = max(peak, p)
            rows.append({"step": name, "median_s": float(np.median(secs)),
                         "peak_rss_mib": peak, "nnz": res["nnz"]})
        report(f"embed_behavior {n_cust}x{n_prod}, {n_inter} interactions, dim {a.dim}", rows)


if __name__ == "__main__":
    main()
