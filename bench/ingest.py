"""Ingest throughput and peak memory: a customers CSV into LanceDB.

Kindred: ``ingest.ingest(store, csv, mapping)`` (types inferred from the first block, later
blocks read typed by pyarrow's multithreaded CSV reader, row-level checks, duplicate-id check,
one atomic write through the store interface). Baseline, same run: ``pyarrow.csv.open_csv``
streamed straight into ``lance.write_dataset`` (no checks). Each run is a fresh process (peak
RSS); baseline and Kindred runs alternate, so load from other work on the machine hits both
alike; the median of ``--repeats`` runs and the median of the paired ratios are reported, for
wall-clock time (throughput) and for CPU seconds of the process, all threads (the work done,
which other jobs on a shared machine disturb less than wall-clock time).

    .venv/bin/python -m bench.ingest            # 1,000,000 rows, plus a 5,000,000-row memory run
    .venv/bin/python -m bench.ingest --quick    # 100,000 rows
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

from bench._harness import report, run_isolated

REGIONS = np.array(["north", "south", "east", "west", "centre"])
NOTES = np.array(["likes travel and saving", "new to town, asked about a loan",
                  "long-time customer", "prefers the app", ""])


def make_csv(path: Path, rows: int, seed: int = 0) -> None:
    """A customers CSV of ``rows`` rows, written in slices (never all in memory)."""
    rng = np.random.default_rng(seed)
    step = 250_000
    with pcsv.CSVWriter(str(path), pa.schema([
            ("customer_id", pa.string()), ("age", pa.int64()), ("income", pa.float64()),
            ("region", pa.string()), ("tenure", pa.int64()), ("segment", pa.string()),
            ("note", pa.string())])) as w:
        for lo in range(0, rows, step):
            n = min(step, rows - lo)
            ids = np.char.add("C", np.arange(lo, lo + n).astype(str))
            w.write_table(pa.table({
                "customer_id": ids, "age": rng.integers(18, 90, n),
                "income": np.round(rng.gamma(2.0, 20_000.0, n), 2),
                "region": REGIONS[rng.integers(0, len(REGIONS), n)],
                "tenure": rng.integers(0, 40, n),
                "segment": np.array(["a", "b", "c"])[rng.integers(0, 3, n)],
                "note": NOTES[rng.integers(0, len(NOTES), n)]}))


def _cpu() -> float:
    """CPU seconds (user + system) of this process so far, all threads."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_kindred(csv: str, out: str) -> tuple[float, float]:
    import lancedb  # noqa: F401  (import time is not ingest time; the baseline imports lance too)

    import vectorstore
    import vectorstore.lance.backend  # (imported by connect otherwise)
    from ingest.mapping import Mapping
    from ingest.pipeline import ingest

    shutil.rmtree(out, ignore_errors=True)
    mapping = Mapping.from_options("customers", text_columns=["note"])
    c0, t0 = _cpu(), time.perf_counter()
    with vectorstore.connect(out) as store:
        s = ingest(store, csv, mapping)
    elapsed, cpu = time.perf_counter() - t0, _cpu() - c0
    assert s.written > 0
    return elapsed, cpu


def run_baseline(csv: str, out: str) -> tuple[float, float]:
    import lance

    shutil.rmtree(out, ignore_errors=True)
    c0, t0 = _cpu(), time.perf_counter()
    reader = pcsv.open_csv(csv)
    lance.write_dataset(reader, out, mode="create")
    return time.perf_counter() - t0, _cpu() - c0


def measure(fn, csv: Path, out: Path, repeats: int) -> tuple[float, float, float]:
    """Median seconds, median CPU seconds and the largest peak RSS (MiB) over ``repeats``
    isolated runs."""
    times, cpus, peaks = [], [], []
    for _ in range(repeats):
        (sec, cpu), peak = run_isolated(fn, str(csv), str(out))
        times.append(sec)
        cpus.append(cpu)
        peaks.append(peak)
    return statistics.median(times), statistics.median(cpus), max(peaks)


def measure_pairs(csv: Path, tmp: Path, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Alternating baseline / Kindred runs: each side's seconds, CPU seconds, peak RSS."""
    out: dict[str, dict[str, list[float]]] = {
        side: {"s": [], "cpu": [], "mib": []} for side in ("base", "kindred")}
    for _ in range(repeats):
        for side, fn, dest in (("base", run_baseline, tmp / "base.lance"),
                               ("kindred", run_kindred, tmp / "kindred")):
            (sec, cpu), peak = run_isolated(fn, str(csv), str(dest))
            out[side]["s"].append(sec)
            out[side]["cpu"].append(cpu)
            out[side]["mib"].append(peak)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--memory-rows", type=int, default=5_000_000,
                    help="rows of the peak-memory run (0 to skip)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.memory_rows, args.repeats = 100_000, 0, 3
    tmp = Path(tempfile.mkdtemp(prefix="kindred-bench-ingest-"))
    try:
        csv = tmp / "customers.csv"
        make_csv(csv, args.rows)
        rows_out = []
        pairs = measure_pairs(csv, tmp, args.repeats)
        base, kin = pairs["base"], pairs["kindred"]

        def paired(key: str) -> float:
            return statistics.median(b / k for b, k in zip(base[key], kin[key], strict=True))

        for name, side, ratio, cpu_ratio in (
                ("baseline open_csv -> lance.write_dataset", base, 1.0, 1.0),
                ("kindred ingest", kin, paired("s"), paired("cpu"))):
            sec = statistics.median(side["s"])
            rows_out.append({"rows": args.rows, "side": name, "median_s": sec,
                             "rows_per_s": args.rows / sec,
                             "median_cpu_s": statistics.median(side["cpu"]),
                             "peak_rss_mib": max(side["mib"]),
                             "throughput_vs_baseline": ratio,
                             "cpu_efficiency_vs_baseline": cpu_ratio})
        if args.memory_rows:
            big = tmp / "big.csv"
            make_csv(big, args.memory_rows, seed=1)
            csv.unlink()
            sec, cpu, mem = measure(run_kindred, big, tmp / "kindred_big", 1)
            rows_out.append({"rows": args.memory_rows, "side": "kindred ingest (memory run)",
                             "median_s": sec, "rows_per_s": args.memory_rows / sec,
                             "median_cpu_s": cpu, "peak_rss_mib": mem,
                             "throughput_vs_baseline": float("nan"),
                             "cpu_efficiency_vs_baseline": float("nan")})
        report(f"ingest: customers CSV into LanceDB ({args.repeats} runs, median)", rows_out,
               json_out=args.json)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
