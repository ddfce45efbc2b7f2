"""Benchmark: the synthetic bank generator (time, rows/s, peak memory).

Kindred: ``synthetic_bank.generate`` (segments, propensities, behaviour, anomalies, all five
files). Baseline, in the same run: the floor of writing the same volume with the same writers,
i.e. uniform random columns of the same schemas and row counts streamed block by block to
customers.csv / transactions.parquet / web_events.jsonl, with no modelling at all. The ratio is
what the realism costs on top of the I/O.

    .venv/bin/python -m bench.generate            # 1,000,000 customers x 20 events
    .venv/bin/python -m bench.generate --quick    # 50,000 customers, for development
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from bench._harness import report, run_isolated


def run_kindred(out: str, n: int, epc: float) -> dict[str, float]:
    from synthetic_bank import generate

    t0 = time.perf_counter()
    bank = generate(out, n_customers=n, events_per_customer=epc, seed=0)
    secs = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in Path(out).iterdir())
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": secs, "events": bank.n_events, "bytes": size}


def run_baseline(out: str, n: int, epc: float) -> dict[str, float]:
    from synthetic_bank import generator as s

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    o = Path(out)
    o.mkdir(parents=True, exist_ok=True)
    words = pa.array(["alpha", "beta", "gamma", "delta"])
    events = 0

    def strings(m: int) -> pa.Array:
        return words.take(pa.array(rng.integers(0, len(words), m)))

    def ts(m: int) -> pa.Array:
        return pa.array(rng.integers(1_700_000_000, 1_735_000_000, m) * 1_000_000,
                        pa.timestamp("us", "UTC"))

    with (pacsv.CSVWriter(o / "customers.csv", s.CUSTOMERS_CSV_SCHEMA) as cw,
          pq.ParquetWriter(o / "transactions.parquet", s.TRANSACTIONS_SCHEMA) as tw,
          open(o / "web_events.jsonl", "wb") as ww):
        tx_start = web_start = 0
        for first in range(0, n, s.BLOCK):
            b = min(s.BLOCK, n - first)
            ids = s._ids("C", first, b, 8)
            cw.write_table(pa.table({
                "customer_id": ids, "age": rng.integers(18, 90, b),
                "income": rng.integers(5_000, 200_000, b), "region": strings(b),
                "tenure_years": rng.integers(0, 40, b), "occupation": strings(b),
                "marital_status": strings(b), "segment": strings(b), "note": strings(b),
                "products": strings(b)}, schema=s.CUSTOMERS_CSV_SCHEMA))
            m_tx, m_web = int(b * epc * 0.7), int(b * epc * 0.3)
            tw.write_table(pa.table({
                "event_id": s._ids("T", tx_start, m_tx, 12),
                "customer_id": ids.take(pa.array(rng.integers(0, b, m_tx))), "ts": ts(m_tx),
                "kind": strings(m_tx), "category": strings(m_tx),
                "amount": rng.uniform(1, 500, m_tx), "channel": strings(m_tx),
                "product_id": strings(m_tx)}, schema=s.TRANSACTIONS_SCHEMA))
            ww.write(s._jsonl(pa.table({
                "event_id": s._ids("W", web_start, m_web, 12),
                "customer_id": ids.take(pa.array(rng.integers(0, b, m_web))), "ts": ts(m_web),
                "kind": strings(m_web), "page": strings(m_web), "product_id": strings(m_web),
                "channel": strings(m_web)}, schema=s.WEB_SCHEMA)))
            tx_start += m_tx
            web_start += m_web
            events += m_tx + m_web
    secs = time.perf_counter() - t0
    size = sum(p.stat().st_size for p in o.iterdir())
    shutil.rmtree(out, ignore_errors=True)
    return {"seconds": secs, "events": events, "bytes": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="50,000 customers")
    ap.add_argument("--customers", type=int, default=None)
    ap.add_argument("--events-per-customer", type=float, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    n = args.customers or (50_000 if args.quick else 1_000_000)
    epc = args.events_per_customer
    tmp = tempfile.mkdtemp(prefix="kindred-bench-gen-")
    rows = []
    results: dict[str, list[tuple[dict[str, float], float]]] = {"kindred": [], "baseline": []}
    for i in range(args.repeats):
        for name, fn in (("kindred", run_kindred), ("baseline", run_baseline)):
            results[name].append(run_isolated(fn, f"{tmp}/{name}{i}", n, epc))
    base_median = float(np.median([r["seconds"] for r, _ in results["baseline"]]))
    for name, runs in results.items():
        secs = [r["seconds"] for r, _ in runs]
        med = float(np.median(secs))
        events = runs[0][0]["events"]
        rows.append({
            "variant": name, "customers": n, "events": events, "runs": len(secs),
            "median_s": med, "min_s": min(secs), "events_per_s": events / med,
            "MiB_written": runs[0][0]["bytes"] / 2**20,
            "peak_rss_MiB": max(p for _, p in runs),
            "time_vs_baseline": med / base_median,
        })
    shutil.rmtree(tmp, ignore_errors=True)
    report(f"synthetic bank generation, {n:,} customers x {epc:g} events", rows,
           json_out=args.json)


if __name__ == "__main__":
    main()
