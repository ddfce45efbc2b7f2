"""Counting the network round trips of a PostgreSQL store's calls, from libpq's protocol
trace: for tests and benchmarks of how many times a call waits for the server."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from psycopg.pq import Trace

__all__ = ["RoundTrips"]


class RoundTrips:
    """Counts the network round trips of a store whose pool holds one connection: libpq
    traces every protocol message, and each time the server answers after the client sent
    something is one round trip (the pool's check of the connection included)."""

    def __init__(self, store: Any, path: Path) -> None:
        pool = store._db.pool  # a PgVectorStore's
        if pool.max_size != 1:
            raise ValueError("counting round trips needs a store opened with pool_max_size=1")
        with pool.connection() as conn:
            self._conn = conn
        self._path = Path(path)

    @contextlib.contextmanager
    def counting(self) -> Iterator[list[int]]:
        """Trace the block; the list it gives holds the block's round trips afterwards."""
        out: list[int] = []
        with open(self._path, "w") as f:
            self._conn.pgconn.trace(f.fileno())
            self._conn.pgconn.set_trace_flags(Trace.SUPPRESS_TIMESTAMPS)
            try:
                yield out
            finally:
                self._conn.pgconn.untrace()
        out.append(self.parse(self._path.read_text()))

    @staticmethod
    def parse(trace: str) -> int:
        """Round trips in a trace (lines ``F``/``B`` first: sent by client / backend)."""
        trips, last = 0, None
        for line in trace.splitlines():
            side = line.split("\t", 1)[0]
            if side == "B" and last == "F":
                trips += 1
            if side in ("F", "B"):
                last = side
        return trips

    def of(self, fn: Callable[[], Any]) -> int:
        """The round trips of one call of ``fn``."""
        with self.counting() as n:
            fn()
        return n[0]
