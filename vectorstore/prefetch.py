"""Read the next batches of a scan in a background thread while the caller works on this one.

Scans decode in native code that releases the GIL (Lance, Arrow, psycopg's binary copy), so
on a multi-core machine reading batch i+1 overlaps scoring or multiplying batch i: a pipeline
of two stages instead of their sum.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order, producing up to ``depth`` of them ahead in a worker thread.

    An exception raised by the producer is re-raised in the caller at the point it occurred.
    Closing the returned generator early (``break``, an exception in the caller) stops the
    worker and closes the source iterator.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    source = iter(items)

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in source:
                if not put((item, None)):
                    break
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put((_DONE, exc))
            return
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
        put((_DONE, None))

    worker = threading.Thread(target=work, name="kindred-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, exc = q.get()
            if item is _DONE:
                if exc is not None:
                    raise exc
                return
            yield item
    finally:
        stop.set()
        worker.join()
