"""The Ray runner: one Ray task per partition (a Lance fragment) or per batch.

The driver puts the step's ``shared`` state into Ray's object store once; each task fetches it
(once per worker process, then from a small per-process cache), reopens the store from its
:class:`~vectorstore.handle.StoreHandle` (once per process), runs the work function and, for a
partition, returns what it staged (:class:`~vectorstore.StagedPartition`: file metadata, no
rows). The driver attaches the staged partitions to the step's transaction in partition order
and commits once, exactly as the local runner does. At most ``2 x parallelism`` tasks are in
flight, so the driver holds a bounded number of results.

``stateful`` work (a text encoder) runs on an actor pool instead, one actor per worker slot
(a GPU each when the state asks for one), so each actor loads its model once for all the
partitions it is given; the actors are released when the step ends, so they never hold the
cluster's CPUs while the next step waits for them.

A task's exception is raised on the driver as itself (Ray's wrapper removed), so a step's
own errors read the same on both runners. ``ray.init`` is called before the store is
opened by the CLI and the facade (Ray's processes must not be forked from a process whose
LanceDB runtime already runs).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from vectorstore import Partition, Transaction, VectorStore
from vectorstore.faults import fault_point
from vectorstore.handle import StoreHandle, open_handle

from ..errors import RunnerError
from .base import PartitionContext, PartitionFn, Runner, TaskContext

_lock = threading.Lock()
_runners: dict[str | None, RayRunner] = {}
_cache: collections.OrderedDict[str, Any] = collections.OrderedDict()
_CACHE_SIZE = 2
_remote: dict[str, Any] = {}


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RunnerError("the ray runner needs Ray: pip install 'kindred[ray]'") from exc
    return ray


def _shared(box: list[Any]) -> Any:
    """The broadcast state of ``box`` (``[ObjectRef]`` or ``[None]``), fetched once per
    process: the list keeps Ray from resolving the reference for every task."""
    ref = box[0]
    if ref is None:
        return None
    token = ref.hex()
    with _lock:
        if token in _cache:
            _cache.move_to_end(token)
            return _cache[token]
    value = _ray().get(ref)
    with _lock:
        _cache[token] = value
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return value


def _run_item(fn: Callable[..., Any], handle: StoreHandle | None, box: list[Any],
              item: Any) -> Any:
    store = open_handle(handle) if handle is not None else None
    return fn(TaskContext(_shared(box), store), item)


def _run_map(fn: Callable[..., Any], handle: StoreHandle | None, box: list[Any], item: Any,
             buckets: int) -> Any:
    out = list(_run_item(fn, handle, box, item))
    if len(out) != buckets:
        raise RunnerError(f"a map returned {len(out)} pieces, expected {buckets}")
    return out[0] if buckets == 1 else tuple(out)


def _run_reduce(fn: Callable[..., Any], handle: StoreHandle | None, box: list[Any],
                *pieces: Any) -> Any:
    store = open_handle(handle) if handle is not None else None
    return fn(TaskContext(_shared(box), store), list(pieces))


def _run_partition(fn: PartitionFn, handle: StoreHandle, shared: Any, info: Any,
                   part: Partition) -> tuple[Any, list[Any]]:
    store = open_handle(handle)
    staged: list[Any] = []

    def stage(p: Partition, data: Any, *, rows: Any = None) -> None:
        staged.append(store.stage_partition(p, data, rows=rows, info=info))

    ctx = PartitionContext(shared, store.scan_partition, stage, None, store)
    return fn(ctx, part), staged


def _partition_task(fn: PartitionFn, handle: StoreHandle, box: list[Any], info: Any,
                    part: Partition) -> tuple[Any, list[Any]]:
    return _run_partition(fn, handle, _shared(box), info, part)


class _Holder:
    """An actor holding the step's state (one model per actor)."""

    def __init__(self, handle: StoreHandle | None, box: list[Any]) -> None:
        self.handle = handle
        self.shared = _shared(box)

    def partition(self, fn: PartitionFn, info: Any, part: Partition) -> tuple[Any, list[Any]]:
        assert self.handle is not None
        return _run_partition(fn, self.handle, self.shared, info, part)

    def item(self, fn: Callable[..., Any], item: Any) -> Any:
        store = open_handle(self.handle) if self.handle is not None else None
        return fn(TaskContext(self.shared, store), item)


def _remotes() -> dict[str, Any]:
    ray = _ray()
    with _lock:
        if not _remote:
            _remote["item"] = ray.remote(_run_item)
            _remote["map"] = ray.remote(_run_map)
            _remote["reduce"] = ray.remote(_run_reduce)
            _remote["partition"] = ray.remote(_partition_task)
            _remote["holder"] = ray.remote(_Holder)
        return _remote


class RayRunner(Runner):
    """Work functions as Ray tasks on the cluster at ``address`` (a local Ray instance when
    None, or the one ``ray.init`` already connected this process to)."""

    name = "ray"
    distributed = True

    def __init__(self, address: str | None = None, **init_options: Any) -> None:
        self.address = address
        self.init_options = init_options

    @classmethod
    def shared(cls, address: str | None = None) -> RayRunner:
        """One runner per cluster address in this process."""
        with _lock:
            r = _runners.get(address)
            if r is None:
                r = _runners[address] = cls(address)
            return r

    def start(self) -> RayRunner:
        """Connect to (or start) the Ray cluster; call before opening a LanceDB store."""
        ray = _ray()
        if not ray.is_initialized():
            opts = {"include_dashboard": False, "log_to_driver": False,
                    "logging_level": logging.ERROR, "ignore_reinit_error": True,
                    **self.init_options}
            try:
                ray.init(address=self.address, **opts)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = self.address or "a local Ray instance"
                raise RunnerError(f"cannot start or join the Ray cluster at {where}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else exc!r}") from None
        return self

    @property
    def parallelism(self) -> int:
        self.start()
        return max(1, int(_ray().cluster_resources().get("CPU", 1)))

    def gpus(self) -> int:
        return int(_ray().cluster_resources().get("GPU", 0))

    def describe(self) -> dict[str, Any]:
        self.start()
        ray = _ray()
        res = ray.cluster_resources()
        return {"runner": self.name, "parallelism": self.parallelism,
                "nodes": len([n for n in ray.nodes() if n.get("Alive")]),
                "cpus": res.get("CPU", 0), "gpus": res.get("GPU", 0)}

    # ------------------------------------------------------------------ plumbing
    def _put(self, shared: Any) -> list[Any]:
        return [None if shared is None else _ray().put(shared)]

    def _ordered(self, submit: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """Submit ``items`` with at most 2 x parallelism in flight; results in order."""
        ray = _ray()
        window = 2 * self.parallelism
        pending: collections.deque[Any] = collections.deque()
        it = iter(items)
        try:
            for item in it:
                pending.append(submit(item))
                if len(pending) >= window:
                    yield self._get(pending.popleft())
            while pending:
                yield self._get(pending.popleft())
        finally:
            for ref in pending:  # a failure or an abandoned generator: stop the rest
                ray.cancel(ref, force=False)

    @staticmethod
    def _get(ref: Any) -> Any:
        ray = _ray()
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise RunnerError(f"a Ray task failed: {str(exc).splitlines()[0]}") from None
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayActorError,
                ray.exceptions.ObjectLostError) as exc:
            raise RunnerError(f"a Ray worker was lost while the step ran ({type(exc).__name__}"
                              "); nothing was committed, run the step again") from None

    def _actors(self, handle: StoreHandle | None, box: list[Any], n: int,
                resources: dict[str, float] | None) -> list[Any]:
        opts = {"num_cpus": 1, **(resources or {})}
        holder = _remotes()["holder"].options(**opts)
        return [holder.remote(handle, box) for _ in range(max(1, n))]

    # ------------------------------------------------------------------ the interface
    def map(self, fn: Callable[..., Any], items: Iterable[Any], *, shared: Any = None,
            store: VectorStore | None = None, stateful: bool = False) -> Iterator[Any]:
        self.start()
        handle = store.worker_handle() if store is not None else None
        box = self._put(shared)
        if stateful:
            from ray.util import ActorPool

            items = list(items)
            actors = self._actors(handle, box, min(self.parallelism, len(items)), None)
            try:
                pool = ActorPool(actors)
                yield from pool.map(lambda a, v: a.item.remote(fn, v), items)
            finally:
                for a in actors:
                    _ray().kill(a)
            return
        task = _remotes()["item"]
        yield from self._ordered(lambda item: task.remote(fn, handle, box, item), items)

    def map_reduce(self, map_fn: Callable[..., Any], items: Iterable[Any],
                   reduce_fn: Callable[..., Any], *, buckets: int, shared: Any = None,
                   reduce_shared: Any = None, store: VectorStore | None = None) -> Iterator[Any]:
        self.start()
        handle = store.worker_handle() if store is not None else None
        box, rbox = self._put(shared), self._put(reduce_shared)
        mapper = _remotes()["map"].options(num_returns=buckets)
        maps = []
        for item in items:
            refs = mapper.remote(map_fn, handle, box, item, buckets)
            maps.append([refs] if buckets == 1 else list(refs))
        reducer = _remotes()["reduce"]
        reduces = [reducer.remote(reduce_fn, handle, rbox, *[m[b] for m in maps])
                   for b in range(buckets)]
        del maps  # the pieces live as long as the reduces that read them
        try:
            for ref in reduces:
                yield self._get(ref)
        finally:
            for ref in reduces:
                _ray().cancel(ref, force=False)

    def map_partitions(self, tx: Transaction, fn: PartitionFn, *, shared: Any = None,
                       partitions: Sequence[Partition] | None = None, stateful: bool = False,
                       resources: dict[str, float] | None = None,
                       progress: Callable[[int], None] | None = None) -> Iterator[Any]:
        self.start()
        parts = list(tx.partitions() if partitions is None else partitions)
        handle = tx.store.worker_handle()
        info = tx.info
        box = self._put(shared)
        if stateful:
            results = self._stateful_partitions(handle, box, info, fn, parts, resources)
        else:
            task = _remotes()["partition"].options(**(resources or {}))
            results = self._ordered(lambda p: task.remote(fn, handle, box, info, p), parts)
        for part, (result, staged) in zip(parts, results, strict=True):
            for s in staged:
                tx.attach(s)
                fault_point("stage", tx.name)
            if progress is not None:
                progress(part.rows)
            yield result

    def _stateful_partitions(self, handle: StoreHandle, box: list[Any], info: Any,
                             fn: PartitionFn, parts: list[Partition],
                             resources: dict[str, float] | None) -> Iterator[Any]:
        from ray.util import ActorPool

        if not parts:
            return
        actors = self._actors(handle, box, min(self.parallelism, len(parts)), resources)
        try:
            pool = ActorPool(actors)
            it = pool.map(lambda a, p: a.partition.remote(fn, info, p), parts)
            while True:
                try:
                    yield next(it)
                except StopIteration:
                    return
                except _ray().exceptions.RayTaskError as exc:
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, BaseException):
                        raise cause from None
                    raise
        finally:
            for a in actors:
                _ray().kill(a)

    def __repr__(self) -> str:
        return f"RayRunner(address={self.address!r})"
