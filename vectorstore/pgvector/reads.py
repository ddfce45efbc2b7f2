"""Reads whose table description is checked by the read's own statements.

A read (search, count, lookup) is planned from the table's description: the columns it
selects, the filter it compiles, the vector column and its metric. Reading the description
before every read would cost a round trip to the server each time, so the store keeps each
table's last description with the catalogue row version it was read at (its ``xmin``: every
save of a description writes a new row version), and every statement of a read carries the
version it ran against as an extra column: the check and the rows come from one statement,
so one snapshot, and the read stays one round trip (several statements are sent as one
psycopg pipeline).

When the version differs (this or another connection changed the description, or dropped
the table), the rows are discarded and the read is planned again from the description read
now, so a stale description is never used. A read that fails with a stale description is
redone the same way; with a current one, its error is the caller's. Scans check the version
with their transaction's BEGIN instead (:meth:`PipelinedReads.snapshot`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

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

R = TypeVar("R")

_BEGIN = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
_ATTEMPTS = 4
_STALE_PLAN = "cached plan must not change result type"


@dataclass
class Read(Generic[R]):
    """A read planned from a description: row-returning statements (each run with the
    version check added), a settings statement sent before them (in the same implicit
    transaction, so ``set_config(..., true)`` holds for them), and what makes the answer
    of their rows (given the connection, idle again, for any follow-up statement)."""

    statements: list[tuple[sql.Composed, list[Any]]]
    finish: Callable[[psycopg.Connection, list[list[tuple]]], R]
    setup: sql.Composed | None = None


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


class PipelinedReads:
    """The checked reads of one store (see the module docstring)."""

    def __init__(self, store: PgVectorStore, cache: DescriptionCache) -> None:
        self._store = store
        self.cache = cache
        catalog = store._ident(CATALOG)
        self._version_sql = sql.SQL("SELECT xmin::text FROM {} WHERE name = %s").format(catalog)
        self._described_sql = sql.SQL(
            "SELECT xmin::text, description FROM {} WHERE name = %s").format(catalog)
        # one row at least (the version) however many the read returns; its own rows have
        # _kindred_found = 1
        self._versioned = sql.SQL(
            "SELECT ({version}), s.* FROM (SELECT 1) AS one LEFT JOIN (SELECT 1 AS "
            "_kindred_found, q.* FROM ({read}) AS q) AS s ON true")

    def read(self, name: str, action: str, plan: Callable[[TableInfo], Read[R]]) -> R:
        """Plan a read from the table's description and run it: one round trip when the
        cached description is current, one more to read it when it is not (or none is)."""
        check_name(name, "table name")
        store = self._store
        with store._translate(name, action), store._connection() as conn:
            entry, fresh = self.cache.get(name), False
            for _ in range(_ATTEMPTS):
                if entry is None:
                    entry, fresh = self._describe(conn, name), True
                token, info = entry
                try:
                    planned = plan(info)
                except StoreError:
                    if fresh:
                        raise
                    entry = None  # the cached description may refuse what the current accepts
                    continue
                versions, rows, err = self._run(conn, name, planned)
                if err is None and versions == {token}:
                    return planned.finish(conn, rows)
                if isinstance(err, pgerr.FeatureNotSupported) and _STALE_PLAN in str(err):
                    # the table was made again with other column types: this connection's
                    # prepared statements of the same text are stale; psycopg forgets them
                    # on seeing DEALLOCATE ALL
                    conn.execute("DEALLOCATE ALL")
                    entry = None
                    continue
                if err is not None and (isinstance(err, psycopg.OperationalError)
                                        or (fresh and self._describe(conn, name)[0] == token)):
                    raise err  # with the current description (or the server went): real
                self.cache.forget(name)
                entry = None
        raise StoreError(f"{action} on table {name!r}: its description changed on each of "
                         f"{_ATTEMPTS} attempts (another connection altering it meanwhile)")

    def _describe(self, conn: psycopg.Connection, name: str) -> tuple[str, TableInfo]:
        row = conn.execute(self._described_sql, [name]).fetchone()
        if row is None:
            self.cache.forget(name)
            raise TableNotFound(f"table {name!r} does not exist in schema "
                                f"{self._store.schema!r}")
        entry = (str(row[0]), self._store._info_from(name, str(row[1])))
        self.cache.put(name, *entry)
        return entry

    def _run(self, conn: psycopg.Connection, name: str, planned: Read[R]
             ) -> tuple[set[str | None], list[list[tuple]], Exception | None]:
        """The read's statements with the version column: the versions they saw, their own
        rows, and the first error (one round trip; a pipeline when several statements)."""

        def queue() -> list[Any]:
            if planned.setup is not None:
                conn.execute(planned.setup)
            cursors = []
            for stmt, params in planned.statements:
                cursors.append(self._store._cursor(conn))
                cursors[-1].execute(self._versioned.format(version=self._version_sql, read=stmt),
                                    [name, *params])
            return cursors

        cursors: list[Any] | None
        err: Exception | None = None
        if planned.setup is None and len(planned.statements) == 1:
            try:
                cursors = queue()
            except psycopg.Error as exc:
                cursors, err = None, exc
        else:
            cursors, err = _pipelined(conn, queue)
        if err is not None or cursors is None:
            return set(), [], err
        versions: set[str | None] = set()
        rows = []
        for cur in cursors:
            got = cur.fetchall()
            versions.add(got[0][0])
            rows.append([r[2:] for r in got if r[1] is not None])
        return versions, rows, None

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
