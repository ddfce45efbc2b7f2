"""Risk scoring at scale: fit on a sample + score every stored vector, Kindred vs raw PyOD.

For IForest, HBOS and ECOD: Kindred fits on a seeded sample read from the store and scores
the whole table in streamed batches, writing nothing back (``risk.fit`` +
``risk.score_stream``); the baseline fits the same PyOD detector on the same sample of an
in-memory numpy array and calls ``decision_function`` on the array in batches of the same
size. PyOD's ECOD recomputes its CDFs over training + batch on every call (several float64
copies of both), so the baseline's ECOD is that call per batch, and Kindred's is its
inductive evaluation against the training sample (see services/risk/detector.py): the ECOD
ratio compares two ways of computing ECOD scores, not the same computation. Each side runs
in a fresh process (peak RSS); median of ``--repeats`` runs.

    .venv/bin/python -m bench.risk [--rows 1000000] [--dim 384] [--sample 100000] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench._harness import report, run_isolated

BATCH = 65_536


def _vectors(rows: int, dim: int, seed: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Deterministic float32 rows [start, stop) of a clustered data set, generated per block."""
    stop = rows if stop is None else stop
    out = []
    for b in range(start // BATCH, (stop + BATCH - 1) // BATCH):
        rng = np.random.default_rng((seed, b))
        lo, hi = b * BATCH, min((b + 1) * BATCH, rows)
        block = rng.normal(size=(hi - lo, dim)).astype(np.float32)
        block[:, : dim // 4] += rng.integers(0, 4, size=(hi - lo, 1)).astype(np.float32)
        out.append(block[max(start - lo, 0): stop - lo])
    return np.concatenate(out)


def build(path: str, rows: int, dim: int, seed: int) -> None:
    import vectorstore
    from vectorstore import Metric, VectorColumn

    with vectorstore.connect(path) as s:
        s.create_table("customers", pa.schema([("customer_id", pa.string())]),
                       key="customer_id", vectors=[VectorColumn("vec", dim, Metric.L2)])

        def batches():
            for lo in range(0, rows, BATCH):
                X = _vectors(rows, dim, seed, lo, min(lo + BATCH, rows))
                ids = pa.array([f"c{i:08d}" for i in range(lo, lo + X.shape[0])])
                yield pa.record_batch([ids, pa.FixedSizeListArray.from_arrays(
                    pa.array(X.ravel()), dim)], names=["customer_id", "vec"])
        s.write("customers", batches())


def kindred(path: str, kind: str, sample: int, repeats: int) -> list[float]:
    import vectorstore
    from services import risk

    out = []
    with vectorstore.connect(path) as s:
        for _ in range(repeats):
            t0 = time.perf_counter()
            det, src = risk.fit(s, "customers", kind, column="vec", fit_sample=sample, seed=0,
                                batch_size=BATCH)
            risk.score_stream(s, "customers", det, src, batch_size=BATCH)
            out.append(time.perf_counter() - t0)
    return out


def baseline(rows: int, dim: int, seed: int, kind: str, sample: int, repeats: int) -> list[float]:
    from pyod.models.ecod import ECOD
    from pyod.models.hbos import HBOS
    from pyod.models.iforest import IForest

    X = _vectors(rows, dim, seed)  # the in-memory array
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        idx = np.sort(np.random.default_rng(0).choice(rows, min(sample, rows), replace=False))
        est = {"iforest": lambda: IForest(random_state=0, contamination=0.05),
               "hbos": lambda: HBOS(contamination=0.05),
               "ecod": lambda: ECOD(contamination=0.05)}[kind]()
        est.fit(X[idx])
        scores = np.concatenate([est.decision_function(X[i:i + BATCH])
                                 for i in range(0, rows, BATCH)])
        out.append(time.perf_counter() - t0)
        del scores
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.risk")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--sample", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--detectors", nargs="*", default=["iforest", "hbos", "ecod"])
    ap.add_argument("--quick", action="store_true", help="20,000 x 64, sample 5,000, 3 repeats")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.rows, a.dim, a.sample, a.repeats = 20_000, 64, 5_000, 3
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "db")
        t0 = time.perf_counter()
        run_isolated(build, path, a.rows, a.dim, 0)
        print(f"stored {a.rows:,} x {a.dim} vectors in {time.perf_counter() - t0:.1f}s",
              file=sys.stderr)
        for kind in a.detectors:
            # one-off costs (imports, numba compilation in HBOS) land in the first repeat only
            ours, ours_rss = run_isolated(kindred, path, kind, a.sample, a.repeats)
            base, base_rss = run_isolated(baseline, a.rows, a.dim, 0, kind, a.sample, a.repeats)
            k, b = statistics.median(ours), statistics.median(base)
            rows.append({"detector": kind, "rows": a.rows, "dim": a.dim, "fit_sample": a.sample,
                         "kindred_s": k, "pyod_numpy_s": b, "ratio": k / b,
                         "kindred_peak_mib": ours_rss, "pyod_peak_mib": base_rss,
                         "repeats": a.repeats})
            print(f"done {kind}: {rows[-1]}", file=sys.stderr, flush=True)
    report("risk: fit on a sample + score all, Kindred (store) vs PyOD (numpy)", rows,
           json_out=a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
