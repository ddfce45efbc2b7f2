"""Top-k cosine search through the store, exact and ANN, against numpy brute force.

Data: a Gaussian mixture on the unit sphere (``make_data``), the shape real embeddings have
(clusters of related items), rather than uniform random vectors, on which every ANN index
degrades to a scan. Queries are fresh draws from the same mixture, not rows of the table.

Every mode runs in its own process (peak RSS per mode): numpy brute force (``X @ q`` +
argpartition + sort of the top k, the exact baseline and the recall reference), then for each
backend: loading the table, building the vector index with the backend's defaults, exact
search (``exact=True``) and ANN search with default search parameters. Each query set is run
``--repeats`` times one query at a time; p50/p95 of the per-query latencies and the QPS are
taken per run and the median over runs is reported.

A backend joins the benchmark with one entry in :data:`BACKENDS`: a name and a module-level
function ``(workdir) -> VectorStore`` that opens an empty store.

    .venv/bin/python -m bench.store_search            # 200,000 x 384, 200 queries, 5 runs
    .venv/bin/python -m bench.store_search --quick    # 20,000 x 384, 50 queries
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import vectorstore
from bench._harness import percentile, report, run_isolated, time_queries
from vectorstore import Metric, VectorColumn, VectorStore

TABLE = "bench_vectors"
VECTOR = "vector"
WRITE_BATCH = 20_000


# ---------------------------------------------------------------------------- backends
def lance_store(workdir: Path) -> VectorStore:
    """Embedded LanceDB in a local directory."""
    return vectorstore.connect(str(workdir / "lance"))


def pgvector_store(workdir: Path) -> VectorStore:
    """PostgreSQL + pgvector (HNSW) at ``KINDRED_BENCH_PG_DSN``, one schema per benchmark run."""
    import hashlib

    schema = "bench_" + hashlib.sha256(str(workdir).encode()).hexdigest()[:12]
    return vectorstore.connect(os.environ["KINDRED_BENCH_PG_DSN"], schema=schema)


BACKENDS: list[tuple[str, Callable[[Path], VectorStore]]] = [
    ("lancedb", lance_store),
    # pgvector joins when KINDRED_BENCH_PG_DSN names a server (bench.pg_store can start one)
    *([("pgvector", pgvector_store)] if os.environ.get("KINDRED_BENCH_PG_DSN") else []),
]


def _factory(backend: str) -> Callable[[Path], VectorStore]:
    for name, factory in BACKENDS:
        if name == backend:
            return factory
    raise ValueError(f"unknown backend {backend!r}; known: {', '.join(n for n, _ in BACKENDS)}")


# ---------------------------------------------------------------------------- data
def make_data(n: int, dim: int, *, n_queries: int, n_topics: int = 30, n_centres: int = 300,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Rows and queries drawn from one two-level Gaussian mixture, L2-normalised, float32.

    ``n_topics`` directions uniform on the unit sphere; ``n_centres`` cluster centres, each a
    topic plus Gaussian noise of equal norm (sibling centres have cosine ~0.5, unrelated ones
    ~0); cluster weights from a Dirichlet(2) (uneven sizes); each point is its centre plus
    isotropic Gaussian noise of norm 0.5-1.0 times the centre's, varying by cluster (cosine to
    the centre ~0.7-0.9). Queries are separate draws from the same mixture.
    """
    rng = np.random.default_rng(seed)

    def unit(a: np.ndarray) -> np.ndarray:
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    topics = unit(rng.standard_normal((n_topics, dim), dtype=np.float32))
    noise = unit(rng.standard_normal((n_centres, dim), dtype=np.float32))
    centres = unit(topics[rng.integers(n_topics, size=n_centres)] + noise)
    weights = rng.dirichlet(np.full(n_centres, 2.0))
    spread = rng.uniform(0.5, 1.0, n_centres).astype(np.float32) / np.sqrt(dim)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), dtype=np.float32)
        for start in range(0, m, 50_000):  # chunks keep the float temporaries small
            stop = min(m, start + 50_000)
            label = rng.choice(n_centres, size=stop - start, p=weights)
            x = rng.standard_normal((stop - start, dim), dtype=np.float32)
            x *= spread[label, None]
            x += centres[label]
            out[start:stop] = unit(x)
        return out

    return draw(n), draw(n_queries)


# ---------------------------------------------------------------------------- measuring
def _latency_stats(result: dict[str, Any]) -> dict[str, float]:
    """Median over runs of each run's p50/p95 per-query latency (ms), QPS and CPU per query.

    CPU time (user + system, every thread of the process) is less sensitive than wall time to
    other work on the machine, so it is reported beside the latencies.
    """
    runs, cpu = result["runs"], result["cpu"]
    return {
        "p50_ms": statistics.median(percentile(r, 50) for r in runs) * 1e3,
        "p95_ms": statistics.median(percentile(r, 95) for r in runs) * 1e3,
        "qps": statistics.median(len(r) / sum(r) for r in runs),
        "cpu_ms_per_q": statistics.median(c / len(r) for c, r in zip(cpu, runs, strict=True)) * 1e3,
    }


def numpy_child(data_dir: str, k: int, repeats: int) -> dict[str, Any]:
    """Exact top-k by brute force: scores of every row, argpartition, sort of the k best."""
    x = np.load(Path(data_dir) / "x.npy")
    queries = np.load(Path(data_dir) / "q.npy")

    def search(q: np.ndarray) -> np.ndarray:
        s = x @ q
        top = np.argpartition(-s, k - 1)[:k]
        return top[np.argsort(-s[top])]

    return time_queries(search, queries, repeats)


def numpy_baseline(workdir: Path, rows: int, dim: int, n_queries: int, k: int,
                   repeats: int) -> tuple[dict[str, Any], float]:
    """Write :func:`make_data`'s rows and queries to ``workdir`` (``x.npy``, ``q.npy``, what
    every child reads), then run :func:`numpy_child` on them: (its result, its peak RSS)."""
    x, q = make_data(rows, dim, n_queries=n_queries)
    np.save(workdir / "x.npy", x)
    np.save(workdir / "q.npy", q)
    del x
    return run_isolated(numpy_child, str(workdir), k, repeats)


def load_child(backend: str, data_dir: str, workdir: str) -> dict[str, Any]:
    """Create the table and write the rows (id, vector) in one commit."""
    x = np.load(Path(data_dir) / "x.npy", mmap_mode="r")
    n, dim = x.shape
    vtype = pa.list_(pa.float32(), dim)
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field(VECTOR, vtype)])

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, n, WRITE_BATCH):
            chunk = np.ascontiguousarray(x[start:start + WRITE_BATCH])
            vec = pa.FixedSizeListArray.from_arrays(pa.array(chunk.reshape(-1)), dim)
            ids = pa.array(np.arange(start, start + len(chunk), dtype=np.int64))
            yield pa.RecordBatch.from_arrays([ids, vec], schema=schema)

    with _factory(backend)(Path(workdir)) as store:
        t0 = time.perf_counter()
        store.create_table(TABLE, schema, key="id",
                           vectors=[VectorColumn(VECTOR, dim, Metric.COSINE)])
        store.write(TABLE, pa.RecordBatchReader.from_batches(schema, batches()))
        return {"seconds": time.perf_counter() - t0}


def index_child(backend: str, workdir: str, index_type: str | None,
                index_params: dict[str, Any]) -> dict[str, Any]:
    """Build the vector index (backend defaults unless told otherwise); its wall time."""
    with _factory(backend)(Path(workdir)) as store:
        t0 = time.perf_counter()
        store.create_vector_index(TABLE, VECTOR, index_type=index_type, **index_params)
        return {"seconds": time.perf_counter() - t0}


def query_child(backend: str, data_dir: str, workdir: str, k: int, repeats: int, exact: bool,
                params: dict[str, Any] | None) -> dict[str, Any]:
    """Top-k through ``VectorStore.search``, one query at a time."""
    queries = np.load(Path(data_dir) / "q.npy")
    with _factory(backend)(Path(workdir)) as store:

        def search(q: np.ndarray) -> np.ndarray:
            res = store.search(TABLE, q, k=k, vector_column=VECTOR, columns=["id"],
                               exact=exact, params=params)
            return res.column("id").to_numpy()

        return time_queries(search, queries, repeats)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / k."""
    k = truth.shape[1]
    return float(np.mean([len(np.intersect1d(f, t)) / k for f, t in zip(found, truth, strict=True)]))


def _row(mode: str, stats: dict[str, float], baseline_p50: float, rec: float | None,
         build_s: float | None, peak: float) -> dict[str, Any]:
    return {"mode": mode, "p50_ms": stats["p50_ms"], "p95_ms": stats["p95_ms"],
            "qps": stats["qps"], "cpu_ms_per_q": stats["cpu_ms_per_q"],
            "p50_vs_numpy": stats["p50_ms"] / baseline_p50,
            "recall@k": rec, "build_s": build_s, "peak_rss_mib": peak}


def measure_backend(backend: str, data_dir: Path, workdir: Path, truth: np.ndarray,
                    baseline_p50: float, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Load, index, exact and ANN search for one backend; one result row per step."""
    bdir = workdir / backend
    bdir.mkdir()
    loaded, load_peak = run_isolated(load_child, backend, str(data_dir), str(bdir))
    rows = [{"mode": f"{backend} load", "p50_ms": None, "p95_ms": None, "qps": None,
             "cpu_ms_per_q": None, "p50_vs_numpy": None, "recall@k": None, "build_s": loaded["seconds"],
             "peak_rss_mib": load_peak}]
    exact, exact_peak = run_isolated(query_child, backend, str(data_dir), str(bdir), args.k,
                                     args.repeats, True, None)
    rows.append(_row(f"{backend} exact", _latency_stats(exact), baseline_p50,
                     recall(exact["ids"], truth), None, exact_peak))
    built, build_peak = run_isolated(index_child, backend, str(bdir), args.index_type,
                                     args.index_param)
    ann, ann_peak = run_isolated(query_child, backend, str(data_dir), str(bdir), args.k,
                                 args.repeats, False, args.search_param or None)
    rows.append(_row(f"{backend} ANN", _latency_stats(ann), baseline_p50,
                     recall(ann["ids"], truth), built["seconds"], max(build_peak, ann_peak)))
    return rows


def _kv(text: str) -> tuple[str, int]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=INTEGER, got {text!r}")
    return key, int(value)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.store_search", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="20,000 rows, 50 queries (development)")
    p.add_argument("--rows", type=int, help="rows in the table (default 200,000; quick 20,000)")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, help="queries per run (default 200; quick 50)")
    p.add_argument("--repeats", type=int, default=5, help="runs of the query set (>= 5)")
    p.add_argument("-k", type=int, default=100)
    p.add_argument("--backend", action="append", help="only these backends (repeatable)")
    p.add_argument("--index-type", help="override the backend's default index type")
    p.add_argument("--index-param", type=_kv, action="append", default=[], metavar="NAME=N",
                   help="index build parameter, e.g. num_partitions=64 (repeatable)")
    p.add_argument("--search-param", type=_kv, action="append", default=[], metavar="NAME=N",
                   help="ANN search parameter, e.g. nprobes=20 (repeatable; default: none)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args(argv)
    args.index_param = dict(args.index_param)
    args.search_param = dict(args.search_param)
    rows_n = args.rows or (20_000 if args.quick else 200_000)
    n_queries = args.queries or (50 if args.quick else 200)
    backends = args.backend or [name for name, _ in BACKENDS]
    for b in backends:
        _factory(b)

    with tempfile.TemporaryDirectory(prefix="kindred-bench-") as tmp:
        workdir = Path(tmp)
        base, base_peak = numpy_baseline(workdir, rows_n, args.dim, n_queries, args.k,
                                         args.repeats)
        truth = base["ids"]
        base_stats = _latency_stats(base)
        rows = [_row("numpy brute force", base_stats, base_stats["p50_ms"], 1.0, None, base_peak)]
        for b in backends:
            rows.extend(measure_backend(b, workdir, workdir, truth, base_stats["p50_ms"], args))

    title = (f"Store search: {rows_n:,} x {args.dim} clustered unit vectors, top-{args.k} cosine, "
             f"{n_queries} queries x {args.repeats} runs (median)")
    if args.index_type or args.index_param or args.search_param:
        title += (f"; index_type={args.index_type or 'default'} index_params={args.index_param} "
                  f"search_params={args.search_param}")
    report(title, rows, json_out=args.json)


if __name__ == "__main__":
    main()
