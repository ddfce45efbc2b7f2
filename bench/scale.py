"""The heavy steps on the local runner and on Ray, in one run, and a simulation of N machines.

A deterministic customers table (numeric and categorical attributes) is written in
``--fragments`` Lance fragments, once per runner. Then each step (embed tabular, risk
scoring, indexes: the key's scalar index and an IVF index on ``vec_tabular``) runs on the
local runner and on Ray, each step in a fresh process (peak RSS is that driver process's;
Ray's worker processes are not included), Ray started before the clock. The Ray overhead of
a step is its Ray time minus its local time (negative: Ray's parallelism won).

The N-machine figures are a SIMULATION, not a measurement: the local run records how long
each fragment's work took (the part a worker would do) and the rest of the step (the
driver's fit, the commit); a cluster of N machines x C cores is modelled as the driver part
plus the longest-first schedule of the fragment times over N x C slots, plus the measured
Ray overhead per task. Text embedding is left out (an hour of CPU per million notes here).

    .venv/bin/python -m bench.scale [--customers 1000000] [--fragments 16] [--machines 1 4 16]
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench._harness import report, run_isolated
from ingest.runner import LocalRunner

STEPS = ("embed tabular", "index", "risk", "risk top")
REGIONS = np.array(["north", "south", "east", "west", "centre", "coast", "hills", "islands"])
SEGMENTS = np.array(["retail", "premier", "business", "student"])


def _block(start: int, stop: int, seed: int) -> pa.Table:
    rng = np.random.default_rng((seed, start))
    n = stop - start
    ids = np.char.add("c", np.char.zfill(np.arange(start, stop).astype(str), 9))
    return pa.table({
        "customer_id": pa.array(ids.astype(object), pa.string()),
        "age": rng.integers(18, 90, n),
        "income": np.round(rng.lognormal(10.5, 0.6, n), 2),
        "balance": np.round(rng.normal(5_000, 3_000, n), 2),
        "tenure_years": rng.integers(0, 40, n),
        "products_held": rng.poisson(2.0, n),
        "region": pa.array(REGIONS[rng.integers(0, len(REGIONS), n)].astype(object)),
        "segment": pa.array(SEGMENTS[rng.integers(0, len(SEGMENTS), n)].astype(object)),
    })


def build_store(path: str, customers: int, fragments: int, seed: int) -> int:
    """The customers table in ``fragments`` fragments (one write each)."""
    import vectorstore

    edges = np.linspace(0, customers, fragments + 1).astype(int)
    with vectorstore.connect(path) as store:
        first = _block(int(edges[0]), int(edges[1]), seed)
        store.create_table("customers", first.schema, key="customer_id", data=first)
        for lo, hi in itertools.pairwise(edges[1:]):
            store.write("customers", _block(int(lo), int(hi), seed), mode="append")
        return len(store.partitions("customers"))


class TimingRunner(LocalRunner):
    """The local runner, recording each partition's seconds (the work a worker would do)."""

    def __init__(self) -> None:
        self.partition_seconds: list[float] = []

    def map_partitions(self, tx: Any, fn: Callable[..., Any], **kw: Any) -> Iterator[Any]:
        def timed(ctx: Any, part: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(ctx, part)
            finally:
                self.partition_seconds.append(time.perf_counter() - t0)

        yield from super().map_partitions(tx, timed, **kw)

    def map(self, fn: Callable[..., Any], items: Any, **kw: Any) -> Iterator[Any]:
        def timed(ctx: Any, item: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(ctx, item)
            finally:
                self.partition_seconds.append(time.perf_counter() - t0)

        yield from super().map(timed, items, **kw)


def _step(k: Any, step: str) -> None:
    if step == "embed tabular":
        k.embed("tabular")
    elif step == "risk":
        k.score_risk()
    elif step == "index":
        k.index(columns=["vec_tabular"], min_rows=1)
    elif step == "risk top":
        k.risk_top(100)
    else:
        raise ValueError(step)


def run_step(path: str, runner: str, step: str) -> dict[str, Any]:
    """One step on one runner in this (fresh) process: seconds, and per-fragment seconds on
    the local runner."""
    from services.facade import Kindred

    r: Any = TimingRunner() if runner == "local" else "ray"
    if runner == "ray":
        import ray

        ray.init(num_cpus=None, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    with Kindred(path, runner=r, create=True) as k:
        t0 = time.perf_counter()
        _step(k, step)
        seconds = time.perf_counter() - t0
    out: dict[str, Any] = {"seconds": seconds}
    if runner == "local":
        out["fragments"] = list(r.partition_seconds)
    return out


def lpt_makespan(times: Sequence[float], slots: int) -> float:
    """Longest-first schedule of ``times`` over ``slots`` workers: the finishing time."""
    heap = [0.0] * max(1, slots)
    for t in sorted(times, reverse=True):
        heapq.heappush(heap, heapq.heappop(heap) + t)
    return max(heap)


def simulate(local: dict[str, Any], overhead_per_task: float, machines: int, cores: int) -> float:
    """Seconds of a step on ``machines`` x ``cores`` (a model, see the module docstring)."""
    frag = local["fragments"]
    driver = max(0.0, local["seconds"] - sum(frag))
    tasks = len(frag)
    return driver + lpt_makespan(frag, machines * cores) + overhead_per_task * \
        (tasks / max(1, machines * cores))


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.scale")
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--fragments", type=int, default=16)
    ap.add_argument("--machines", type=int, nargs="*", default=[1, 4, 16])
    ap.add_argument("--cores", type=int, default=2, help="cores per simulated machine")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--steps", nargs="*", choices=STEPS, default=list(STEPS),
                    help="steps to run, in order (risk top needs risk)")
    ap.add_argument("--log", default=None,
                    help="also append each step's figures to this file as it finishes (JSON "
                         "lines), so a long run keeps what it measured")
    args = ap.parse_args(argv)
    if args.fragments < 1 or args.customers < args.fragments:
        ap.error("need at least one customer per fragment")
    root = Path(tempfile.mkdtemp(prefix="kindred-bench-scale-"))
    try:
        stores = {}
        for runner in ("local", "ray"):
            stores[runner] = str(root / runner)
            frags = build_store(stores[runner], args.customers, args.fragments, args.seed)
        rows, sims = [], []
        for step in args.steps:
            res = {}
            for runner in ("local", "ray"):
                res[runner], peak = run_isolated(run_step, stores[runner], runner, step)
                res[runner]["peak"] = peak
            lo, ra = res["local"], res["ray"]
            tasks = len(lo["fragments"])
            overhead = ra["seconds"] - lo["seconds"]
            rows.append({"step": step, "fragment tasks": tasks or "none (one build)",
                         "local s": lo["seconds"],
                         "ray s": ra["seconds"], "ray overhead s": overhead,
                         "local/ray": lo["seconds"] / ra["seconds"] if ra["seconds"] else None,
                         "local peak MiB": lo["peak"], "ray driver peak MiB": ra["peak"],
                         "per-fragment s (median)": float(np.median(lo["fragments"]))
                         if lo["fragments"] else 0.0})
            if args.log:
                with open(args.log, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps({**rows[-1], "customers": args.customers,
                                         "fragments": frags,
                                         "fragment seconds": lo["fragments"]}) + "\n")
            if not tasks:  # built by the store in one piece locally: nothing to model
                continue
            # Ray's cost per task, from this run: what Ray took beyond the local work,
            # spread over its tasks (at least 0)
            per_task = max(0.0, ra["seconds"] - (lo["seconds"] - sum(lo["fragments"]))
                           - lpt_makespan(lo["fragments"], 2)) / tasks
            sim = {"step": step, "driver s": max(0.0, lo["seconds"] - sum(lo["fragments"])),
                   "ray cost per task s": per_task}
            for m in args.machines:
                sim[f"{m}x{args.cores} cores s"] = simulate(lo, per_task, m, args.cores)
            sims.append(sim)
        report(f"bench.scale: {args.customers:,} customers in {frags} fragments, local vs "
               "Ray (measured)", rows, json_out=args.json)
        report(f"bench.scale: SIMULATED cluster of N machines x {args.cores} cores from the "
               "per-fragment times above (a model, not a measurement)", sims,
               json_out=args.json)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
