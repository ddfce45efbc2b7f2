"""Index builds on the runner: ANN and scalar indexes, local or distributed with lance-ray.

The local runner calls the store's own builds. On the Ray runner a LanceDB table's index is
built by ``lance_ray`` (``create_index`` / ``create_scalar_index``): each worker trains or
indexes a segment of fragments and the segments are merged into one index in one commit, with
the same parameters the local build uses (:meth:`LanceStore.vector_index_plan`) and the same
index name (``<column>_idx``), so searches use it unchanged. Index kinds lance-ray cannot
build in pieces (a label-list index on a list column) are built locally, and say so.
"""

from __future__ import annotations

import warnings
from typing import Any

from vectorstore import VectorStore

from .base import Runner, RunnerFallback, runner_for

DISTRIBUTED_SCALAR = ("BTREE", "BITMAP", "ZONEMAP")


def _distributable(store: VectorStore, run: Runner) -> bool:
    return run.distributed and hasattr(store, "dataset_location")


def create_vector_index(store: VectorStore, table: str, column: str | None = None, *,
                        index_type: str | None = None, replace: bool = True,
                        runner: Runner | str | None = None, **params: Any) -> None:
    """Build the ANN index on ``table.column`` on the runner (see the module docstring)."""
    run = runner_for(store, runner, step="index")
    if not _distributable(store, run):
        store.create_vector_index(table, column, index_type=index_type, replace=replace,
                                  **params)
        return
    import lance_ray

    plan = store.vector_index_plan(table, column, index_type=index_type,  # type: ignore[attr-defined]
                                   **params)
    uri, options = store.dataset_location(table)  # type: ignore[attr-defined]
    p = dict(plan["params"])
    parts = int(p.pop("num_partitions", 1))
    # lance-ray samples sample_rate rows per IVF partition and needs that many rows
    rate = int(p.pop("sample_rate", 256))
    rate = max(2, min(rate, plan["rows"] // max(parts, 1)))
    workers = max(1, min(run.parallelism, len(store.partitions(table))))
    lance_ray.create_index(uri, column=plan["column"], index_type=plan["index_type"],
                           name=f"{plan['column']}_idx", replace=replace, metric=plan["metric"],
                           num_partitions=parts, sample_rate=rate, num_workers=workers,
                           storage_options=options, **p)


def create_scalar_index(store: VectorStore, table: str, column: str, *, replace: bool = True,
                        runner: Runner | str | None = None) -> None:
    """Build the scalar index on ``table.column`` on the runner."""
    run = runner_for(store, runner, step="index")
    if not _distributable(store, run):
        store.create_scalar_index(table, column, replace=replace)
        return
    kind = store.scalar_index_type(table, column)  # type: ignore[attr-defined]
    if kind not in DISTRIBUTED_SCALAR:
        warnings.warn(RunnerFallback(f"a {kind} index cannot be built in pieces: the index on "
                                     f"{table}.{column} is built locally"), stacklevel=2)
        store.create_scalar_index(table, column, replace=replace)
        return
    import lance_ray

    uri, options = store.dataset_location(table)  # type: ignore[attr-defined]
    workers = max(1, min(run.parallelism, len(store.partitions(table))))
    lance_ray.create_scalar_index(uri, column=column, index_type=kind, name=f"{column}_idx",
                                  replace=replace, num_workers=workers, storage_options=options)
