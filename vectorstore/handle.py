"""Reopening a store in another process: what a distributed worker needs to reach the tables.

``store.worker_handle()`` gives a small picklable :class:`StoreHandle` (the location and the
options it was opened with); a worker calls :func:`open_handle` on it and gets the store,
opened once per process and reused by every later task of that process. Options may hold
credentials (object-store keys): they travel with the handle to the workers but are never
part of its ``repr`` and never printed.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import VectorStore

_lock = threading.Lock()
_open: dict[str, VectorStore] = {}


@dataclass(frozen=True)
class StoreHandle:
    """Where a store lives and how to open it again (``vectorstore.connect(uri, **options)``)."""

    uri: str
    options: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @property
    def token(self) -> str:
        """Identifies the store and its options (for the per-process cache)."""
        return self.uri + "\x1f" + json.dumps(self.options, sort_keys=True, default=str)


def open_handle(handle: StoreHandle) -> VectorStore:
    """The store behind ``handle``, opened once per process."""
    from .registry import connect

    token = handle.token
    with _lock:
        store = _open.get(token)
        if store is None:
            store = _open[token] = connect(handle.uri, **handle.options)
        return store


def close_handles() -> None:
    """Close every store this process opened through :func:`open_handle`."""
    with _lock:
        stores = list(_open.values())
        _open.clear()
    for s in stores:
        s.close()
