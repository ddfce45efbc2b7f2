"""The steps ``bench.scale`` measures, each run through the facade on one runner in a fresh
process, and the small answer each returns so the two runners' results can be compared.

Every step runs on the store the steps before it built (:data:`NEEDS` lists what a step
reads); ``embed text`` runs on its own subset store (the first ``--text-customers``
customers). The local runner is a :class:`TimingRunner`, which records how long each
fragment's (or item's) work took, phase by phase, for the N-machine model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from ingest.runner import LocalRunner

from .scale_data import BenchFiles

STEPS = ("ingest customers", "ingest events", "consolidate", "embed tabular",
         "embed behavior", "embed text", "index", "risk", "risk top", "recommend", "refresh")
NEEDS: dict[str, tuple[str, ...]] = {
    "ingest customers": (),
    "ingest events": ("ingest customers",),
    "consolidate": ("ingest events",),
    "embed tabular": ("consolidate",),
    "embed behavior": ("consolidate",),
    "embed text": (),
    "index": ("embed tabular",),
    "risk": ("embed tabular",),
    "risk top": ("risk",),
    "recommend": ("consolidate",),
    "refresh": ("consolidate",),
}
"""The steps a step reads the results of (run first, unmeasured, when not asked for)."""
TEXT_STEP = "embed text"
TOP = 100
SAMPLE = 5
"""Customers whose values the steps compare between the runners (a cheap check)."""


def with_needs(steps: list[str]) -> list[str]:
    """``steps`` and everything they need, in pipeline order."""
    want = set(steps)
    todo = list(steps)
    while todo:
        for need in NEEDS[todo.pop()]:
            if need not in want:
                want.add(need)
                todo.append(need)
    return [s for s in STEPS if s in want]


class TimingRunner(LocalRunner):
    """The local runner, recording each task's seconds (the work a worker would do), with
    the phase it belongs to (one phase per map: a cluster runs a phase's tasks at once)."""

    def __init__(self) -> None:
        self.task_seconds: list[tuple[int, float]] = []
        self._phase = 0

    def _timed(self, fn: Callable[..., Any], *, listed: bool = False) -> Callable[..., Any]:
        self._phase += 1
        phase = self._phase

        def timed(ctx: Any, item: Any) -> Any:
            t0 = time.perf_counter()
            try:
                out = fn(ctx, item)
                return list(out) if listed else out
            finally:
                self.task_seconds.append((phase, time.perf_counter() - t0))

        return timed

    def map_partitions(self, tx: Any, fn: Callable[..., Any], **kw: Any) -> Iterator[Any]:
        yield from super().map_partitions(tx, self._timed(fn), **kw)

    def map(self, fn: Callable[..., Any], items: Any, **kw: Any) -> Iterator[Any]:
        yield from super().map(self._timed(fn), items, **kw)

    def map_reduce(self, map_fn: Callable[..., Any], items: Any, reduce_fn: Callable[..., Any],
                   **kw: Any) -> Iterator[Any]:
        yield from super().map_reduce(self._timed(map_fn, listed=True), items,
                                      self._timed(reduce_fn), **kw)


def _sample(k: Any, columns: list[str] | None = None, *, table: str = "customers"
            ) -> list[dict[str, Any]]:
    """Some columns of the first customers, by key (compared between the runners)."""
    import pyarrow as pa

    from ingest.freshness import ROW_STAMP, STAMP_PREFIX

    ids = pa.array([f"C{i:08d}" for i in range(1, SAMPLE + 1)])
    names = columns or [c for c in k.store.table_info(table).schema.names
                        if c != ROW_STAMP and not c.startswith(STAMP_PREFIX)]
    rows = k.store.lookup(table, ids, columns=names)
    return rows.sort_by("customer_id").to_pylist()


def _ingest(k: Any, paths: list[Any], table: str) -> dict[str, Any]:
    opts: dict[str, Any] = {"table": table}
    if table == "customers":
        opts |= {"id_column": "customer_id", "holdings_column": "products",
                 "holdings_separator": ";", "text_columns": ["note"]}
    t0 = time.perf_counter()
    written = sum(k.ingest(str(p), **opts).written for p in paths)
    return {"seconds": time.perf_counter() - t0, "rows": written,
            "check": {"written": written, "fragments": len(k.store.partitions(table))},
            "table fragments": len(k.store.partitions(table))}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _do(k: Any, step: str, files: BenchFiles) -> dict[str, Any]:
    """Run ``step`` on ``k`` (the timed part) and return its seconds and its check."""
    if step == "ingest customers":
        out = _ingest(k, files.customers, "customers")
        k.ingest(str(files.products), table="products", id_column="product_id")  # 8 rows
        return out
    if step == "ingest events":
        return _ingest(k, files.events, "events")
    if step == "refresh":
        # the day's change lands (not timed), then refresh brings what it touched up to date
        t0 = time.perf_counter()
        k.ingest(str(files.day_customers), table="customers", id_column="customer_id",
                 holdings_column="products", holdings_separator=";", text_columns=["note"])
        k.ingest(str(files.day_events), table="events")
        landed = time.perf_counter() - t0
        r, seconds = _timed(k.refresh)
        steps = [[s.step, s.target, s.action, s.rows] for s in r.steps]
        return {"seconds": seconds, "day ingest s": landed, "check": steps,
                "rows": sum(s[3] or 0 for s in steps if s[2] == "done")}
    if step == "consolidate":
        _, seconds = _timed(k.consolidate)
        return {"seconds": seconds, "check": _sample(k), "rows": k.store.count("customers")}
    if step in ("embed tabular", "embed behavior", "embed text"):
        kind = step.split()[1]
        opts = {"tabular": {"exclude": ["note"]}, "text": {"text_column": "note"}}.get(kind, {})
        r, seconds = _timed(lambda: k.embed(kind, **opts))
        column = f"vec_{kind}"
        return {"seconds": seconds, "rows": r.details.get("rows_embedded"),
                "check": _sample(k, ["customer_id", column])}
    if step == "index":
        _, seconds = _timed(lambda: k.index(columns=["vec_tabular"], min_rows=1))
        return {"seconds": seconds, "check": sorted(i.name for i in
                                                    k.store.list_indexes("customers"))}
    if step == "risk":
        _, seconds = _timed(k.score_risk)
        return {"seconds": seconds,
                "check": _sample(k, ["customer_id", "risk_score", "risk_percentile"])}
    if step == "risk top":
        t, seconds = _timed(lambda: k.risk_top(TOP))
        return {"seconds": seconds, "check": t.column("customer_id").to_pylist()}
    if step == "recommend":
        _, seconds = _timed(lambda: k.recommend(top=3))
        return {"seconds": seconds,
                "check": _sample(k, ["customer_id", "rec_products", "rec_scores"])}
    raise ValueError(step)


def run_step(path: str, runner: str, step: str, files: BenchFiles) -> dict[str, Any]:
    """One step on one runner in this (fresh) process: its seconds, its check, and on the
    local runner each task's (phase, seconds). ``runner="setup"``: the local runner, for a
    step run only because a measured step needs it."""
    from services.facade import Kindred

    r: Any = TimingRunner() if runner in ("local", "setup") else "ray"
    if runner == "ray":
        import ray

        ray.init(num_cpus=None, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    with Kindred(path, runner=r, create=True) as k:
        out = _do(k, step, files)
        out["fragments"] = len(k.store.partitions("customers"))
    out["tasks"] = list(r.task_seconds) if runner != "ray" else []
    return out


def same(a: Any, b: Any, *, tolerance: float = 0.0) -> bool:
    """``a == b``, floats within ``tolerance`` (the text vectors: see docs/scale.md)."""
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tolerance or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[x], b[x], tolerance=tolerance) for x in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y, tolerance=tolerance) for x, y in zip(a, b, strict=True))
    return bool(a == b)
