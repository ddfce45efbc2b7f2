"""Reads whose table description is checked in the same round trip as the read itself.

A read (search, count, lookup) is planned from the table's description: the columns it
selects, the filter it compiles, the vector column and its metric. Reading the description
before every read would cost a round trip to the server each time, so the store keeps each
table's last description with the catalogue row version it was read at (its ``xmin``: every
save of a description writes a new row version), and sends the version check together with
the read's statements in one psycopg pipeline (one network round trip), inside one
repeatable-read transaction so the check and the read see the same snapshot.

When the version differs (this or another connection changed the description, or dropped
the table), the read's result is discarded and the read is planned again from the
description read in the same snapshot as its statements, so a stale description is never
used. A failed read with a stale description is redone the same way; with a current one,
its error is the caller's.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import errors as pgerr
from psycopg import sql
from psycopg.pq import TransactionStatus

from ..errors import StoreError, TableNotFound
from ..names import check_name
from ..schema import TableInfo
from .connections import CATALOG

if TYPE_CHECKING:
    from .store import PgVectorStore

P = TypeVar("P")
R = TypeVar("R")
# queues a planned read's statements on a connection in pipeline mode; returns the function
# that collects their results once the pipeline has been synced
Send = Callable[[psycopg.Connection, P], Callable[[], R]]

_BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"


class DescriptionCache:
    """The last description read of each table, with its catalogue row version. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, TableInfo]] = {}

    def get(self, name: str) -> tuple[str, TableInfo] | None:
        with self._lock:
            return self._entries.get(name)

    def put(self, name: str, token: str, info: TableInfo) -> None:
        with self._lock:
            self._entries[name] = (token, info)

    def forget(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)


@contextlib.contextmanager
def _ends_transaction(conn: psycopg.Connection) -> Iterator[None]:
    """Roll back a transaction the block left open (after an error, or a refused plan)."""
    try:
        yield
    finally:
        if conn.info.transaction_status != TransactionStatus.IDLE:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")


def _pipelined(conn: psycopg.Connection, queue: Callable[[], R]) -> tuple[R | None, Exception | None]:
    """Run ``queue`` (which sends statements) in one pipeline, synced when it ends: one
    round trip. Returns what ``queue`` returned and the pipeline's first error (or None)."""
    out: R | None = None
    err: Exception | None = None
    try:
        with conn.pipeline():
            try:
                out = queue()
            except psycopg.Error as exc:  # a result that came back early was an error
                err = exc
    except pgerr.PipelineAborted:
        pass  # the pipeline's first error, kept above, is the one that counts
    except psycopg.Error as exc:
        err = err or exc
    return out, err


def _first_text(cur: Any) -> str | None:
    try:
        row = cur.fetchone()
    except psycopg.Error:
        return None  # no result: the pipeline stopped before this statement
    return None if row is None else str(row[0])


class PipelinedReads:
    """The checked reads of one store (see the module docstring)."""

    def __init__(self, store: PgVectorStore, cache: DescriptionCache) -> None:
        self._store = store
        self.cache = cache
        catalog = store._ident(CATALOG)
        self._version_sql = sql.SQL("SELECT xmin::text FROM {} WHERE name = %s").format(catalog)
        self._described_sql = sql.SQL(
            "SELECT xmin::text, description FROM {} WHERE name = %s").format(catalog)

    def read(self, name: str, action: str, plan: Callable[[TableInfo], P], send: Send[P, R]) -> R:
        """Plan a read from the table's description and run it: one round trip when the
        cached description is current, two more when it is not (or none is cached)."""
        check_name(name, "table name")
        store = self._store
        with store._translate(name, action), store._connection() as conn:
            entry = self.cache.get(name)
            if entry is not None:
                done, result = self._checked(conn, name, entry, plan, send)
                if done:
                    return result  # type: ignore[return-value]  # done means a result
                self.cache.forget(name)
            return self._fresh(conn, name, plan, send)

    def _checked(self, conn: psycopg.Connection, name: str, entry: tuple[str, TableInfo],
                 plan: Callable[[TableInfo], P], send: Send[P, R]) -> tuple[bool, R | None]:
        """The read planned from the cached description, with the version check in the same
        pipeline; ``(False, None)`` when the description was not current."""
        token, info = entry
        try:
            planned = plan(info)
        except StoreError:
            return False, None  # the cached description may refuse what the current accepts

        def queue() -> tuple[Any, Callable[[], R]]:
            conn.execute(_BEGIN)
            version = conn.cursor()
            version.execute(self._version_sql, [name])
            collect = send(conn, planned)
            conn.execute("COMMIT")
            return version, collect

        with _ends_transaction(conn):
            out, err = _pipelined(conn, queue)
        current = out is not None and _first_text(out[0]) == token
        if err is not None:
            if current or isinstance(err, psycopg.OperationalError):
                raise err  # the description was current (or the server went): a real error
            return False, None
        assert out is not None  # no error: queue returned
        return (True, out[1]()) if current else (False, None)

    def _fresh(self, conn: psycopg.Connection, name: str, plan: Callable[[TableInfo], P],
               send: Send[P, R]) -> R:
        """The description and the read in one snapshot (two round trips); cached after."""

        def describe() -> Any:
            conn.execute(_BEGIN)
            cur = conn.cursor()
            cur.execute(self._described_sql, [name])
            return cur

        with _ends_transaction(conn):
            cur, err = _pipelined(conn, describe)
            if err is not None or cur is None:
                raise err or StoreError("the pipeline ended without a result")
            row = cur.fetchone()
            if row is None:
                self.cache.forget(name)
                raise TableNotFound(f"table {name!r} does not exist in schema "
                                    f"{self._store.schema!r}")
            token, info = str(row[0]), self._store._info_from(name, str(row[1]))
            planned = plan(info)

            def run() -> Callable[[], R]:
                collect = send(conn, planned)
                conn.execute("COMMIT")
                return collect

            collect, err = _pipelined(conn, run)
            if err is not None:
                raise err
        self.cache.put(name, token, info)
        assert collect is not None  # no error: run returned
        return collect()

    @contextlib.contextmanager
    def snapshot(self, conn: psycopg.Connection, name: str) -> Iterator[TableInfo]:
        """A repeatable-read transaction on ``conn`` (committed when the block ends) and the
        table's description in it: the cached one when its version, checked with the BEGIN
        in one round trip, is current; else the one read in the transaction."""
        entry = self.cache.get(name)

        def begin() -> Any:
            conn.execute(_BEGIN)
            cur = conn.cursor()
            cur.execute(self._version_sql if entry is not None else self._described_sql, [name])
            return cur

        with _ends_transaction(conn):
            cur, err = _pipelined(conn, begin)
            if err is not None or cur is None:
                raise err or StoreError("the pipeline ended without a result")
            row = cur.fetchone()
            if entry is not None and row is not None and str(row[0]) == entry[0]:
                info = entry[1]
            else:
                if entry is not None and row is not None:  # changed: read it in this snapshot
                    row = conn.execute(self._described_sql, [name]).fetchone()
                if row is None:
                    self.cache.forget(name)
                    raise TableNotFound(f"table {name!r} does not exist in schema "
                                        f"{self._store.schema!r}")
                info = self._store._info_from(name, str(row[1]))
                self.cache.put(name, str(row[0]), info)
            yield info
            conn.execute("COMMIT")
