"""PostgreSQL + pgvector backend: one schema of ordinary tables with ``vector(d)`` columns.

Table descriptions (key, vector columns, metadata, and the exact Arrow schema) live in the
catalogue table ``_kindred_catalog`` of the store's schema, so a later ``connect`` finds what
the LanceDB backend would. Writes stream Arrow batches through binary ``COPY`` (the binary rows
are built column-wise with Arrow and numpy, not per row) inside one transaction; upserts go
through a temporary staging table and ``INSERT ... ON CONFLICT``. Searches use pgvector's
operators and report the store's one meaning of ``score`` / ``distance``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import errors as pgerr
from psycopg import sql
from psycopg.adapt import Loader
from psycopg.copy import QueuedLibpqWriter
from psycopg.pq import Format
from psycopg_pool import ConnectionPool, PoolTimeout

from .base import ARTIFACT_TABLE, FilterLike, IndexInfo, VectorStore
from .conform import conform
from .dsn import driver_reason, parse_pg_uri, redact, redact_location, remember_secret
from .errors import (
    BackendUnavailable,
    InvalidOption,
    KeyConflict,
    SchemaMismatch,
    StoreError,
    TableExists,
    TableNotFound,
)
from .faults import fault_point
from .names import check_name
from .pg_filter import compile_filter, plain_pg_type
from .pg_txn import PgTransaction
from .schema import Capabilities, Metric, TableInfo, VectorColumn, new_table_info
from .txn import Partition

log = logging.getLogger(__name__)

CATALOG = "_kindred_catalog"
INDEX_TYPES = ("HNSW", "IVFFLAT")
_OPTIONS = {"schema", "pool_min_size", "pool_max_size", "connect_timeout", "pool_timeout"}
_SEARCH_PARAMS = {"ef_search", "ef", "probes"}
_INDEX_PARAMS = {"HNSW": {"m", "ef_construction"}, "IVFFLAT": {"lists"}}
_OPS = {Metric.COSINE: "<=>", Metric.DOT: "<#>", Metric.L2: "<->"}
_OPCLASS = {Metric.COSINE: "vector_cosine_ops", Metric.DOT: "vector_ip_ops",
            Metric.L2: "vector_l2_ops"}
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
_COPY_ROWS = 8192  # rows encoded at a time (bounds the memory of one COPY chunk)
_PG_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 in microseconds since 1970
_PG_EPOCH_DAYS = 10_957
_ELEM_OID = {"boolean": 16, "smallint": 21, "integer": 23, "bigint": 20, "real": 700,
             "double precision": 701, "text": 25}
SUPPORTED_TYPES = ("bool, int8/16/32/64, uint8/16/32, float32/64, string, large_string, binary, "
                   "large_binary, timestamp (with or without zone), date32/64, list of "
                   "string/int/float/bool, fixed_size_list<float32> (vector)")


# --------------------------------------------------------------------------- type mapping


def pg_type(field: pa.Field, table: str = "?") -> str:
    """The PostgreSQL column type storing an Arrow field, or SchemaMismatch naming the type."""
    typ = field.type
    base = plain_pg_type(typ)
    if base is not None:
        return base
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        return "bytea"
    if pa.types.is_timestamp(typ):
        return "timestamptz" if typ.tz is not None else "timestamp"
    if pa.types.is_date32(typ) or pa.types.is_date64(typ):
        return "date"
    if pa.types.is_fixed_size_list(typ) and pa.types.is_float32(typ.value_type):
        return f"vector({typ.list_size})"
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        elem = plain_pg_type(typ.value_type)
        if elem is not None:
            return f"{elem}[]"
    raise SchemaMismatch(
        f"table {table!r}, column {field.name!r}: Arrow type {typ} is not supported by the "
        f"PostgreSQL backend; supported: {SUPPORTED_TYPES}"
    )


def _schema_to_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def _schema_from_text(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


# --------------------------------------------------------------------------- binary COPY encoding
# Each column becomes a large_binary array of "cells" (4-byte big-endian length, then the
# value in PostgreSQL's binary format; length -1 for null); Arrow's element-wise join then
# glues the cells of a row together. No Python code runs per row.

_EMPTY = pa.scalar(b"", pa.large_binary())


def _binary_rows(matrix: np.ndarray, sizes: np.ndarray | None = None) -> pa.Array:
    """A large_binary array whose row i is ``matrix[i, :sizes[i]]`` (all of it by default)."""
    n, w = matrix.shape
    matrix = np.ascontiguousarray(matrix, dtype=np.uint8)
    if sizes is None or (sizes == w).all():
        data = matrix.reshape(-1)
        offsets = np.arange(n + 1, dtype=np.int64) * w
    else:
        keep = np.arange(w)[None, :] < sizes[:, None]
        data = matrix[keep]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
    return pa.Array.from_buffers(pa.large_binary(), n,
                                 [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _be_bytes(values: np.ndarray, dtype: str) -> np.ndarray:
    """(n, itemsize) uint8 big-endian bytes of ``values``."""
    arr = np.ascontiguousarray(values.astype(dtype, copy=False))
    if not len(arr):  # e.g. the elements of lists that are all null or empty
        return np.zeros((0, arr.dtype.itemsize * int(np.prod(arr.shape[1:]))), np.uint8)
    return arr.view(np.uint8).reshape(len(values), -1)


def _valid(arr: pa.Array) -> np.ndarray | None:
    if arr.null_count == 0:
        return None
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _fixed_cells(payload: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    n, w = payload.shape
    full = np.empty((n, 4 + w), dtype=np.uint8)
    lengths = np.full(n, w, dtype=">i4")
    if valid is not None:
        lengths[~valid] = -1
    full[:, :4] = lengths.view(np.uint8).reshape(n, 4)
    full[:, 4:] = payload
    sizes = None if valid is None else np.where(valid, 4 + w, 4)
    return _binary_rows(full, sizes)


def _var_cells(values: pa.Array, valid: np.ndarray | None) -> pa.Array:
    filled = pc.fill_null(values.cast(pa.large_binary()), _EMPTY)
    if valid is not None:  # a null cell is its length (-1) alone
        filled = pc.if_else(pa.array(valid), filled, _EMPTY)
    lengths = pc.binary_length(filled).to_numpy(zero_copy_only=False).astype(">i4")
    if valid is not None:
        lengths[~valid] = -1
    header = _binary_rows(lengths.view(np.uint8).reshape(len(values), 4))
    return pc.binary_join_element_wise(header, filled, _EMPTY)


def _numbers(arr: pa.Array, fill: Any = 0) -> np.ndarray:
    return pc.fill_null(arr, fill).to_numpy(zero_copy_only=False)


_FIXED_DTYPE = {"smallint": ">i2", "integer": ">i4", "bigint": ">i8", "real": ">f4",
                "double precision": ">f8"}


def _fixed_payload(arr: pa.Array, pgt: str) -> np.ndarray | None:
    """(n, width) uint8 binary values of a fixed-width type (nulls as zeros); None otherwise."""
    if pgt == "boolean":
        return _numbers(arr, False).astype(np.uint8).reshape(-1, 1)
    dtype = _FIXED_DTYPE.get(pgt)
    if dtype is not None:
        return _be_bytes(_numbers(arr), dtype)
    if pgt in ("timestamp", "timestamptz"):
        us = arr.cast(pa.timestamp("us", tz=arr.type.tz), safe=False).cast(pa.int64())
        return _be_bytes(_numbers(us) - _PG_EPOCH_US, ">i8")
    if pgt == "date":
        days = arr.cast(pa.date32()).cast(pa.int32())
        return _be_bytes(_numbers(days) - _PG_EPOCH_DAYS, ">i4")
    if pgt.startswith("vector("):
        n, dim = len(arr), arr.type.list_size
        flat = arr.values.slice(arr.offset * dim, n * dim)
        vals = _numbers(flat, 0.0).astype(np.float32, copy=False).reshape(n, dim)
        payload = np.empty((n, 4 + 4 * dim), dtype=np.uint8)
        payload[:, :2] = np.frombuffer(np.array([dim], ">i2").tobytes(), np.uint8)
        payload[:, 2:4] = 0
        payload[:, 4:] = _be_bytes(vals, ">f4").reshape(n, 4 * dim)
        return payload
    return None


def _scalar_cells(arr: pa.Array, pgt: str) -> pa.Array:
    payload = _fixed_payload(arr, pgt)
    if payload is not None:
        return _fixed_cells(payload, _valid(arr))
    if pgt in ("text", "bytea"):
        return _var_cells(arr, _valid(arr))
    raise SchemaMismatch(f"cannot encode PostgreSQL type {pgt}")  # pragma: no cover


def _array_cells(arr: pa.Array, elem_pgt: str) -> pa.Array:
    n = len(arr)
    offsets = arr.offsets
    start, stop = offsets[0].as_py(), offsets[n].as_py()
    elems = _scalar_cells(arr.values.slice(start, stop - start), elem_pgt)
    rel = pc.subtract(offsets.cast(pa.int64()), start)
    joined = pc.fill_null(pc.binary_join(pa.LargeListArray.from_arrays(rel, elems), _EMPTY),
                          _EMPTY)
    counts = np.diff(rel.to_numpy())
    header = np.zeros((n, 5), dtype=">i4")  # ndim, has-null flag, element oid, length, lower bound
    header[:, 0] = counts > 0
    header[:, 2] = _ELEM_OID[elem_pgt]
    header[:, 3] = counts
    header[:, 4] = 1
    sizes = np.where(counts > 0, 20, 12)  # an empty array is ndim 0, without dimension info
    head = _binary_rows(header.view(np.uint8).reshape(n, 20), sizes)
    payload = pc.binary_join_element_wise(head, joined, _EMPTY)
    return _var_cells(payload, _valid(arr))


def _column_cells(arr: pa.Array, field: pa.Field) -> pa.Array:
    pgt = pg_type(field)
    if pgt.endswith("[]"):
        return _array_cells(arr, pgt[:-2])
    return _scalar_cells(arr, pgt)


def _fixed_rows(batch: pa.RecordBatch) -> np.ndarray | None:
    """Rows as one (n, width) byte matrix when every column is fixed-width and null-free."""
    if any(c.null_count for c in batch.columns):
        return None
    n = batch.num_rows
    parts = [np.tile(np.frombuffer(np.array([batch.num_columns], ">i2").tobytes(), np.uint8),
                     (n, 1))]
    for arr, fld in zip(batch.columns, batch.schema, strict=True):
        payload = _fixed_payload(arr, pg_type(fld))
        if payload is None:
            return None
        length = np.frombuffer(np.array([payload.shape[1]], ">i4").tobytes(), np.uint8)
        parts += [np.tile(length, (n, 1)), payload]
    return np.concatenate(parts, axis=1)


def encode_copy_rows(batch: pa.RecordBatch) -> memoryview:
    """The rows of ``batch`` in PostgreSQL's binary COPY format (no header or trailer)."""
    fixed = _fixed_rows(batch)
    if fixed is not None:
        return memoryview(fixed.reshape(-1))
    n = batch.num_rows
    count = _binary_rows(np.tile(np.frombuffer(np.array([batch.num_columns], ">i2").tobytes(),
                                               np.uint8), (n, 1)))
    cells = [_column_cells(batch.column(i), batch.schema.field(i))
             for i in range(batch.num_columns)]
    rows = pc.binary_join_element_wise(count, *cells, _EMPTY)
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64)
    begin, end = offsets[rows.offset], offsets[rows.offset + n]
    return memoryview(rows.buffers()[2])[begin:end]


def _check_text(info: TableInfo, batch: pa.RecordBatch) -> None:
    """PostgreSQL text cannot hold NUL characters: refuse them by row and column up front."""
    for fld, arr in zip(batch.schema, batch.columns, strict=True):
        typ, flat = fld.type, arr
        if pa.types.is_list(typ) or pa.types.is_large_list(typ):
            typ, flat = typ.value_type, arr.flatten()
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)) or not len(flat):
            continue
        hit = pc.fill_null(pc.match_substring(flat, "\x00"), False)
        if pc.any(hit).as_py():
            idx = pc.index(hit, True).as_py()
            where = "row" if flat is arr else "list element"
            raise SchemaMismatch(f"table {info.name!r}, column {fld.name!r}, {where} {idx}: "
                                 "PostgreSQL text cannot contain NUL characters")


# --------------------------------------------------------------------------- binary result decoding


class _BytesLoader(Loader):
    format = Format.BINARY

    def load(self, data: Any) -> bytes:
        return bytes(data)


class _IntLoader(Loader):
    """Timestamps and dates as their raw integer (microseconds / days since 2000-01-01)."""

    format = Format.BINARY

    def load(self, data: Any) -> int:
        return int.from_bytes(data, "big", signed=True)


def _decode_column(values: list[Any], field: pa.Field) -> pa.Array:
    typ = field.type
    n = len(values)
    if pa.types.is_fixed_size_list(typ):
        dim = typ.list_size
        nulls = np.fromiter((v is None for v in values), dtype=bool, count=n)
        blank = bytes(4 + 4 * dim)
        raw = b"".join(blank if v is None else v for v in values)
        mat = np.frombuffer(raw, dtype=">f4").reshape(n, dim + 1)[:, 1:].astype(np.float32)
        mask = pa.array(nulls) if nulls.any() else None
        return pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), dim, mask=mask)
    if pa.types.is_timestamp(typ):
        ints = pc.add(pa.array(values, pa.int64()), _PG_EPOCH_US)
        return ints.cast(pa.timestamp("us", tz=typ.tz)).cast(typ)
    if pa.types.is_date(typ):
        ints = pc.add(pa.array(values, pa.int64()), _PG_EPOCH_DAYS).cast(pa.int32())
        return ints.cast(pa.date32()).cast(typ)
    return pa.array(values, type=typ)


# --------------------------------------------------------------------------- connection details


def _split_uri(uri: str) -> tuple[str, str | None]:
    """The canonical URI without Kindred's own query parameters, and the ``schema`` one if
    given (parsed leniently and redacted by :mod:`vectorstore.dsn`)."""
    target = parse_pg_uri(uri)
    return target.conninfo, target.schema


def _redact_uri(uri: str) -> str:
    return redact_location(uri)


def _index_name(table: str, column: str) -> str:
    name = f"{table}_{column}_idx"
    if len(name) <= 63:
        return name
    return "kindred_idx_" + hashlib.sha256(f"{table}.{column}".encode()).hexdigest()[:24]


def _vector_literal(q: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in q.tolist()) + "]"


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


class PgVectorStore(VectorStore):
    """Tables in one PostgreSQL schema with pgvector (see :mod:`vectorstore.base`)."""

    scheme = "postgresql"
    capabilities = Capabilities(versions=False, ann_index=True, scalar_index=True,
                                prefilter=True, index_types=INDEX_TYPES)

    def __init__(self, uri: str, *, schema: str = "public", pool_min_size: int = 1,
                 pool_max_size: int = 5, connect_timeout: float = 10.0,
                 pool_timeout: float = 30.0) -> None:
        self.schema = check_name(schema, "schema name")
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
        self._params = params
        self._pool_timeout = float(pool_timeout)
        self._closed = False
        self._setup(connect_timeout)
        self._pool: ConnectionPool = ConnectionPool(
            kwargs=dict(params), min_size=pool_min_size, max_size=pool_max_size,
            open=False, configure=self._configure, check=ConnectionPool.check_connection,
            timeout=self._pool_timeout, name=f"kindred-{self.schema}",
        )
        self._pool.open(wait=False)

    @classmethod
    def open(cls, uri: str, **options: Any) -> PgVectorStore:
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise InvalidOption(
                f"unknown option(s) {', '.join(unknown)} for the PostgreSQL backend; "
                f"accepted: {', '.join(sorted(_OPTIONS))}"
            )
        _, schema = _split_uri(uri)
        if schema is not None and "schema" in options and options["schema"] != schema:
            raise InvalidOption(f"schema given twice: {schema!r} in the URI and "
                                f"{options['schema']!r} as an option")
        if schema is not None:
            options["schema"] = schema
        return cls(uri, **options)

    def __repr__(self) -> str:
        return f"PgVectorStore({self._display!r}, schema={self.schema!r})"

    # ------------------------------------------------------------------ connections
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
            self._vector_oid = int(conn.execute("SELECT 'vector'::regtype::oid").fetchone()[0])
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
        return conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'"
                            ).fetchone()

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

    # ------------------------------------------------------------------ catalogue
    def _description(self, conn: psycopg.Connection, name: str) -> str | None:
        row = conn.execute(sql.SQL("SELECT description FROM {} WHERE name = %s").format(
            self._ident(CATALOG)), [name]).fetchone()
        return None if row is None else str(row[0])

    def table_info(self, name: str) -> TableInfo:
        check_name(name, "table name")
        with self._translate(name, "reading the description"), self._connection() as conn:
            desc = self._description(conn, name)
        if desc is None:
            raise TableNotFound(f"table {name!r} does not exist in schema {self.schema!r}")
        return self._info_from(name, desc)

    @staticmethod
    def _info_from(name: str, desc: str) -> TableInfo:
        d = json.loads(desc)
        vectors = {v["name"]: VectorColumn.from_dict(v) for v in d.get("vectors", [])}
        return TableInfo(name=name, schema=_schema_from_text(d["arrow_schema"]), key=d.get("key"),
                         vectors=vectors, metadata=d.get("metadata", {}))

    def _save_description(self, conn: psycopg.Connection, info: TableInfo) -> None:
        desc = json.dumps({"key": info.key, "vectors": [v.to_dict() for v in info.vectors.values()],
                           "metadata": info.metadata, "arrow_schema": _schema_to_text(info.schema)},
                          sort_keys=True, default=str)
        conn.execute(sql.SQL(
            "INSERT INTO {} (name, description) VALUES (%s, %s) ON CONFLICT (name) DO UPDATE "
            "SET description = EXCLUDED.description").format(self._ident(CATALOG)),
            [info.name, desc])

    def _catalog_names(self) -> list[str]:
        with self._translate(CATALOG, "listing tables"), self._connection() as conn:
            rows = conn.execute(sql.SQL(
                "SELECT c.name FROM {} c JOIN pg_tables t ON t.schemaname = %s AND "
                "t.tablename = c.name ORDER BY c.name").format(self._ident(CATALOG)),
                [self.schema]).fetchall()
        return [r[0] for r in rows]

    def list_tables(self) -> list[str]:
        return [n for n in self._catalog_names() if not n.startswith("_kindred")]

    def _hidden_tables(self) -> list[str]:
        return [n for n in self._catalog_names() if n.startswith("_kindred") and n != CATALOG]

    # ------------------------------------------------------------------ tables
    def create_table(self, name: str, schema: pa.Schema, *, key: str | None = None,
                     vectors: Sequence[VectorColumn] = (), metadata: dict[str, Any] | None = None,
                     exist_ok: bool = False, data: Any = None) -> TableInfo:
        info = new_table_info(name, schema, key=key, vectors=vectors, metadata=metadata)
        json.dumps(info.metadata, default=str)
        columns = [sql.SQL("{} {}{}").format(
            sql.Identifier(f.name), sql.SQL(pg_type(f, name)),
            sql.SQL("" if f.nullable and f.name != key else " NOT NULL")) for f in info.schema]
        if key is not None:
            columns.append(sql.SQL("PRIMARY KEY ({})").format(sql.Identifier(key)))
        with self._translate(name, "create"), self._connection() as conn, conn.transaction():
            exists = self._description(conn, name) is not None
            if exists and (not exist_ok or data is not None):
                raise TableExists(f"table {name!r} already exists in schema {self.schema!r}")
            if not exists:
                self._create(conn, info, columns)
                if data is not None:  # the rows, in the same transaction as the table
                    self._copy(conn, info, self._ident(name),
                               conform(info, data, require_key=key is not None,
                                       unique_key=key is not None))
                fault_point("commit", name)
        if not exists:
            fault_point("committed", name)
        return self.table_info(name) if exists else info

    def _create(self, conn: psycopg.Connection, info: TableInfo,
                columns: list[sql.Composable]) -> None:
        try:
            conn.execute(sql.SQL("CREATE TABLE {} ({})").format(
                self._ident(info.name), sql.SQL(", ").join(columns)))
        except pgerr.DuplicateTable:
            raise TableExists(f"table {info.name!r} already exists in schema {self.schema!r} "
                              "(made outside Kindred)") from None
        self._save_description(conn, info)

    def drop_table(self, name: str, *, missing_ok: bool = False) -> None:
        check_name(name, "table name")
        with self._translate(name, "drop"), self._connection() as conn, conn.transaction():
            if self._description(conn, name) is None:
                if missing_ok:
                    return
                raise TableNotFound(f"table {name!r} does not exist in schema {self.schema!r}")
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._ident(name)))
            conn.execute(sql.SQL("DELETE FROM {} WHERE name = %s").format(self._ident(CATALOG)),
                         [name])

    def drop_columns(self, name: str, columns: Sequence[str]) -> TableInfo:
        info = self.table_info(name)
        cols = self._columns_to_drop(info, columns)
        if not cols:
            return info
        new = TableInfo(name, pa.schema([f for f in info.schema if f.name not in cols]),
                        info.key, {k: v for k, v in info.vectors.items() if k not in cols},
                        info.metadata)
        with self._translate(name, "dropping columns"), self._connection() as conn, \
                conn.transaction():
            for c in cols:
                conn.execute(sql.SQL("ALTER TABLE {} DROP COLUMN {}").format(
                    self._ident(name), sql.Identifier(c)))
            self._save_description(conn, new)
        return self.table_info(name)

    # ------------------------------------------------------------------ writes
    def _copy(self, conn: psycopg.Connection, info: TableInfo, target: sql.Composable,
              batches: Iterator[pa.RecordBatch]) -> int:
        """Stream batches into ``target`` with binary COPY; returns the rows sent."""
        rows = 0
        stmt = None
        with contextlib.ExitStack() as stack:
            copy = None
            for batch in batches:
                if stmt is None:
                    cols = sql.SQL(", ").join(sql.Identifier(c) for c in batch.schema.names)
                    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, cols)
                    cur = conn.cursor()
                    # a writer thread sends one chunk while the next is being encoded
                    copy = stack.enter_context(cur.copy(stmt, writer=QueuedLibpqWriter(cur)))
                    copy.write(_COPY_SIGNATURE)
                _check_text(info, batch)
                for start in range(0, batch.num_rows, _COPY_ROWS):
                    copy.write(encode_copy_rows(batch.slice(start, _COPY_ROWS)))
                rows += batch.num_rows
            if copy is not None:
                copy.write(_COPY_TRAILER)
        return rows

    def transaction(self, name: str) -> PgTransaction:
        check_name(name, "table name")
        return PgTransaction(self, name)

    def _scan_partition(self, partition: Partition, *, columns: Sequence[str] | None = None,
                        batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """The table's rows ordered by key (the whole table is one partition)."""
        return self.scan(partition.table, columns=columns, batch_size=batch_size,
                         _order_by_key=True)

    def _where(self, info: TableInfo, filter: FilterLike) -> tuple[sql.Composable, list[Any]]:
        f = self._bind_filter(info, filter)
        if f is None:
            return sql.SQL(""), []
        pred, params = compile_filter(f, info.schema)
        return sql.SQL(" WHERE ") + pred, params

    def delete(self, name: str, filter: FilterLike) -> int:
        info = self.table_info(name)
        if filter is None:
            raise StoreError(f"delete on table {name!r} needs a filter (use drop_table or "
                             "overwrite to remove every row)")
        where, params = self._where(info, filter)
        with self._translate(name, "delete"), self._connection() as conn:
            cur = conn.execute(sql.SQL("DELETE FROM {}").format(self._ident(name)) + where, params)
            return int(cur.rowcount)

    # ------------------------------------------------------------------ reads
    def count(self, name: str, filter: FilterLike = None) -> int:
        info = self.table_info(name)
        where, params = self._where(info, filter)
        with self._translate(name, "count"), self._connection() as conn:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self._ident(name))
                               + where, params).fetchone()
            return int(row[0])

    def _to_batch(self, rows: list[tuple[Any, ...]], fields: list[pa.Field]) -> pa.RecordBatch:
        cols = list(zip(*rows, strict=True)) if rows else [() for _ in fields]
        arrays = [_decode_column(list(c), f) for c, f in zip(cols, fields, strict=True)]
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))

    def scan(self, name: str, *, columns: Sequence[str] | None = None, filter: FilterLike = None,
             batch_size: int = 65_536, _order_by_key: bool = False) -> Iterator[pa.RecordBatch]:
        info = self.table_info(name)
        info.check_columns(columns)
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise InvalidOption(f"batch_size must be a positive integer, got {batch_size!r}")
        names = list(columns) if columns is not None else info.schema.names
        fields = [info.schema.field(c) for c in names]
        where, params = self._where(info, filter)
        select = sql.SQL(", ").join(map(sql.Identifier, names)) if names else sql.SQL("1")
        query = sql.SQL("SELECT {} FROM {}").format(select, self._ident(name)) + where
        if _order_by_key and info.key is not None:
            query += sql.SQL(" ORDER BY {}").format(sql.Identifier(info.key))
        with self._translate(name, "scan"), self._connection() as conn, conn.transaction():
            cur = self._cursor(conn, name=f"kindred_scan_{uuid.uuid4().hex}")
            cur.itersize = batch_size
            cur.execute(query, params)
            while True:
                rows = cur.fetchmany(batch_size)
                if not rows:
                    break
                yield self._to_batch([r[:len(names)] for r in rows], fields)
            cur.close()

    def search(self, name: str, query: Any, *, k: int = 10, vector_column: str | None = None,
               filter: FilterLike = None, columns: Sequence[str] | None = None,
               exact: bool = False, params: dict[str, Any] | None = None) -> pa.Table:
        info = self.table_info(name)
        vec, q, params = self._check_search(info, query, k, vector_column, params, _SEARCH_PARAMS)
        many = q.ndim == 2
        settings = self._search_settings(params, k)
        if columns is None:
            columns = [c for c in info.schema.names if c not in info.vectors]
        info.check_columns(columns)
        f = self._bind_filter(info, filter)
        where, wparams = (sql.SQL(""), []) if f is None else self._where(info, f)
        fields = [info.schema.field(c) for c in columns]
        dist = sql.SQL("{} {} %s::vector").format(sql.Identifier(vec.name), sql.SQL(_OPS[vec.metric]))
        select = sql.SQL(", ").join([*map(sql.Identifier, columns), dist])
        stmt = (sql.SQL("SELECT {} FROM {}").format(select, self._ident(name)) + where
                + sql.SQL(" ORDER BY {} LIMIT %s").format(dist))
        queries = list(q) if many else [q]
        pieces = []
        with self._translate(name, "search"), self._connection() as conn:
            for i, one in enumerate(queries):
                lit = _vector_literal(one)
                args = [lit, *wparams, lit, k]
                rows = self._run_search(conn, stmt, args, settings, exact, f is not None)
                if not exact and len(rows) < k:
                    # the index ran out of candidates (a selective filter, or k above the
                    # largest ef_search of 1000): exact search when more rows match
                    n = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self._ident(name))
                                     + where, wparams).fetchone()[0]
                    if n > len(rows):
                        rows = self._run_search(conn, stmt, args, settings, True, True)
                pieces.append((i, rows))
        return self._shape(pieces, fields, vec, many)

    @staticmethod
    def _search_settings(params: dict[str, Any], k: int) -> dict[str, str]:
        out: dict[str, str] = {}
        ef = params.get("ef_search", params.get("ef"))
        if ef is not None and (not isinstance(ef, int) or isinstance(ef, bool) or ef <= 0):
            raise InvalidOption(f"ef_search must be a positive integer, got {ef!r}")
        # HNSW returns at most ef_search rows: never ask for fewer than k
        out["hnsw.ef_search"] = str(min(max(ef or 40, k), 1000))
        if "probes" in params:
            probes = params["probes"]
            if not isinstance(probes, int) or isinstance(probes, bool) or probes <= 0:
                raise InvalidOption(f"probes must be a positive integer, got {probes!r}")
            out["ivfflat.probes"] = str(probes)
        return out

    def _run_search(self, conn: psycopg.Connection, stmt: sql.Composable, args: list[Any],
                    settings: dict[str, str], exact: bool, filtered: bool) -> list[tuple]:
        with conn.transaction():
            local = dict(settings)
            if exact:
                local["enable_indexscan"] = "off"
                local["enable_bitmapscan"] = "off"
            elif filtered and self._iterative:
                local["hnsw.iterative_scan"] = "strict_order"
                local["ivfflat.iterative_scan"] = "relaxed_order"
            for key, value in local.items():
                conn.execute("SELECT set_config(%s, %s, true)", [key, value])
            cur = self._cursor(conn)
            cur.execute(stmt, args)
            return cur.fetchall()

    @staticmethod
    def _shape(pieces: list[tuple[int, list[tuple]]], fields: list[pa.Field], vec: VectorColumn,
               many: bool) -> pa.Table:
        rows = [r for _, rs in pieces for r in rs]
        ncol = len(fields)
        cols = list(zip(*rows, strict=True)) if rows else [() for _ in range(ncol + 1)]
        arrays = [_decode_column(list(c), f) for c, f in zip(cols[:ncol], fields, strict=True)]
        d = np.asarray(cols[ncol], dtype=np.float64)
        if vec.metric is Metric.COSINE:
            d = 1.0 - d
        elif vec.metric is Metric.DOT:
            d = -d
        names = [f.name for f in fields]
        out = pa.table([*arrays, pa.array(d, pa.float64())],
                       names=[*names, vec.metric.result_column])
        if many:
            qi = np.repeat([i for i, _ in pieces], [len(rs) for _, rs in pieces]).astype(np.int64)
            out = out.append_column("query_index", pa.array(qi, pa.int64()))
        return out

    # ------------------------------------------------------------------ indexes
    def _indexes(self, conn: psycopg.Connection, name: str) -> list[tuple[str, str, list[str]]]:
        return conn.execute(
            "SELECT i.relname, am.amname, array_agg(a.attname::text ORDER BY k.ord) "
            "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "JOIN pg_am am ON am.oid = i.relam "
            "CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum "
            "WHERE n.nspname = %s AND t.relname = %s AND NOT x.indisprimary "
            "GROUP BY i.relname, am.amname ORDER BY i.relname", [self.schema, name]).fetchall()

    def _build_index(self, name: str, column: str, replace: bool, method: str,
                     definition: sql.Composable, with_: sql.Composable) -> None:
        ix = _index_name(name, column)
        with self._translate(name, "creating an index"), self._connection() as conn, \
                conn.transaction():
            existing = [r[0] for r in self._indexes(conn, name) if r[2] == [column]
                        and (r[1] in ("hnsw", "ivfflat")) == (method in ("hnsw", "ivfflat"))]
            if existing and not replace:
                raise StoreError(f"table {name!r}: column {column!r} already has an index "
                                 f"({existing[0]}); pass replace=True to rebuild it")
            for old in existing:
                conn.execute(sql.SQL("DROP INDEX {}").format(self._ident(old)))
            conn.execute(sql.SQL("CREATE INDEX {} ON {} USING {} ({}){}").format(
                sql.Identifier(ix), self._ident(name), sql.SQL(method), definition, with_))

    def create_vector_index(self, name: str, column: str | None = None, *,
                            index_type: str | None = None, replace: bool = True,
                            **params: Any) -> None:
        info = self.table_info(name)
        vec = info.vector(column)
        index_type = (index_type or "HNSW").upper()
        if index_type not in INDEX_TYPES:
            raise InvalidOption(f"unknown index type {index_type!r} for pgvector; accepted: "
                                f"{', '.join(INDEX_TYPES)}")
        allowed = _INDEX_PARAMS[index_type]
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise InvalidOption(f"unknown {index_type} index parameter(s) {', '.join(unknown)}; "
                                f"accepted: {', '.join(sorted(allowed))}")
        for key, value in params.items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise InvalidOption(f"index parameter {key} must be a positive integer, "
                                    f"got {value!r}")
        if index_type == "IVFFLAT" and "lists" not in params:
            params["lists"] = max(1, int(np.sqrt(max(self.count(name), 1))))
        with_ = sql.SQL("")
        if params:
            with_ = sql.SQL(" WITH ({})").format(sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.SQL(k), sql.Literal(int(v)))  # checked ints
                for k, v in sorted(params.items())))
        definition = sql.SQL("{} {}").format(sql.Identifier(vec.name), sql.SQL(_OPCLASS[vec.metric]))
        self._build_index(name, vec.name, replace, index_type.lower(), definition, with_)

    def create_scalar_index(self, name: str, column: str, *, replace: bool = True) -> None:
        info = self.table_info(name)
        info.check_columns([column])
        if column in info.vectors:
            raise InvalidOption(f"table {name!r}: {column!r} is a vector column; use "
                                "create_vector_index")
        typ = info.schema.field(column).type
        method = "gin" if pa.types.is_list(typ) or pa.types.is_large_list(typ) else "btree"
        self._build_index(name, column, replace, method, sql.Identifier(column), sql.SQL(""))

    def list_indexes(self, name: str) -> list[IndexInfo]:
        info = self.table_info(name)
        with self._translate(name, "listing indexes"), self._connection() as conn:
            rows = self._indexes(conn, name)
        return [IndexInfo(name=r[0], columns=tuple(r[2]), index_type=r[1].upper(),
                          vector=any(c in info.vectors for c in r[2])) for r in rows]

    def optimize(self, name: str) -> None:
        """VACUUM (ANALYZE) the table and sweep unreferenced content-addressed artifacts."""
        self.table_info(name)
        with self._translate(name, "optimize"), self._connection() as conn:
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(self._ident(name)))
        if name != ARTIFACT_TABLE:
            self.sweep_artifacts()

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()
