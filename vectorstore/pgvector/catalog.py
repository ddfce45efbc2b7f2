"""The pgvector backend's catalogue: one row per table in ``_kindred_catalog`` holding its
description (key, vector columns, metadata and the exact Arrow schema), read and saved here.
"""

from __future__ import annotations

import json

import psycopg
from psycopg import sql

from ..errors import TableNotFound
from ..names import check_name
from ..schema import TableInfo, VectorColumn
from .connections import CATALOG, PgConnections
from .reads import DescriptionCache
from .types import _schema_from_text, _schema_to_text


class PgCatalog:
    """Table descriptions of one store's schema, through its :class:`PgConnections`."""

    def __init__(self, db: PgConnections) -> None:
        self.schema = db.schema
        self._translate = db._translate
        self._connection = db._connection
        self._ident = db._ident
        self.cache = DescriptionCache()
        """Each table's last description read, by its catalogue row version (reads.py)."""

    def _description(self, conn: psycopg.Connection, name: str) -> str | None:
        row = conn.execute(sql.SQL("SELECT description FROM {} WHERE name = %s").format(
            self._ident(CATALOG)), [name]).fetchone()
        return None if row is None else str(row[0])

    def table_info(self, name: str) -> TableInfo:
        check_name(name, "table name")
        with self._translate(name, "reading the description"), self._connection() as conn:
            row = conn.execute(sql.SQL("SELECT xmin::text, description FROM {} WHERE name = %s"
                                       ).format(self._ident(CATALOG)), [name]).fetchone()
        if row is None:
            self.cache.forget(name)
            raise TableNotFound(f"table {name!r} does not exist in schema {self.schema!r}")
        info = self._info_from(name, str(row[1]))
        self.cache.put(name, str(row[0]), info)
        return info

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

    def _token(self, name: str) -> str | None:
        """The catalogue row's version (its ``xmin``: every save of the description writes a
        new row version), or None when the table has no row."""
        check_name(name, "table name")
        with self._translate(name, "reading the description version"), self._connection() as conn:
            row = conn.execute(sql.SQL("SELECT xmin::text FROM {} WHERE name = %s").format(
                self._ident(CATALOG)), [name]).fetchone()
        return None if row is None else str(row[0])
