"""The PostgreSQL + pgvector backend: ordinary tables with ``vector(d)`` columns in one schema.

``store`` (the store: tables, writes, reads, search, indexes), ``txn`` (the staged
transaction), ``connections`` (pool, set-up, error translation), ``catalog`` (table
descriptions), ``types`` (the Arrow -> PostgreSQL type map), ``codec`` (binary COPY),
``decode`` (binary results to Arrow), ``filter`` (filters to parameterised SQL).
"""

from .codec import encode_copy_rows
from .connections import CATALOG, PgConnections
from .filter import compile_filter, plain_pg_type
from .store import INDEX_TYPES, PgVectorStore
from .txn import PgTransaction
from .types import SUPPORTED_TYPES, pg_type

__all__ = [
    "CATALOG",
    "INDEX_TYPES",
    "SUPPORTED_TYPES",
    "PgConnections",
    "PgTransaction",
    "PgVectorStore",
    "compile_filter",
    "encode_copy_rows",
    "pg_type",
    "plain_pg_type",
]
