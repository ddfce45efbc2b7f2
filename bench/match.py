"""Matching speed: one ``match`` top-100 (exact and ANN, with and without a filter) and bulk
recommendation scoring, each against numpy brute force measured in the same run.

Data: ``n`` customers x ``dim`` unit vectors drawn around 200 cluster centres (so an ANN index
faces realistic structure), a ``region`` column with ``EU`` on ~10% of rows (the filter
``region = 'EU'``), holdings with product ``p0`` on ~5% of rows; ``products`` products in the
same space for bulk scoring. Blocks are generated from ``(seed, block)`` so every process
rebuilds identical data.

Measured (each side in its own process, peak RSS reported):

- match latency: ``services.matching.match`` top-100 with a prebuilt centroid query (the
  query's fit is reported separately), exact and through the ANN index that ``match`` builds
  past its size threshold; p50/p95 over the query set; recall@100 of ANN against exact.
  ANN twice: as a fresh process finds the index (each query direction reads its partitions
  on first touch) and after ``store.prewarm`` (indexes loaded once, as a long-running
  application would at start; the prewarm is part of the reported setup time);
- ``match(..., consumers=False)`` (the prospects list only, one search) and the store search
  alone (``search_p50_ms``): a full ``match`` adds the consumers list (a second search with
  the ``has(holdings, p0)`` filter, run alongside the first) and the index check;
- numpy baseline: ``X @ q`` + ``argpartition`` on the same vectors in memory (+ a boolean mask
  for the filtered case);
- bulk: ``services.matching.recommend`` (scan + blocked matmul + argpartition, no write-back)
  against numpy blocked matmul + argpartition on the in-memory matrix; the write-back of
  ``rec_products``/``rec_scores`` is timed separately.

- propensity serving: ``match --method propensity`` top-100 with the filter ``region = 'EU'``
  (~10%) from precomputed ``propensity_p0`` scores (a scalar index on the score column and on
  ``region``, as ``kindred fit``/``kindred index`` leave them), against numpy ``argpartition``
  over the in-memory scores of the eligible rows. The scores are planted (a seeded function of
  the row) and written once with their threshold ladder, so the measurement is the serving.

Run: ``.venv/bin/python -m bench.match [--quick] [--n N] [--dim D] [--products M] [--json]
[--only match|bulk|propensity]``.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench._harness import percentile, report, run_isolated

BLOCK = 65_536
CENTRES = 200
TOP_K = 100


def block_vectors(seed: int, b: int, rows: int, dim: int) -> np.ndarray:
    centres = np.random.default_rng(seed).normal(size=(CENTRES, dim)).astype(np.float32)
    rng = np.random.default_rng((seed, b))
    X = centres[rng.integers(0, CENTRES, rows)] + 0.6 * rng.normal(size=(rows, dim)).astype(
        np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def block_attrs(seed: int, b: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng((seed, b, 1))
    eu = rng.random(rows) < 0.10
    p0 = rng.random(rows) < 0.05
    return eu, p0


def blocks(n: int, dim: int, seed: int):
    for b, start in enumerate(range(0, n, BLOCK)):
        rows = min(BLOCK, n - start)
        yield b, start, rows, block_vectors(seed, b, rows, dim), *block_attrs(seed, b, rows)


def product_vectors(m: int, dim: int, seed: int) -> np.ndarray:
    P = np.random.default_rng((seed, 99)).normal(size=(m, dim)).astype(np.float32)
    return P / np.linalg.norm(P, axis=1, keepdims=True)


def query_vectors(q: int, dim: int, seed: int) -> np.ndarray:
    """Query directions: centroid-like mixes of a few cluster centres, unit length."""
    centres = np.random.default_rng(seed).normal(size=(CENTRES, dim)).astype(np.float32)
    rng = np.random.default_rng((seed, 77))
    Q = np.stack([centres[rng.choice(CENTRES, 3, replace=False)].mean(0) for _ in range(q)])
    Q += 0.3 * rng.normal(size=Q.shape).astype(np.float32)
    return Q / np.linalg.norm(Q, axis=1, keepdims=True)


# --------------------------------------------------------------------------- setup


def build(path: str, n: int, dim: int, m: int, seed: int) -> dict[str, float]:
    import pyarrow as pa

    import vectorstore

    st = vectorstore.connect(path)
    schema = pa.schema([("customer_id", pa.string()), ("region", pa.string()),
                        ("holdings", pa.list_(pa.string()))])
    vc = vectorstore.VectorColumn("vec", dim, vectorstore.Metric.COSINE)
    st.create_table("customers", schema, key="customer_id", vectors=[vc])
    t0 = time.perf_counter()

    def batches():
        for _b, start, rows, X, eu, p0 in blocks(n, dim, seed):
            ids = pa.array([f"c{i:08d}" for i in range(start, start + rows)])
            hold = pa.array([["p0"] if h else ["p1"] for h in p0], pa.list_(pa.string()))
            yield pa.record_batch([ids, pa.array(np.where(eu, "EU", "US")), hold,
                                   pa.FixedSizeListArray.from_arrays(pa.array(X.ravel()), dim)],
                                  names=["customer_id", "region", "holdings", "vec"])

    st.write("customers", batches())
    t_write = time.perf_counter() - t0
    st.create_scalar_index("customers", "holdings")
    st.create_scalar_index("customers", "region")
    P = product_vectors(m, dim, seed)
    st.create_table("products", pa.schema([("product_id", pa.string())]), key="product_id",
                    vectors=[vc])
    st.write("products", pa.table({"product_id": [f"p{j}" for j in range(m)],
                                   "vec": pa.FixedSizeListArray.from_arrays(pa.array(P.ravel()),
                                                                            dim)}))
    return {"write_s": t_write}


# --------------------------------------------------------------------------- measured sides


def planted_scores(seed: int, b: int, rows: int) -> np.ndarray:
    return np.random.default_rng((seed, b, 2)).beta(1.0, 12.0, rows)


def build_propensity(path: str, n: int, seed: int) -> dict[str, float]:
    """Write planted p0 probabilities and their ladder, as `kindred fit` would."""
    import pyarrow as pa

    import vectorstore
    from services.matching.scores import META_KEY, _ladder, score_column, write_scores

    st = vectorstore.connect(path)
    col = score_column("p0")
    t0 = time.perf_counter()
    batches, all_s = [], []
    for b, start, rows, _X, _eu, _p0 in blocks(n, 8, seed):
        s = planted_scores(seed, b, rows)
        all_s.append(s)
        ids = pa.array([f"c{i:08d}" for i in range(start, start + rows)])
        batches.append(pa.record_batch([ids, pa.array(s)], names=["customer_id", "score"]))
    st.create_scalar_index("customers", "customer_id")
    with st.transaction("customers") as tx:  # write_scores stages into a step's transaction
        write_scores(tx, col, batches)
    written = sum(b.num_rows for b in batches)
    scores = np.concatenate(all_s)
    st.set_metadata("customers", {META_KEY: {"p0": {
        "column": col, "model_id": "planted", "fitted_at": "-", "scored_at": "-",
        "rows_scored": written, "model": {}, "base_rate": float(scores.mean()),
        "state": {"details": {"train_positives": 0}},
        "assessment": {"source": "planted", "roc_auc": 0.5, "roc_auc_sd": 0.0,
                       "interval": [0.5, 0.5], "predictable": False},
        "leakage": [], "thresholds": _ladder(scores)}}})
    st.create_scalar_index("customers", col)
    return {"write_s": time.perf_counter() - t0}


def kindred_propensity(path: str, seed: int, n_queries: int) -> dict[str, Any]:
    import vectorstore
    from services.matching import build_query, match

    st = vectorstore.connect(path)
    q = build_query(st, "p0", "propensity")
    times, ids = [], []
    for _ in range(n_queries):
        t0 = time.perf_counter()
        r = match(st, "p0", top_k=TOP_K, filter="region = 'EU'", query=q, consumers=False)
        times.append(time.perf_counter() - t0)
        ids.append(r.prospects.column("customer_id").to_pylist())
    return {"times": times, "ids": ids}


def numpy_propensity(n: int, seed: int, n_queries: int) -> dict[str, Any]:
    s = np.empty(n)
    ok = np.empty(n, bool)
    ids = np.empty(n, dtype=object)
    for b, start, rows, _X, eu, p0 in blocks(n, 8, seed):
        s[start:start + rows] = planted_scores(seed, b, rows)
        ok[start:start + rows] = eu & ~p0
        ids[start:start + rows] = [f"c{i:08d}" for i in range(start, start + rows)]
    idx_ok = np.flatnonzero(ok)
    times, top_ids = [], []
    for _ in range(n_queries):
        t0 = time.perf_counter()
        sf = s[idx_ok]
        top = np.argpartition(-sf, TOP_K - 1)[:TOP_K]
        top = idx_ok[top[np.argsort(-sf[top])]]
        times.append(time.perf_counter() - t0)
        top_ids.append(ids[top].tolist())
    return {"times": times, "ids": top_ids}


def kindred_match(path: str, dim: int, seed: int, n_queries: int, exact: bool,
                  filtered: bool, threshold: int, prewarm: bool = False) -> dict[str, Any]:
    import vectorstore
    from services.matching import build_query, ensure_index, match

    st = vectorstore.connect(path)
    t0 = time.perf_counter()
    base = build_query(st, "p0", "centroid")
    fit_s = time.perf_counter() - t0
    index_s = 0.0
    if not exact:
        t0 = time.perf_counter()
        ensure_index(st, "customers", "vec", threshold=threshold)
        if prewarm:  # what a long-running application does once at start
            st.prewarm("customers")
        index_s = time.perf_counter() - t0
    flt = "region = 'EU'" if filtered else None
    times, search_times, ids, rows, prospect_times = [], [], [], [], []
    prospects = "not has(holdings, 'p0')" + (f" and {flt}" if flt else "")
    for q in query_vectors(n_queries, dim, seed):
        base.vector = q
        t0 = time.perf_counter()
        r = match(st, "p0", top_k=TOP_K, filter=flt, exact=exact, query=base)
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        match(st, "p0", top_k=TOP_K, filter=flt, exact=exact, query=base, consumers=False)
        prospect_times.append(time.perf_counter() - t0)
        ids.append(r.prospects.column("customer_id").to_pylist())
        rows.append(r.prospects.num_rows)
        t0 = time.perf_counter()
        st.search("customers", q, k=TOP_K, filter=prospects, columns=["customer_id"],
                  exact=exact)
        search_times.append(time.perf_counter() - t0)
    return {"times": times, "search_times": search_times, "ids": ids, "rows": rows,
            "prospect_times": prospect_times, "fit_s": fit_s, "index_s": index_s}


def numpy_match(n: int, dim: int, seed: int, n_queries: int, filtered: bool) -> dict[str, Any]:
    X = np.empty((n, dim), np.float32)
    ok = np.empty(n, bool)
    for _b, start, rows, Xb, eu, p0 in blocks(n, dim, seed):
        X[start:start + rows] = Xb
        ok[start:start + rows] = ~p0 & (eu if filtered else True)
    idx_ok = np.flatnonzero(ok)
    Xf = X[idx_ok] if filtered else X
    times = []
    for q in query_vectors(n_queries, dim, seed):
        t0 = time.perf_counter()
        s = Xf @ q
        if not filtered:
            s[~ok] = -np.inf
        top = np.argpartition(-s, TOP_K - 1)[:TOP_K]
        top = top[np.argsort(-s[top])]
        times.append(time.perf_counter() - t0)
    return {"times": times}


def kindred_bulk(path: str, top_n: int, write: bool) -> dict[str, Any]:
    import vectorstore
    from services.matching import recommend

    st = vectorstore.connect(path)
    t0 = time.perf_counter()
    out = recommend(st, top_n=top_n, write=write)
    return {"seconds": time.perf_counter() - t0, "scoring_s": out.seconds_scoring,
            "writing_s": out.seconds_writing}


def numpy_bulk(n: int, dim: int, m: int, seed: int, top_n: int) -> dict[str, Any]:
    X = np.empty((n, dim), np.float32)
    for _b, start, rows, Xb, _eu, _p0 in blocks(n, dim, seed):
        X[start:start + rows] = Xb
    PT = np.ascontiguousarray(product_vectors(m, dim, seed).T)
    t0 = time.perf_counter()
    for start in range(0, n, BLOCK):
        S = X[start:start + BLOCK] @ PT
        idx = np.argpartition(-S, top_n - 1, axis=1)[:, :top_n]
        top = np.take_along_axis(S, idx, axis=1)
        order = np.argsort(-top, axis=1)
        np.take_along_axis(idx, order, axis=1)
    return {"seconds": time.perf_counter() - t0}


# --------------------------------------------------------------------------- driver


def _recall(ann: list[list[str]], exact: list[list[str]]) -> float:
    return statistics.mean(len(set(a) & set(e)) / max(len(e), 1) for a, e in zip(ann, exact,
                                                                                 strict=True))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.match")
    ap.add_argument("--quick", action="store_true", help="50,000 customers")
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--products", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--top-n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=str, default=None, help="where to build the store (temp)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--only", choices=["match", "bulk", "propensity"], default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.n = 50_000
    threshold = min(100_000, args.n)
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="bench_match_"))
    path = str(tmp / "db")
    try:
        setup, _ = run_isolated(build, path, args.n, args.dim, args.products, args.seed)
        if args.only in (None, "propensity"):
            prop_setup, _ = run_isolated(build_propensity, path, args.n, args.seed)
            kp, kp_rss = run_isolated(kindred_propensity, path, args.seed, args.queries)
            npp, np_rss = run_isolated(numpy_propensity, args.n, args.seed, args.queries)
            same = all(a == b for a, b in zip(kp["ids"], npp["ids"], strict=True))
            prop_rows = [
                {"side": name, "p50_ms": 1000 * percentile(res["times"], 50),
                 "p95_ms": 1000 * percentile(res["times"], 95), "same_top100": same,
                 "peak_rss_mib": rss}
                for name, res, rss in (("kindred match --method propensity", kp, kp_rss),
                                       ("numpy argpartition (in memory)", npp, np_rss))]
            prop_rows.append({"side": "ratio kindred / numpy",
                              "p50_ms": percentile(kp["times"], 50)
                              / max(percentile(npp["times"], 50), 1e-9),
                              "p95_ms": float("nan"), "same_top100": same,
                              "peak_rss_mib": float("nan")})
            report(f"propensity top-{TOP_K}, filter region='EU' (~10%): {args.n:,} customers "
                   f"(scores written in {prop_setup['write_s']:.1f} s)", prop_rows,
                   json_out=args.json)
            if args.only == "propensity":
                return 0
        rows: list[dict[str, Any]] = []
        for filtered in (False, True) if args.only != "bulk" else ():
            ex, ex_rss = run_isolated(kindred_match, path, args.dim, args.seed, args.queries,
                                      True, filtered, threshold)
            an, an_rss = run_isolated(kindred_match, path, args.dim, args.seed, args.queries,
                                      False, filtered, threshold)
            warm, warm_rss = run_isolated(kindred_match, path, args.dim, args.seed,
                                          args.queries, False, filtered, threshold, True)
            npm, np_rss = run_isolated(numpy_match, args.n, args.dim, args.seed, args.queries,
                                       filtered)
            label = "filter region='EU' (~10%)" if filtered else "no filter"
            recall = _recall(an["ids"], ex["ids"])
            for name, res, rss in (("kindred exact", ex, ex_rss), ("kindred ANN", an, an_rss),
                                   ("kindred ANN, prewarmed", warm, warm_rss),
                                   ("numpy brute force", npm, np_rss)):
                st_times = res.get("search_times")
                rows.append({
                    "case": label, "side": name,
                    "p50_ms": 1000 * percentile(res["times"], 50),
                    "p95_ms": 1000 * percentile(res["times"], 95),
                    "prospects_only_p50_ms": 1000 * percentile(res["prospect_times"], 50)
                    if "prospect_times" in res else float("nan"),
                    "search_p50_ms": 1000 * percentile(st_times, 50) if st_times else float("nan"),
                    "min_rows": min(res["rows"]) if "rows" in res else TOP_K,
                    "recall@100": recall if name == "kindred ANN" else
                    _recall(warm["ids"], ex["ids"]) if name == "kindred ANN, prewarmed" else
                    (1.0 if name == "kindred exact" else float("nan")),
                    "peak_rss_mib": rss,
                    "setup_s": res.get("fit_s", float("nan")) if name == "kindred exact" else
                    res.get("index_s", float("nan")),
                })
        if rows:
            report(f"match top-{TOP_K}: {args.n:,} customers x {args.dim}", rows,
                   json_out=args.json)
        if args.only == "match":
            return 0
        kin, num = [], []
        kin_rss = num_rss = 0.0
        for _ in range(args.repeats):
            k, kin_rss = run_isolated(kindred_bulk, path, args.top_n, False)
            nres, num_rss = run_isolated(numpy_bulk, args.n, args.dim, args.products, args.seed,
                                         args.top_n)
            kin.append(k["seconds"])
            num.append(nres["seconds"])
        w, w_rss = run_isolated(kindred_bulk, path, args.top_n, True)
        bulk = [
            {"side": "kindred recommend (scan + score, no write)", "median_s": statistics.median(kin),
             "runs": len(kin), "peak_rss_mib": kin_rss},
            {"side": "numpy blocked matmul + argpartition (in memory)",
             "median_s": statistics.median(num), "runs": len(num), "peak_rss_mib": num_rss},
            {"side": "ratio kindred / numpy", "median_s": statistics.median(kin) /
             statistics.median(num), "runs": len(num), "peak_rss_mib": float("nan")},
            {"side": "kindred recommend with write-back", "median_s": w["seconds"], "runs": 1,
             "peak_rss_mib": w_rss},
        ]
        report(f"bulk top-{args.top_n}: {args.n:,} customers x {args.products:,} products x "
               f"{args.dim}", bulk, json_out=args.json)
        if not args.json:
            print(f"\nstore build (write {args.n:,} rows): {setup['write_s']:.1f} s")
    finally:
        if args.dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
