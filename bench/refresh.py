"""``refresh`` after a day's changes vs rebuilding every derived column, in the same run.

The store: ``--customers`` customers (numeric and categorical attributes) ingested from a
Parquet file through ``Kindred.ingest`` (so rows carry change stamps), embedded with
``embed("tabular")`` (``vec_tabular`` and its magnitude-preserving ``vec_tabular_raw``) and
risk-scored (HBOS on ``vec_tabular_raw``). Then the day: ``--changed`` (default 1%) of the
customers arrive in one file, half new customers and half existing ones with a changed
income and region, ingested as a user would (``Kindred.ingest``, not timed).

- **refresh**: ``Kindred.refresh()`` (embeds the stale rows with the stored states, optimises
  nothing here as there is no ANN index, risk-scores the stale rows with the persisted model);
- **rebuild**: the same derived columns recomputed for every row with the same fitted states
  (``embed_columns(..., fit=False, stale_only=False)`` then ``risk.rescore`` of every row):
  what keeping them fresh costs without change tracking, with identical results;
- **rebuild with re-fit**: day 1's commands again (``embed("tabular")``, ``score_risk``):
  the from-scratch rebuild of the issue, which re-fits the embedder and the detector.

Each repeat starts from a copy of the store as it stands after the day's ingest (the copy is
not timed); each side runs in a fresh process (peak RSS), a first untimed run pays the
imports and JIT compilation, then the median of ``--repeats``.

    .venv/bin/python -m bench.refresh [--customers 1000000] [--changed 0.01] [--repeats 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench._harness import report, run_isolated

REGIONS = np.array(["north", "south", "east", "west", "centre", "islands"])
SEGMENTS = np.array(["retail", "premier", "student", "business"])


def customers(ids: np.ndarray, seed: int) -> pa.Table:
    """Deterministic attribute rows for customer numbers ``ids``."""
    rng = np.random.default_rng(seed)
    n = len(ids)
    return pa.table({
        "customer_id": pa.array([f"C{i:09d}" for i in ids]),
        "age": rng.integers(18, 90, n),
        "income": np.round(rng.lognormal(10.3, 0.6, n), 2),
        "balance": np.round(rng.normal(5_000, 3_000, n), 2),
        "tenure_months": rng.integers(0, 360, n),
        "n_products": rng.integers(1, 8, n),
        "region": REGIONS[rng.integers(0, len(REGIONS), n)],
        "segment": SEGMENTS[rng.integers(0, len(SEGMENTS), n)],
    })


def build(path: str, files: str, n: int, changed: float) -> dict[str, int]:
    """The store after day 1's build and the day's ingest (what both sides start from)."""
    from services.facade import Kindred

    day1, day2 = Path(files) / "customers.parquet", Path(files) / "day2.parquet"
    pq.write_table(customers(np.arange(n), 0), day1)
    k_new = max(1, int(n * changed / 2))
    k_changed = max(1, int(n * changed) - k_new)
    rng = np.random.default_rng(1)
    moved = np.sort(rng.choice(n, k_changed, replace=False))
    old = customers(np.arange(n), 0).take(pa.array(moved))
    income = old.column("income").to_numpy() * rng.uniform(0.8, 1.5, k_changed)
    old = old.set_column(old.schema.get_field_index("income"), "income",
                         pa.array(np.round(income, 2)))
    old = old.set_column(old.schema.get_field_index("region"), "region",
                         pa.array(REGIONS[rng.integers(0, len(REGIONS), k_changed)]))
    pq.write_table(pa.concat_tables([old, customers(np.arange(n, n + k_new), 2)]), day2)
    with Kindred(path, create=True) as k:
        k.ingest(str(day1), table="customers", id_column="customer_id")
        k.embed("tabular")
        k.score_risk(detector="hbos")
        r = k.ingest(str(day2), table="customers", id_column="customer_id")
    return {"new": r.written, "changed": r.updated}


def _copy(src: str, work: str) -> str:
    dst = Path(work) / "run"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    return str(dst)


def refresh(src: str, work: str, repeats: int) -> tuple[list[float], int]:
    from services.facade import Kindred

    out, rows = [], 0
    for _ in range(repeats + 1):  # the first run pays imports and JIT: not counted
        path = _copy(src, work)
        with Kindred(path) as k:
            t0 = time.perf_counter()
            r = k.refresh()
            out.append(time.perf_counter() - t0)
            rows = sum(s.rows for s in r.steps)
    return out[1:], rows


def rebuild(src: str, work: str, repeats: int) -> tuple[list[float], int]:
    import vectorstore
    from ingest.embedders import embed_columns, load_embedder
    from services import risk

    out, rows = [], 0
    for _ in range(repeats + 1):  # the first run pays imports and JIT: not counted
        path = _copy(src, work)
        with vectorstore.connect(path) as s:
            t0 = time.perf_counter()
            cols = ("vec_tabular", "vec_tabular_raw")
            res = embed_columns(s, "customers", [(load_embedder(s, "customers", c), c)
                                                 for c in cols], fit=False, stale_only=False)
            run = risk.rescore(s, "customers", stale_only=False)
            out.append(time.perf_counter() - t0)
            rows = sum(r.rows_embedded if r.rows_written is None else r.rows_written
                       for r in res) + run.rows_scored
    return out[1:], rows


def rebuild_refit(src: str, work: str, repeats: int) -> tuple[list[float], int]:
    """The from-scratch rebuild a user without change tracking runs: the same commands as
    day 1 (``embed("tabular")`` re-fits the embedder, ``score_risk`` re-fits the detector)."""
    from services.facade import Kindred

    out, rows = [], 0
    for _ in range(repeats + 1):  # the first run pays imports and JIT: not counted
        path = _copy(src, work)
        with Kindred(path) as k:
            t0 = time.perf_counter()
            k.embed("tabular")
            k.score_risk(detector="hbos")
            out.append(time.perf_counter() - t0)
            rows = 3 * k.store.count("customers")
    return out[1:], rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.refresh")
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--changed", type=float, default=0.01,
                    help="share of customers new or changed on the day (half each)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kindred-bench-refresh-") as tmp:
        src, work = str(Path(tmp) / "store"), str(Path(tmp) / "work")
        Path(work).mkdir()
        t0 = time.perf_counter()
        day, _ = run_isolated(build, src, tmp, a.customers, a.changed)
        print(f"built {a.customers:,} customers + the day ({day}) in "
              f"{time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        (ours, ours_rows), ours_rss = run_isolated(refresh, src, work, a.repeats)
        (base, base_rows), base_rss = run_isolated(rebuild, src, work, a.repeats)
        (full, full_rows), full_rss = run_isolated(rebuild_refit, src, work, a.repeats)
    k, b, f = statistics.median(ours), statistics.median(base), statistics.median(full)
    rows = [{"customers": a.customers, "new": day["new"], "changed": day["changed"],
             "refresh_s": k, "rebuild_s": b, "ratio": k / b,
             "refit_rebuild_s": f, "ratio_to_refit": k / f,
             "refresh_rows_written": ours_rows, "rebuild_rows_written": base_rows,
             "refit_rows_written": full_rows, "refresh_peak_mib": ours_rss,
             "rebuild_peak_mib": base_rss, "refit_peak_mib": full_rss,
             "repeats": a.repeats}]
    report("refresh after a day's changes vs rebuilding the derived columns", rows,
           json_out=a.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
