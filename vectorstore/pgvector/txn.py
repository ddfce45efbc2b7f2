"""The PostgreSQL transaction: stage into temporary tables, apply in one SQL transaction.

While the step runs its rows are copied (binary COPY) into temporary tables of one pooled
connection, so the target table is neither locked nor changed. The commit is one SQL
transaction: the description row is locked (``FOR UPDATE``: description changes of two
writers are serialised and merged, never lost), new columns are added, each staged write is
applied, and the description is saved. An exception or a killed process rolls it all back;
the temporary tables end with the session.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from psycopg import errors as pgerr
from psycopg import sql

from ..errors import ConcurrentWriteError, KeyConflict
from ..faults import fault_point
from ..schema import TableInfo
from ..txn import KeyedTransaction, PendingWrite, WriteResult
from .types import pg_type

if TYPE_CHECKING:
    from .store import PgVectorStore


class PgTransaction(KeyedTransaction):
    """One staged step on a PostgreSQL table (see the module docstring)."""

    backend_name = "PostgreSQL"

    def __init__(self, store: PgVectorStore, name: str) -> None:
        super().__init__(store, name, store.table_info(name))
        self._pg = store
        self._cm: Any = store._connection()
        self.conn = self._cm.__enter__()
        self.staged: list[tuple[PendingWrite, sql.Identifier, list[str], int]] = []

    # ------------------------------------------------------------------ staging
    def _check_type(self, f: pa.Field) -> None:
        pg_type(f, self.name)

    def _temp(self, info: TableInfo, columns: Sequence[str]) -> sql.Identifier:
        ident = sql.Identifier(f"_kindred_stage_{uuid.uuid4().hex}")
        cols = sql.SQL(", ").join(sql.SQL("{} {}").format(
            sql.Identifier(c), sql.SQL(pg_type(info.schema.field(c), self.name)))
            for c in columns)
        self.conn.execute(sql.SQL("CREATE TEMP TABLE {} ({})").format(ident, cols))
        return ident

    def _stage_rows(self, pending: PendingWrite, data: Any) -> None:
        info = self.info
        batches = self._conformed(pending, data)
        first = next(batches, None)
        if first is None:
            pending.result = WriteResult(0)
            self.staged.append((pending, sql.Identifier("_none"), [], 0))
            return
        cols = first.schema.names
        self._check_staged(pending, cols)
        ident = self._temp(info, cols)

        def all_batches() -> Iterator[pa.RecordBatch]:
            yield first
            yield from batches

        with self._pg._translate(self.name, "staging"):
            n = self._pg._copy(self.conn, info, ident, all_batches())
        self.staged.append((pending, ident, cols, n))

    def _staged_columns(self, pending: PendingWrite) -> tuple[str, ...]:
        return tuple(self.staged[-1][2])

    # ------------------------------------------------------------------ commit
    def _commit(self) -> None:
        try:
            self._apply()
        finally:
            self._release()

    def _apply(self) -> None:
        pg, conn = self._pg, self.conn
        table = pg._ident(self.name)
        with pg._translate(self.name, "commit"), conn.transaction():
            raw = conn.execute(sql.SQL("SELECT description FROM {} WHERE name = %s FOR UPDATE")
                               .format(pg._ident("_kindred_catalog")), [self.name]).fetchone()
            if raw is None:
                raise ConcurrentWriteError(f"table {self.name!r} was dropped by another writer "
                                           "while this step ran; nothing was written")
            current = pg._info_from(self.name, raw[0])
            for f in self.new_fields:
                if f.name in current.schema.names:
                    raise ConcurrentWriteError(
                        f"table {self.name!r}: column {f.name!r} was added by another writer "
                        "while this step ran; nothing was written")
                conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN {} {}").format(
                    table, sql.Identifier(f.name), sql.SQL(pg_type(f, self.name))))
            for pending, ident, cols, n in self.staged:
                if cols:
                    pending.result = self._apply_one(pending, table, ident, cols, n)
            vectors = dict(current.vectors)
            vectors.update({v.name: v for v in self.new_vectors})
            new = TableInfo(self.name, pa.schema(list(current.schema) + self.new_fields),
                            current.key, vectors, current.metadata)
            for p in self.patches:
                new = new.with_metadata(p)
            if new != current:
                pg._save_description(conn, new)
            fault_point("commit", self.name)
        fault_point("committed", self.name)

    def _apply_one(self, pending: PendingWrite, table: sql.Composable, stage: sql.Identifier,
                   cols: list[str], n: int) -> WriteResult:
        mode = pending.mode
        conn, key = self.conn, self.info.key
        # touched columns: bound constants, inserted with new rows and set on changed ones
        touched = list(pending.touch)
        params = [pending.touch[c] for c in touched]
        consts = [sql.SQL("CAST(%s AS {})").format(
            sql.SQL(pg_type(self.info.schema.field(c), self.name))) for c in touched]
        into = sql.SQL(", ").join(map(sql.Identifier, [*cols, *touched]))
        values = sql.SQL(", ").join([*map(sql.Identifier, cols), *consts])
        if mode == "overwrite":
            conn.execute(sql.SQL("TRUNCATE {}").format(table))
        if mode in ("append", "overwrite") or key is None:
            try:
                cur = conn.execute(sql.SQL("INSERT INTO {t} ({i}) SELECT {v} FROM {s}").format(
                    t=table, i=into, v=values, s=stage), params)
            except pgerr.UniqueViolation as exc:
                detail = f" ({exc.diag.message_detail})" if exc.diag.message_detail else ""
                raise KeyConflict(f"table {self.name!r}: a key to append is already in the "
                                  f"table{detail}; append adds new keys only, use "
                                  "mode='upsert'") from exc
            return WriteResult(inserted=int(cur.rowcount))
        k = sql.Identifier(key)
        others = [c for c in cols if c != key]
        if mode == "insert_missing" or (mode == "upsert" and not others):
            cur = conn.execute(sql.SQL("INSERT INTO {t} ({i}) SELECT {v} FROM {s} ON CONFLICT "
                                       "({k}) DO NOTHING").format(t=table, i=into, v=values,
                                                                  s=stage, k=k), params)
            return WriteResult(inserted=int(cur.rowcount), unchanged=n - int(cur.rowcount))
        mine = sql.SQL(", ").join(sql.SQL("x.{}").format(sql.Identifier(c)) for c in others)
        if mode == "upsert":
            theirs = sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c))
                                        for c in others)
            sets = sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
                                      for c in [*others, *touched])
            row = conn.execute(sql.SQL(
                "WITH r AS (INSERT INTO {t} AS x ({i}) SELECT {v} FROM {s} ON CONFLICT ({k}) DO "
                "UPDATE SET {u} WHERE ROW({m}) IS DISTINCT FROM ROW({e}) "
                "RETURNING (xmax = 0) AS inserted) "
                "SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) "
                "FROM r").format(t=table, i=into, v=values, s=stage, k=k, u=sets, m=mine,
                                 e=theirs), params).fetchone()
            assert row is not None  # an aggregate returns one row
            ins, upd = int(row[0]), int(row[1])
            return WriteResult(inserted=ins, updated=upd, unchanged=n - ins - upd)
        if mode == "update":  # every key must exist ("stage": rows deleted meanwhile are gone)
            row = conn.execute(sql.SQL(
                "SELECT count(*), (array_agg(s.{k}))[1] FROM {s} s WHERE NOT EXISTS "
                "(SELECT 1 FROM {t} x WHERE x.{k} = s.{k})").format(k=k, s=stage, t=table)
            ).fetchone()
            assert row is not None  # an aggregate returns one row
            if row[0]:
                raise KeyConflict(f"table {self.name!r}: {row[0]} key(s) to update are not in "
                                  f"the table, e.g. {key}={row[1]!r}")
        if not others:
            return WriteResult(0, 0, n)
        theirs = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in others)
        sets = sql.SQL(", ").join(
            [*(sql.SQL("{0} = s.{0}").format(sql.Identifier(c)) for c in others),
             *(sql.SQL("{} = ").format(sql.Identifier(c)) + v for c, v in zip(touched, consts,
                                                                              strict=True))])
        cur = conn.execute(sql.SQL(
            "UPDATE {t} x SET {u} FROM {s} s WHERE x.{k} = s.{k} AND ROW({m}) IS DISTINCT FROM "
            "ROW({e})").format(t=table, u=sets, s=stage, k=k, m=mine, e=theirs), params)
        upd = int(cur.rowcount)
        return WriteResult(0, upd, n - upd)

    def _discard(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._cm is None:
            return
        cm, self._cm = self._cm, None
        with contextlib.suppress(Exception):
            for _, ident, cols, _ in self.staged:
                if cols:
                    self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(ident))
        cm.__exit__(None, None, None)
