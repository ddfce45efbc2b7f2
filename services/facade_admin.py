"""The bodies of :class:`services.facade.Kindred`'s store administration: stats, optimize,
index (ANN and scalar indexes) and migrate. The facade keeps the signatures and docstrings.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import vectorstore
from vectorstore import VectorStore

from . import admin
from .admin import Progress
from .models import (
    MigrationResult,
    StepResult,
    StoreStats,
)

if TYPE_CHECKING:
    from .facade import Kindred


def stats(self: Kindred, tables: Sequence[str] | None) -> StoreStats:
    """The body of :meth:`Kindred.stats`."""
    names = list(tables) if tables else self._store.list_tables()
    return StoreStats(
        store=self.location, backend=self._store.scheme,
        versions_supported=self._store.capabilities.versions,
        tables=[admin.table_stats(self._store, n) for n in names],
        artifacts=self._store.list_artifacts(),
    )


def optimize(self: Kindred, tables: Sequence[str] | None, progress: Progress | None) -> StepResult:
    """The body of :meth:`Kindred.optimize`."""
    names = list(tables) if tables else self._store.list_tables()
    for i, name in enumerate(names):
        if progress:
            progress("optimize", i, len(names))
        self._store.optimize(name)
    if progress:
        progress("optimize", len(names), len(names))
    return StepResult(step="optimize", details={"tables": names})


def index(self: Kindred, table: str, *, columns: Sequence[str] | None, min_rows: int,
          index_type: str | None, progress: Progress | None) -> StepResult:
    """The body of :meth:`Kindred.index`."""
    info = self._store.table_info(table)
    n = self._store.count(table)
    wanted = list(columns) if columns else list(info.vectors)
    for c in wanted:
        info.vector(c)
    built, skipped = [], []
    steps = len(wanted) + 1
    scores = [c for c in info.schema.names if c.startswith("propensity_")]
    if info.key and self._store.capabilities.scalar_index:
        self._store.create_scalar_index(table, info.key)
        for c in scores:  # match --method propensity filters on them
            self._store.create_scalar_index(table, c)
    if progress:
        progress(f"index {table}", 1, steps)
    for i, c in enumerate(wanted, start=2):
        if (columns or n >= min_rows) and self._store.capabilities.ann_index:
            self._store.create_vector_index(table, c, index_type=index_type)
            built.append(c)
        else:
            skipped.append(c)
        if progress:
            progress(f"index {table}", i, steps)
    return StepResult(step="index", table=table, details={
        "rows": n, "scalar": info.key, "score_indexes": scores, "vector_indexes": built,
        "exact_only": skipped, "min_rows": min_rows})


def migrate(self: Kindred, target: str | VectorStore, *, tables: Sequence[str] | None,
            replace: bool, progress: Progress | None,
            on_replace: Callable[[dict[str, int]], None] | None) -> MigrationResult:
    """The body of :meth:`Kindred.migrate`."""
    dst = vectorstore.connect(target) if isinstance(target, str) else target
    try:
        return admin.migrate(self._store, dst, tables=tables, replace=replace,
                             progress=progress, on_replace=on_replace)
    finally:
        if isinstance(target, str):
            dst.close()
