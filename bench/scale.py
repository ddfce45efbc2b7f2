"""The heavy steps on the local runner and on Ray, in one run, and a simulation of N machines.

The bench writes its inputs (seeded, :mod:`bench.scale_data`): a customers Parquet file and
an events Parquet file (card transactions, a few per customer), each in ``--fragments``
pieces, one ingest each, so every table the later steps read has at least ``--fragments``
Lance fragments. Then, per runner, on a fresh store: ingest customers, ingest events,
consolidate, embed tabular / behavior, index, risk score, risk top, recommend, and refresh
after a day's change (``--changed`` of the customers with a new income, and a day of their
events, ingested first and not timed). Text embedding runs on its own store holding the
first ``--text-customers`` customers (a subset: the rows per second say what the whole table
would take). Steps are in :mod:`bench.scale_steps`.

Each step runs on the local runner and on Ray, each in a fresh process (peak RSS is that
driver process's; Ray's worker processes are not included), Ray started before the clock.
The Ray overhead of a step is its Ray time minus its local time (negative: Ray won). Each
step returns a small answer (the top list, a few customers' values) and the two runners'
answers are compared: a difference is printed as a MISMATCH.

The N-machine figures are a SIMULATION, not a measurement: the local run records how long
each task (a fragment's, or an item's, work: the part a worker would do) took, grouped in
phases (one per map), and the rest of the step (the driver's fit, the commit); a cluster of
N machines x C cores is modelled as the driver part plus, per phase, the longest-first
schedule of its task times over N x C slots, plus the Ray cost per task measured in the run.

    .venv/bin/python -m bench.scale [--customers 1000000] [--fragments 16] [--machines 1 4 16]
"""

from __future__ import annotations

import argparse
import heapq
import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench._harness import report, run_isolated
from bench.scale_data import BenchFiles, write_inputs
from bench.scale_steps import STEPS, TEXT_STEP, run_step, same, with_needs

TEXT_TOLERANCE = 1e-5


def lpt_makespan(times: Sequence[float], slots: int) -> float:
    """Longest-first schedule of ``times`` over ``slots`` workers: the finishing time."""
    heap = [0.0] * max(1, slots)
    for t in sorted(times, reverse=True):
        heapq.heappush(heap, heapq.heappop(heap) + t)
    return max(heap)


def _phases(tasks: Sequence[Sequence[float]]) -> list[list[float]]:
    by: dict[int, list[float]] = {}
    for phase, seconds in tasks:
        by.setdefault(int(phase), []).append(float(seconds))
    return [by[p] for p in sorted(by)]


def simulate(local: dict[str, Any], overhead_per_task: float, machines: int, cores: int) -> float:
    """Seconds of a step on ``machines`` x ``cores`` (a model, see the module docstring)."""
    phases = _phases(local["tasks"])
    work = sum(sum(p) for p in phases)
    driver = max(0.0, local["seconds"] - work)
    slots = max(1, machines * cores)
    return driver + sum(lpt_makespan(p, slots) + overhead_per_task * (len(p) / slots)
                        for p in phases)


def _row(step: str, lo: dict[str, Any], ra: dict[str, Any], agree: str,
         text_rows: int) -> dict[str, Any]:
    work = [s for _, s in lo["tasks"]]
    rows = lo.get("rows")
    return {"step": step, "tasks (phases)": f"{len(work)} ({len(_phases(lo['tasks']))})"
            if work else "none (one build)",
            "rows": rows if rows is not None else "-",
            "local s": lo["seconds"], "ray s": ra["seconds"],
            "ray overhead s": ra["seconds"] - lo["seconds"],
            "local/ray": lo["seconds"] / ra["seconds"] if ra["seconds"] else None,
            "local rows/s": text_rows / lo["seconds"] if step == TEXT_STEP and lo["seconds"]
            else "-",
            "local peak MiB": lo["peak"], "ray driver peak MiB": ra["peak"],
            "per-task s (median)": float(np.median(work)) if work else 0.0,
            "fragments": lo["fragments"], "same answer": agree}


def _sim(step: str, lo: dict[str, Any], ra: dict[str, Any], machines: Sequence[int],
         cores: int) -> dict[str, Any]:
    phases = _phases(lo["tasks"])
    work = sum(sum(p) for p in phases)
    tasks = sum(len(p) for p in phases)
    driver = max(0.0, lo["seconds"] - work)
    # Ray's cost per task, from this run: what Ray took beyond the driver part and the
    # local work scheduled on Ray's 2 CPUs, spread over its tasks (at least 0)
    per_task = max(0.0, ra["seconds"] - driver
                   - sum(lpt_makespan(p, 2) for p in phases)) / tasks
    sim: dict[str, Any] = {"step": step, "driver s": driver, "ray cost per task s": per_task}
    for m in machines:
        sim[f"{m}x{cores} cores s"] = simulate(lo, per_task, m, cores)
    return sim


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.scale")
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--fragments", type=int, default=16)
    ap.add_argument("--text-customers", type=int, default=50_000,
                    help="customers in the subset text embedding runs on (its own store)")
    ap.add_argument("--changed", type=float, default=0.01,
                    help="share of the customers the day before refresh changes")
    ap.add_argument("--machines", type=int, nargs="*", default=[1, 4, 16])
    ap.add_argument("--cores", type=int, default=2, help="cores per simulated machine")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--steps", nargs="*", choices=STEPS, default=list(STEPS),
                    help="steps to measure (run in pipeline order; the steps they need are "
                         "run first on the local runner, not measured)")
    ap.add_argument("--log", default=None,
                    help="also append each step's figures to this file as it finishes (JSON "
                         "lines), so a long run keeps what it measured")
    args = ap.parse_args(argv)
    if args.fragments < 1 or args.customers < args.fragments:
        ap.error("need at least one customer per fragment")
    if args.text_customers < 1 or not 0 < args.changed < 1:
        ap.error("--text-customers must be positive and --changed in (0, 1)")
    root = Path(tempfile.mkdtemp(prefix="kindred-bench-scale-"))
    try:
        files = write_inputs(root / "input", args.customers, args.fragments,
                             text_customers=args.text_customers, changed=args.changed,
                             seed=args.seed)
        print(f"inputs: {files.rows} ({len(files.customers)} customers and "
              f"{len(files.events)} events files, one load each)", flush=True)
        rows, sims, mismatches = _run(args, files, root)
        n = files.rows["customers"]
        report(f"bench.scale: {n:,} customers, local vs Ray (measured; `fragments`: the "
               "customers table's after the step; embed text on a subset of "
               f"{files.rows['text customers']:,} customers)", rows, json_out=args.json)
        report(f"bench.scale: SIMULATED cluster of N machines x {args.cores} cores from the "
               "per-task times above (a model, not a measurement)", sims,
               json_out=args.json)
        text = next((r for r in rows if r["step"] == TEXT_STEP), None)
        if text is not None and not args.json:
            k = n / files.rows["text customers"]
            print(f"\nembed text ran on a SUBSET of {files.rows['text customers']:,} "
                  f"customers: at the rates measured, all {n:,} would take about "
                  f"{text['local s'] * k:,.0f} s locally and {text['ray s'] * k:,.0f} s on "
                  "Ray (linear extrapolation)")
        if mismatches:
            print("\n" + "!" * 72 + "\nMISMATCH between the local and the Ray runner in: "
                  + ", ".join(mismatches) + "\n" + "!" * 72)
            raise SystemExit(1)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(args: argparse.Namespace, files: BenchFiles, root: Path
         ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    stores = {r: str(root / r) for r in ("local", "ray")}
    text_stores = {r: str(root / f"{r}-text") for r in ("local", "ray")}
    text_files = BenchFiles(root=files.root, customers=files.text_customers,
                            products=files.products)
    rows: list[dict[str, Any]] = []
    sims: list[dict[str, Any]] = []
    mismatches: list[str] = []
    for step in with_needs(args.steps):
        where = text_stores if step == TEXT_STEP else stores
        if step == TEXT_STEP:  # its subset store, loaded (not measured) first
            for runner in ("local", "ray"):
                run_isolated(run_step, text_stores[runner], "setup", "ingest customers",
                             text_files)
        if step not in args.steps:  # needed by a measured step: run, not measured
            for runner in ("local", "ray"):
                run_isolated(run_step, where[runner], "setup", step, files)
            print(f"{step}: run first (not measured), needed by a measured step", flush=True)
            continue
        res = {}
        for runner in ("local", "ray"):
            res[runner], peak = run_isolated(run_step, where[runner], runner, step, files)
            res[runner]["peak"] = peak
        lo, ra = res["local"], res["ray"]
        tol = TEXT_TOLERANCE if step == TEXT_STEP else 0.0
        agree = same(lo["check"], ra["check"], tolerance=tol)
        if not agree:
            mismatches.append(step)
            print(f"MISMATCH in {step}:\n  local: {lo['check']!r:.2000}\n"
                  f"  ray:   {ra['check']!r:.2000}", flush=True)
        rows.append(_row(step, lo, ra, "yes" if agree else "NO (MISMATCH)",
                         files.rows["text customers"]))
        print(f"{step}: local {lo['seconds']:.3g} s, ray {ra['seconds']:.3g} s, same "
              f"answer: {'yes' if agree else 'NO'}", flush=True)
        if args.log:
            with open(args.log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({**rows[-1], "customers": files.rows["customers"],
                                     "text customers": files.rows["text customers"],
                                     "task seconds": lo["tasks"]}, default=str) + "\n")
        if lo["tasks"]:  # built by the store in one piece locally: nothing to model
            sims.append(_sim(step, lo, ra, args.machines, args.cores))
    return rows, sims, mismatches


if __name__ == "__main__":
    main()
