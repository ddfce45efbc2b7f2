"""A handle on one table: ``store.table(name)``, so ``(store, name)`` need not travel together.

The handle keeps the table's description (:class:`~vectorstore.schema.TableInfo`) and reads
it again only when the table's description token changes
(:meth:`VectorStore._description_token`: the Lance version, the catalogue row's version on
PostgreSQL, the catalogue row's write time on Milvus), so asking a handle for its schema, key,
vector columns or metadata many times costs one cheap check each instead of reading and
decoding the description. A change by any writer (this process or another) changes the
token, so the handle never serves a description older than the table's.

The common operations are delegated to the store with the name filled in; the store's
``(store, name)`` methods keep working unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .names import check_name
from .schema import MetadataPatch, TableInfo, VectorColumn

if TYPE_CHECKING:
    from .base import Data, FilterLike, IndexInfo, VectorStore, WriteMode
    from .txn import Partition, Transaction, WriteResult

__all__ = ["Table"]


class Table:
    """One table of a store (see the module docstring). Cheap to make; thread-safe."""

    def __init__(self, store: VectorStore, name: str) -> None:
        self.store = store
        self.name = check_name(name, "table name")
        self._lock = threading.Lock()
        self._token: object = None
        self._info: TableInfo | None = None
        self.reads = 0
        """How many times the handle read the description (for tests and diagnostics)."""

    def __repr__(self) -> str:
        return f"Table({self.store!r}, {self.name!r})"

    # ------------------------------------------------------------------ the description
    @property
    def info(self) -> TableInfo:
        """The table's description, read again only when its token changed (TableNotFound if
        the table is gone)."""
        token = self.store._description_token(self.name)
        with self._lock:
            if token is not None and self._info is not None and token == self._token:
                return self._info
        # the token is read before the description: a change in between makes the next
        # check read again, never keeps a stale description
        info = self.store.table_info(self.name)
        with self._lock:
            self._info, self._token = info, token
            self.reads += 1
        return info

    def refresh(self) -> TableInfo:
        """Forget the cached description and read it now."""
        with self._lock:
            self._info = None
        return self.info

    @property
    def schema(self) -> pa.Schema:
        return self.info.schema

    @property
    def key(self) -> str | None:
        return self.info.key

    @property
    def vectors(self) -> dict[str, VectorColumn]:
        return self.info.vectors

    @property
    def metadata(self) -> dict[str, Any]:
        return self.info.metadata

    def exists(self) -> bool:
        return self.store.has_table(self.name)

    # ------------------------------------------------------------------ reads
    def count(self, filter: FilterLike = None) -> int:
        return self.store.count(self.name, filter)

    def null_count(self, column: str) -> int:
        return self.store.null_count(self.name, column)

    def scan(self, *, columns: Sequence[str] | None = None, filter: FilterLike = None,
             batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        return self.store.scan(self.name, columns=columns, filter=filter, batch_size=batch_size)

    def to_arrow(self, *, columns: Sequence[str] | None = None,
                 filter: FilterLike = None) -> pa.Table:
        return self.store.to_arrow(self.name, columns=columns, filter=filter)

    def take(self, positions: np.ndarray | Sequence[int], *,
             columns: Sequence[str] | None = None) -> pa.Table:
        return self.store.take(self.name, positions, columns=columns)

    def lookup(self, keys: pa.Array, *, columns: Sequence[str] | None = None,
               key: str | None = None) -> pa.Table:
        return self.store.lookup(self.name, keys, columns=columns, key=key)

    def search(self, query: Any, *, k: int = 10, vector_column: str | None = None,
               filter: FilterLike = None, columns: Sequence[str] | None = None,
               exact: bool = False, params: dict[str, Any] | None = None) -> pa.Table:
        return self.store.search(self.name, query, k=k, vector_column=vector_column,
                                 filter=filter, columns=columns, exact=exact, params=params)

    def partitions(self) -> list[Partition]:
        return self.store.partitions(self.name)

    # ------------------------------------------------------------------ writes
    def transaction(self) -> Transaction:
        return self.store.transaction(self.name)

    def write(self, data: Data, *, mode: WriteMode = "append",
              touch: dict[str, Any] | None = None) -> WriteResult:
        return self.store.write(self.name, data, mode=mode, touch=touch)

    def update(self, data: Data, *, key: str | None = None,
               touch: dict[str, Any] | None = None) -> int:
        return self.store.update(self.name, data, key=key, touch=touch)

    def delete(self, filter: FilterLike) -> int:
        return self.store.delete(self.name, filter)

    def set_metadata(self, updates: MetadataPatch) -> TableInfo:
        return self.store.set_metadata(self.name, updates)

    def add_columns(self, fields: Sequence[pa.Field], *,
                    vectors: Sequence[VectorColumn] = ()) -> TableInfo:
        return self.store.add_columns(self.name, fields, vectors=vectors)

    def drop_columns(self, columns: Sequence[str]) -> TableInfo:
        return self.store.drop_columns(self.name, columns)

    # ------------------------------------------------------------------ indexes & upkeep
    def create_vector_index(self, column: str | None = None, *, index_type: str | None = None,
                            replace: bool = True, **params: Any) -> None:
        self.store.create_vector_index(self.name, column, index_type=index_type,
                                       replace=replace, **params)

    def create_scalar_index(self, column: str, *, replace: bool = True) -> None:
        self.store.create_scalar_index(self.name, column, replace=replace)

    def list_indexes(self) -> list[IndexInfo]:
        return self.store.list_indexes(self.name)

    def prewarm(self) -> None:
        self.store.prewarm(self.name)

    def optimize(self) -> None:
        self.store.optimize(self.name)
