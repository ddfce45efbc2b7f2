"""PostgreSQL + pgvector backend: one schema of ordinary tables with ``vector(d)`` columns.

Table descriptions (key, vector columns, metadata, and the exact Arrow schema) live in the
catalogue table ``_kindred_catalog`` of the store's schema, so a later ``connect`` finds what
the LanceDB backend would. Writes stream Arrow batches through binary ``COPY`` (the binary rows
are built column-wise with Arrow and numpy, not per row) inside one transaction; upserts go
through a temporary staging table and ``INSERT ... ON CONFLICT``. Searches use pgvector's
operators and report the store's one meaning of ``score`` / ``distance``.

The store holds a :class:`~vectorstore.pgvector.connections.PgConnections` (pool, set-up,
error translation) and a :class:`~vectorstore.pgvector.catalog.PgCatalog` (descriptions);
searches, counts, lookups and scans check the description they were planned with in their
own round trip (:mod:`~vectorstore.pgvector.reads`) instead of reading it first; the search
statements, the binary COPY codec, the decoders and the type map are modules of their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import errors as pgerr
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter

from ..base import ARTIFACT_TABLE, FilterLike, IndexInfo, VectorStore
from ..conform import conform
from ..errors import (
    InvalidOption,
    StoreError,
    TableExists,
    TableNotFound,
)
from ..faults import fault_point
from ..filters import In, IsNull
from ..names import check_name
from ..schema import Capabilities, Metric, TableInfo, VectorColumn, new_table_info
from ..store_helpers import check_index_params, check_options, lookup_columns
from ..txn import Partition
from .catalog import PgCatalog
from .codec import _COPY_ROWS, _COPY_SIGNATURE, _COPY_TRAILER, _check_text, encode_copy_rows
from .connections import CATALOG, PgConnections, _split_uri
from .decode import _decode_column
from .filter import compile_filter
from .reads import PipelinedReads, Read
from .search import plan_search, search_per_statement, search_read
from .txn import PgTransaction
from .types import pg_type

log = logging.getLogger(__name__)

INDEX_TYPES = ("HNSW", "IVFFLAT")
_OPTIONS = {"schema", "pool_min_size", "pool_max_size", "connect_timeout", "pool_timeout"}
_INDEX_PARAMS = {"HNSW": {"m", "ef_construction"}, "IVFFLAT": {"lists"}}
_OPCLASS = {Metric.COSINE: "vector_cosine_ops", Metric.DOT: "vector_ip_ops",
            Metric.L2: "vector_l2_ops"}


def _index_name(table: str, column: str) -> str:
    name = f"{table}_{column}_idx"
    if len(name) <= 63:
        return name
    return "kindred_idx_" + hashlib.sha256(f"{table}.{column}".encode()).hexdigest()[:24]


class PgVectorStore(VectorStore):
    """Tables in one PostgreSQL schema with pgvector (see :mod:`vectorstore.base`)."""

    scheme = "postgresql"
    capabilities = Capabilities(versions=False, ann_index=True, scalar_index=True,
                                prefilter=True, index_types=INDEX_TYPES)

    def __init__(self, uri: str, *, schema: str = "public", pool_min_size: int = 1,
                 pool_max_size: int = 5, connect_timeout: float = 10.0,
                 pool_timeout: float = 30.0) -> None:
        db = PgConnections(uri, schema=schema, pool_min_size=pool_min_size,
                           pool_max_size=pool_max_size, connect_timeout=connect_timeout,
                           pool_timeout=pool_timeout)
        self._db = db
        self._catalog = PgCatalog(db)
        self.schema = db.schema
        self.pgvector_version = db.pgvector_version
        self._iterative = db._iterative
        # the connection and catalogue operations the methods below (and PgTransaction) use
        self._redact = db._redact
        self._connection = db._connection
        self._ident = db._ident
        self._cursor = db._cursor
        self._translate = db._translate
        self._description = self._catalog._description
        self._info_from = self._catalog._info_from
        self._save_description = self._catalog._save_description
        self._catalog_names = self._catalog._catalog_names
        # searches, counts, lookups and scans check the cached description in their own
        # round trip (reads.py); False: read it first, as before (for the benchmark only)
        self._reads = PipelinedReads(self, self._catalog.cache)
        self._pipelined_reads = True

    @classmethod
    def open(cls, uri: str, **options: Any) -> PgVectorStore:
        check_options(options, _OPTIONS, "PostgreSQL")
        _, schema = _split_uri(uri)
        if schema is not None and "schema" in options and options["schema"] != schema:
            raise InvalidOption(f"schema given twice: {schema!r} in the URI and "
                                f"{options['schema']!r} as an option")
        if schema is not None:
            options["schema"] = schema
        return cls(uri, **options)

    def __repr__(self) -> str:
        return repr(self._db)

    def table_info(self, name: str) -> TableInfo:
        return self._catalog.table_info(name)

    def _description_token(self, name: str) -> object | None:
        token = self._catalog._token(name)
        if token is None:
            raise TableNotFound(f"table {name!r} does not exist in schema {self.schema!r}")
        return token

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
        columns: list[sql.Composable] = [sql.SQL("{} {}{}").format(
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
        self._catalog.cache.forget(name)

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
                assert copy is not None  # opened with the first batch
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
        return self._count(name, filter)

    def null_count(self, name: str, column: str) -> int:
        if not self._pipelined_reads:
            return super().null_count(name, column)
        return self._count(name, IsNull(column), check=column)

    def _count(self, name: str, filter: FilterLike, check: str | None = None) -> int:
        def plan(info: TableInfo) -> Read[int]:
            if check is not None:
                info.check_columns([check])
            where, params = self._where(info, filter)
            stmt = sql.SQL("SELECT count(*) FROM {}").format(self._ident(name)) + where
            return Read([(stmt, params)], lambda conn, rows: int(rows[0][0][0]))

        if self._pipelined_reads:
            return self._reads.read(name, "count", plan)
        planned = plan(self.table_info(name))
        with self._translate(name, "count"), self._connection() as conn:
            row = conn.execute(*planned.statements[0]).fetchone()
            assert row is not None  # count(*) returns one row
            return int(row[0])

    def lookup(self, name: str, keys: pa.Array, *, columns: Sequence[str] | None = None,
               key: str | None = None) -> pa.Table:
        if not self._pipelined_reads:
            return super().lookup(name, keys, columns=columns, key=key)
        values = [v for v in pa.array(keys).unique().to_pylist() if v is not None]

        def plan(info: TableInfo) -> Read[pa.Table]:
            k, cols = lookup_columns(info, key, columns)
            fields = [info.schema.field(c) for c in cols]
            select = sql.SQL("SELECT {} FROM {}").format(
                sql.SQL(", ").join(map(sql.Identifier, cols)), self._ident(name))
            stmts = []
            for i in range(0, len(values), 4096):  # as many values per statement as before
                where, params = self._where(info, In(k, tuple(values[i:i + 4096])))
                stmts.append((select + where, params))

            def finish(conn: psycopg.Connection, rows: list[list[tuple]]) -> pa.Table:
                if not rows:
                    return pa.table({f.name: pa.array([], f.type) for f in fields})
                return pa.Table.from_batches([self._to_batch(r, fields) for r in rows])

            return Read(stmts, finish)

        return self._reads.read(name, "lookup", plan)

    def _to_batch(self, rows: list[tuple[Any, ...]], fields: list[pa.Field]) -> pa.RecordBatch:
        cols = list(zip(*rows, strict=True)) if rows else [() for _ in fields]
        arrays = [_decode_column(list(c), f) for c, f in zip(cols, fields, strict=True)]
        return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))

    def scan(self, name: str, *, columns: Sequence[str] | None = None, filter: FilterLike = None,
             batch_size: int = 65_536, _order_by_key: bool = False) -> Iterator[pa.RecordBatch]:
        if not self._pipelined_reads:
            yield from self._scan(self.table_info(name), columns, filter, batch_size,
                                  _order_by_key)
            return
        check_name(name, "table name")
        with self._translate(name, "scan"), self._connection() as conn, \
                self._reads.snapshot(conn, name) as info:
            yield from self._scan_in(conn, info, columns, filter, batch_size, _order_by_key)

    def _scan(self, info: TableInfo, columns: Sequence[str] | None, filter: FilterLike,
              batch_size: int, order_by_key: bool) -> Iterator[pa.RecordBatch]:
        """The earlier scan path: its own transaction, the description read before."""
        with self._translate(info.name, "scan"), self._connection() as conn, conn.transaction():
            yield from self._scan_in(conn, info, columns, filter, batch_size, order_by_key)

    def _scan_in(self, conn: psycopg.Connection, info: TableInfo,
                 columns: Sequence[str] | None, filter: FilterLike, batch_size: int,
                 order_by_key: bool) -> Iterator[pa.RecordBatch]:
        """The rows through a server-side cursor, in the transaction open on ``conn``."""
        name = info.name
        info.check_columns(columns)
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise InvalidOption(f"batch_size must be a positive integer, got {batch_size!r}")
        names = list(columns) if columns is not None else info.schema.names
        fields = [info.schema.field(c) for c in names]
        where, params = self._where(info, filter)
        select = sql.SQL(", ").join(map(sql.Identifier, names)) if names else sql.SQL("1")
        query = sql.SQL("SELECT {} FROM {}").format(select, self._ident(name)) + where
        if order_by_key and info.key is not None:
            query += sql.SQL(" ORDER BY {}").format(sql.Identifier(info.key))
        cur = self._cursor(conn, name=f"kindred_scan_{uuid.uuid4().hex}")
        cur.itersize = batch_size
        cur.execute(query, params)
        while True:
            rows = cur.fetchmany(batch_size)
            if rows:
                yield self._to_batch([r[:len(names)] for r in rows], fields)
            if len(rows) < batch_size:  # the cursor is done: no empty fetch to learn it
                break
        cur.close()

    def search(self, name: str, query: Any, *, k: int = 10, vector_column: str | None = None,
               filter: FilterLike = None, columns: Sequence[str] | None = None,
               exact: bool = False, params: dict[str, Any] | None = None) -> pa.Table:
        def plan(info: TableInfo) -> Read[pa.Table]:
            return search_read(self, plan_search(self, info, query, k, vector_column, filter,
                                                 columns, exact, params))

        if self._pipelined_reads:
            return self._reads.read(name, "search", plan)
        return search_per_statement(self, plan_search(self, self.table_info(name), query, k,
                                                      vector_column, filter, columns, exact,
                                                      params), name)

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
        index_type = check_index_params("pgvector", index_type, "HNSW", _INDEX_PARAMS, params)
        if index_type == "IVFFLAT" and "lists" not in params:
            params["lists"] = max(1, int(np.sqrt(max(self.count(name), 1))))
        with_: sql.Composable = sql.SQL("")
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
        self._db.close()
