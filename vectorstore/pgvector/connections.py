"""The pgvector backend's connections: option checks, the one-time server set-up (extension,
schema, catalogue table), the pool, binary cursors and the translation of psycopg errors.

:class:`PgConnections` is held by the store (and its transactions) rather than mixed into
it, so it can be type-checked on its own.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import errors as pgerr
from psycopg import sql
from psycopg_pool import ConnectionPool, PoolTimeout

from ..dsn import driver_reason, parse_pg_uri, redact, redact_location, remember_secret
from ..errors import (
    BackendUnavailable,
    InvalidOption,
    KeyConflict,
    SchemaMismatch,
    StoreError,
    TableNotFound,
)
from ..names import check_name
from .decode import _BytesLoader, _IntLoader

CATALOG = "_kindred_catalog"


def _split_uri(uri: str) -> tuple[str, str | None]:
    """The canonical URI without Kindred's own query parameters, and the ``schema`` one if
    given (parsed leniently and redacted by :mod:`vectorstore.dsn`)."""
    target = parse_pg_uri(uri)
    return target.conninfo, target.schema


def _redact_uri(uri: str) -> str:
    return redact_location(uri)



def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])



class PgConnections:
    """The pool and the set-up of one store's PostgreSQL schema (see the module docstring)."""

    def __init__(self, uri: str, *, schema: str = "public", pool_min_size: int = 1,
                 pool_max_size: int = 5, connect_timeout: float = 10.0,
                 pool_timeout: float = 30.0) -> None:
        self.schema = check_name(schema, "schema name")
        value: float
        for label, value in (("pool_min_size", pool_min_size), ("pool_max_size", pool_max_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidOption(f"{label} must be a non-negative integer, got {value!r}")
        if pool_max_size < 1 or pool_min_size > pool_max_size:
            raise InvalidOption(f"need 1 <= pool_max_size and pool_min_size <= pool_max_size, got "
                                f"{pool_min_size}..{pool_max_size}")
        for label, value in (("connect_timeout", connect_timeout), ("pool_timeout", pool_timeout)):
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise InvalidOption(f"{label} must be a positive number of seconds, got {value!r}")
        target = parse_pg_uri(uri)
        self._display = target.display
        try:
            params = psycopg.conninfo.conninfo_to_dict(target.conninfo)
        except psycopg.Error as exc:  # its message quotes the string: show only the reason
            raise BackendUnavailable(f"invalid PostgreSQL URI {self._display}: "
                                     f"{driver_reason(str(exc))}") from None
        self._password = str(params.get("password") or "")
        remember_secret(self._password)
        params.setdefault("connect_timeout", str(max(2, int(connect_timeout))))
        self._params: dict[str, Any] = params
        self._pool_timeout = float(pool_timeout)
        self._closed = False
        self._setup(connect_timeout)
        self._pool: ConnectionPool = ConnectionPool(
            kwargs=dict(params), min_size=pool_min_size, max_size=pool_max_size,
            open=False, configure=self._configure, check=ConnectionPool.check_connection,
            timeout=self._pool_timeout, name=f"kindred-{self.schema}",
        )
        self._pool.open(wait=False)

    def __repr__(self) -> str:
        return f"PgVectorStore({self._display!r}, schema={self.schema!r})"

    @property
    def params(self) -> dict[str, Any]:
        """The connection parameters (libpq keywords) the pool opens connections with."""
        return self._params

    @property
    def pool(self) -> ConnectionPool:
        return self._pool

    def _redact(self, text: str, uri: str | None = None) -> str:
        pw = getattr(self, "_password", "")
        if uri:
            text = text.replace(uri, _redact_uri(uri))
        if pw:
            text = text.replace(pw, "***")
        return redact(text)

    def _setup(self, connect_timeout: float) -> None:
        """Check the server, create the vector extension, the schema and the catalogue."""
        try:
            conn = psycopg.connect(**self._params, autocommit=True)
        except psycopg.Error as exc:
            raise BackendUnavailable(f"cannot connect to PostgreSQL at {self._display}: "
                                     f"{self._redact(str(exc).strip())}") from None
        with conn:
            row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'"
                               ).fetchone()
            if row is None:
                row = self._create_extension(conn)
            self.pgvector_version = str(row[0])
            with contextlib.suppress(pgerr.UniqueViolation):
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(self.schema)))
            with contextlib.suppress(pgerr.UniqueViolation):
                conn.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, description text "
                    "NOT NULL)").format(self._ident(CATALOG)))
            oid = conn.execute("SELECT 'vector'::regtype::oid").fetchone()
            assert oid is not None  # the extension exists (just created)
            self._vector_oid = int(oid[0])
        self._iterative = _version_tuple(self.pgvector_version) >= (0, 8)

    def _create_extension(self, conn: psycopg.Connection) -> tuple[Any, ...]:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except pgerr.InsufficientPrivilege as exc:
            raise BackendUnavailable(
                f"the pgvector extension is not installed in {self._display} and the role may "
                f"not create it ({exc.diag.message_primary}): ask an administrator to run "
                "CREATE EXTENSION vector in this database"
            ) from None
        except pgerr.UniqueViolation:
            pass  # another session created it at the same moment
        except psycopg.Error as exc:
            raise BackendUnavailable(
                f"the pgvector extension is not available on the server {self._display} "
                f"({self._redact(str(exc).strip())}): install pgvector (https://github.com/"
                "pgvector/pgvector) on the server"
            ) from None
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'"
                           ).fetchone()
        assert row is not None  # the extension exists (just created)
        return row

    @staticmethod
    def _configure(conn: psycopg.Connection) -> None:
        conn.autocommit = True
        conn.execute("SET TimeZone TO 'UTC'")

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        try:
            cm = self._pool.connection(timeout=self._pool_timeout)
            conn = cm.__enter__()
        except PoolTimeout as exc:
            raise BackendUnavailable(
                f"no PostgreSQL connection free or reachable at {self._display} after "
                f"{self._pool_timeout:g}s (pool of {self._pool.max_size}): "
                f"{self._redact(str(exc))}"
            ) from None
        try:
            yield conn
        except BaseException as exc:
            cm.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            cm.__exit__(None, None, None)

    def _ident(self, table: str) -> sql.Identifier:
        return sql.Identifier(self.schema, table)

    def _cursor(self, conn: psycopg.Connection, name: str | None = None) -> Any:
        cur = conn.cursor(name=name, binary=True) if name else conn.cursor(binary=True)
        cur.adapters.register_loader(self._vector_oid, _BytesLoader)
        for oid in (1114, 1184, 1082):  # timestamp, timestamptz, date
            cur.adapters.register_loader(oid, _IntLoader)
        return cur

    @contextlib.contextmanager
    def _translate(self, name: str, action: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except psycopg.Error as exc:
            diag = exc.diag
            msg = self._redact(" ".join(p for p in (diag.message_primary or str(exc).strip(),
                                                    diag.message_detail) if p))
            where = f"{action} on table {name!r} failed: {msg}"
            if isinstance(exc, pgerr.UndefinedTable):
                raise TableNotFound(f"table {name!r} does not exist in schema "
                                    f"{self.schema!r}") from exc
            if isinstance(exc, pgerr.UniqueViolation):
                raise KeyConflict(where) from exc
            if isinstance(exc, pgerr.NotNullViolation | pgerr.DataError):
                raise SchemaMismatch(where) from exc
            if isinstance(exc, psycopg.OperationalError):
                raise BackendUnavailable(where) from exc
            raise StoreError(where) from exc


    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()
