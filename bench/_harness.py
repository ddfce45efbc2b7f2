"""Shared measuring tools for the benchmarks in ``bench/``.

Every benchmark measures Kindred and its baseline in the same run, reports the median of
several repeats and the peak memory of each, and prints the ratio. Peak memory is the child
process's peak RSS: each measured function runs in a fresh ``spawn`` process so neither side
inherits the other's memory.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Measurement:
    name: str
    seconds: list[float]
    peak_rss_mib: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p95(self) -> float:
        return percentile(self.seconds, 95)


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    idx = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[idx]


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(target: Callable[..., Any], args: tuple, queue: Any) -> None:
    try:
        result = target(*args)
        queue.put(("ok", result, peak_rss_mib()))
    except BaseException as exc:  # report to the parent, which raises
        queue.put(("error", repr(exc), peak_rss_mib()))


def run_isolated(target: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """Run ``target(*args)`` in a fresh process; return (its result, its peak RSS in MiB).

    ``target`` must be a module-level function (it is pickled by reference).
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(target, args, queue))
    proc.start()
    status, result, peak = queue.get()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"benchmark child failed: {result}")
    return result, peak


def timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn``."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def time_queries(search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray,
                  repeats: int) -> dict[str, Any]:
    """Per-query seconds and CPU seconds of ``repeats`` passes; the last pass's ids."""
    search(queries[0])  # warm-up: first-call costs (opening files, caches) are not latency
    runs, cpu, ids = [], [], np.empty((len(queries), 0), dtype=np.int64)
    for _ in range(repeats):
        lat, found = [], []
        c0 = _cpu_seconds()
        for q in queries:
            t0 = time.perf_counter()
            found.append(search(q))
            lat.append(time.perf_counter() - t0)
        cpu.append(_cpu_seconds() - c0)
        runs.append(lat)
        ids = np.stack(found)
    return {"runs": runs, "cpu": cpu, "ids": ids}


def report(title: str, rows: list[dict[str, Any]], *, json_out: bool = False) -> None:
    """Print a small Markdown table (or JSON) of result rows."""
    if json_out:
        json.dump({"benchmark": title, "rows": rows}, sys.stdout, indent=2, default=str)
        print()
        return
    print(f"\n### {title}\n")
    if not rows:
        return
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


__all__ = ["Measurement", "asdict", "peak_rss_mib", "percentile", "report", "run_isolated",
           "time_queries", "timed"]
