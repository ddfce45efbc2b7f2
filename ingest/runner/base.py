"""Runners: where the heavy, per-partition and per-batch work of a step runs.

A step is written once, as *work functions* of (context, item) -> result that read only what
the context gives them (the broadcast ``shared`` state, the partition's rows) and stage their
output through the context. A runner decides where they run:

- :class:`LocalRunner` (the default) runs them one after the other in this process, inside
  the step's transaction: exactly the single-process behaviour, on every backend.
- :class:`~ingest.runner.ray.RayRunner` sends them to Ray workers, one task per partition (a
  Lance fragment) or per batch; the workers reopen the store from its handle, stage their
  partition's files and return the staged metadata, and the driver attaches it to the one
  transaction, so a step still makes exactly one commit.

Results come back in item order on both runners, so a step that merges them (column means,
per-partition top-N lists, counts) gives the same answer whichever runner ran it.
"""

from __future__ import annotations

import os
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
import pyarrow as pa

from vectorstore import Partition, Transaction, VectorStore
from vectorstore.errors import KindredWarning

from ..errors import RunnerError

RUNNER_ENV = "KINDRED_RUNNER"
"""Environment variable naming the default runner (``local`` or ``ray``)."""
ADDRESS_ENV = "KINDRED_RAY_ADDRESS"
"""Environment variable with the Ray cluster address (``ray://host:10001``, ``auto``)."""
RUNNERS = ("local", "ray")

T = TypeVar("T")
R = TypeVar("R")


class RunnerFallback(KindredWarning):
    """A distributed runner was asked for, but the store cannot be staged by workers."""


@dataclass
class TaskContext:
    """What a per-item work function sees: the broadcast state and the store (opened in the
    worker's process)."""

    shared: Any
    store: VectorStore | None


class PartitionContext:
    """What a per-partition work function sees: the broadcast state, the rows of its
    partition (:meth:`scan`) and where its output goes (:meth:`stage`)."""

    def __init__(self, shared: Any, scan: Callable[..., Iterator[pa.RecordBatch]],
                 stage: Callable[..., Any], progress: Callable[[int], None] | None,
                 store: VectorStore) -> None:
        self.shared = shared
        self._scan = scan
        self._stage = stage
        self._progress = progress
        self.store = store
        """The store, opened in this process (for reads beyond the partition's rows)."""

    def scan(self, partition: Partition, *, columns: Sequence[str] | None = None,
             batch_size: int = 65_536, rows: np.ndarray | Sequence[int] | None = None
             ) -> Iterator[pa.RecordBatch]:
        """The partition's rows (all, or the scan positions ``rows``), in the order
        :meth:`stage` aligns values to."""
        if rows is None:
            return self._scan(partition, columns=columns, batch_size=batch_size)
        return self._scan(partition, columns=columns, batch_size=batch_size, rows=rows)

    def stage(self, partition: Partition, data: Any, *,
              rows: np.ndarray | Sequence[int] | None = None) -> None:
        """Stage column values for the partition (all its rows, or the scan positions
        ``rows``): attached to the step's one commit."""
        self._stage(partition, data, rows=rows)

    def progress(self, rows: int) -> None:
        """``rows`` more of the partition are done (shown live by the local runner; a
        distributed runner reports whole partitions as they finish)."""
        if self._progress is not None:
            self._progress(rows)


PartitionFn = Callable[[PartitionContext, Partition], Any]
MapFn = Callable[[TaskContext, Any], Any]


class Runner(ABC):
    """Runs a step's work functions (see the module docstring)."""

    name: ClassVar[str] = ""
    distributed: ClassVar[bool] = False

    def start(self) -> Runner:
        """Connect to the engine now (a distributed runner must, before LanceDB opens);
        nothing to do in process."""
        return self

    @property
    @abstractmethod
    def parallelism(self) -> int:
        """How many work functions run at once."""

    @abstractmethod
    def map(self, fn: MapFn, items: Iterable[Any], *, shared: Any = None,
            store: VectorStore | None = None, stateful: bool = False) -> Iterator[Any]:
        """``fn(TaskContext(shared, store), item)`` for each item; results in item order,
        streamed as they finish. ``fn`` must be a module-level function (it is pickled)."""

    @abstractmethod
    def map_partitions(self, tx: Transaction, fn: PartitionFn, *, shared: Any = None,
                       partitions: Sequence[Partition] | None = None, stateful: bool = False,
                       resources: dict[str, float] | None = None,
                       progress: Callable[[int], None] | None = None) -> Iterator[Any]:
        """``fn(ctx, partition)`` for each partition of the step's table (default: all of
        them, as ``tx.partitions()`` lists them); what ``fn`` stages is attached to ``tx``
        in partition order; results yielded in that order. ``stateful``: ``shared`` is
        loaded once per worker (one model per actor, e.g. a text encoder). ``progress(rows)``
        hears of the rows done."""

    @abstractmethod
    def map_reduce(self, map_fn: MapFn, items: Iterable[Any], reduce_fn: MapFn, *,
                   buckets: int, shared: Any = None, reduce_shared: Any = None,
                   store: VectorStore | None = None) -> Iterator[Any]:
        """A shuffle: ``map_fn(ctx, item)`` returns ``buckets`` pieces; ``reduce_fn(ctx,
        pieces)`` gets bucket ``b``'s pieces of every item (in item order); results in
        bucket order. Pieces stay with the workers (a distributed runner), only the
        reduced results reach the caller."""

    def describe(self) -> dict[str, Any]:
        return {"runner": self.name, "parallelism": self.parallelism}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LocalRunner(Runner):
    """Every work function in this process, one after the other, inside the transaction
    (``tx.scan``/``tx.stage``): today's single-process path, on every backend."""

    name = "local"
    distributed = False

    @property
    def parallelism(self) -> int:
        return 1

    def map(self, fn: MapFn, items: Iterable[Any], *, shared: Any = None,
            store: VectorStore | None = None, stateful: bool = False) -> Iterator[Any]:
        ctx = TaskContext(shared, store)
        for item in items:
            yield fn(ctx, item)

    def map_reduce(self, map_fn: MapFn, items: Iterable[Any], reduce_fn: MapFn, *,
                   buckets: int, shared: Any = None, reduce_shared: Any = None,
                   store: VectorStore | None = None) -> Iterator[Any]:
        ctx = TaskContext(shared, store)
        pieces: list[list[Any]] = [[] for _ in range(buckets)]
        for item in items:
            out = list(map_fn(ctx, item))
            if len(out) != buckets:
                raise RunnerError(f"a map returned {len(out)} pieces, expected {buckets}")
            for b, piece in enumerate(out):
                pieces[b].append(piece)
        rctx = TaskContext(reduce_shared, store)
        for b in range(buckets):
            yield reduce_fn(rctx, pieces[b])
            pieces[b] = []

    def map_partitions(self, tx: Transaction, fn: PartitionFn, *, shared: Any = None,
                       partitions: Sequence[Partition] | None = None, stateful: bool = False,
                       resources: dict[str, float] | None = None,
                       progress: Callable[[int], None] | None = None) -> Iterator[Any]:
        def stage(part: Partition, data: Any, *, rows: Any = None) -> None:
            tx.stage(part, data, rows=rows)

        ctx = PartitionContext(shared, tx.scan, stage, progress, tx.store)
        for part in (tx.partitions() if partitions is None else partitions):
            yield fn(ctx, part)


LOCAL = LocalRunner()
_lock = threading.Lock()
_warned: set[tuple[str, int]] = set()


def get_runner(runner: str | Runner | None = None, *, address: str | None = None) -> Runner:
    """A runner: one given, one named (``local``, ``ray``), or the one ``KINDRED_RUNNER``
    names (default ``local``). ``address`` (or ``KINDRED_RAY_ADDRESS``) is the Ray cluster to
    join; without one a local Ray instance is started."""
    if isinstance(runner, Runner):
        return runner
    name = (runner or os.environ.get(RUNNER_ENV) or "local").strip().lower()
    if name == "local":
        return LOCAL
    if name == "ray":
        from .ray import RayRunner

        return RayRunner.shared(address or os.environ.get(ADDRESS_ENV) or None)
    raise RunnerError(f"unknown runner {name!r}; expected one of {', '.join(RUNNERS)}")


def runner_for(store: VectorStore, runner: str | Runner | None = None, *,
               step: str = "this step") -> Runner:
    """The runner a step on ``store`` uses: the one asked for, or the local runner (with a
    :class:`RunnerFallback` warning, once per store) when the backend has no partitions that
    workers could stage."""
    r = get_runner(runner)
    if r.distributed and not store.capabilities.partitions:
        key = (store.scheme, id(store))
        with _lock:
            first = key not in _warned
            _warned.add(key)
        if first:
            warnings.warn(RunnerFallback(
                f"the {store.scheme} backend has no partitions that {r.name} workers can "
                f"stage: {step} and the other steps on this store run on the local runner"),
                stacklevel=2)
        return LOCAL
    return r
