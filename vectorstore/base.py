"""The store interface every backend implements.

A store holds named tables. Each table has an Arrow schema, an optional key column (for
upserts and updates by key), zero or more vector columns (fixed-size float32 lists with a
dimension and a metric) and a JSON metadata dict owned by the layers above.

The meaning of a search result is the same on every backend: for ``cosine`` and ``dot`` the
result has a ``score`` column, a similarity where higher is closer (cosine similarity in
[-1, 1]; the inner product); for ``l2`` it has a ``distance`` column, the Euclidean distance
where lower is closer. Results are ordered closest first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeAlias, cast

import numpy as np
import pyarrow as pa

from . import artifacts as _artifacts
from . import store_helpers as _helpers
from .artifacts import ARTIFACT_GRACE, ARTIFACT_TABLE, CONTENT_ADDRESSED
from .filters import Filter
from .handle import StoreHandle
from .schema import Capabilities, MetadataPatch, TableInfo, VectorColumn
from .store_helpers import _check_positions, _sorted_positions, lookup_columns
from .table import Table
from .txn import Partition, StagedPartition, Transaction, WriteResult

WriteMode = Literal["append", "overwrite", "upsert", "insert_missing"]
Data: TypeAlias = pa.Table | pa.RecordBatchReader | pa.RecordBatch | Iterable[pa.RecordBatch]
FilterLike = Filter | str | None
# every scan is a generator, so closing it ends its read (on PostgreSQL, its transaction)
_Closable: TypeAlias = Generator[pa.RecordBatch, None, None]

__all__ = [
    "ARTIFACT_GRACE",
    "ARTIFACT_TABLE",
    "CONTENT_ADDRESSED",
    "Data",
    "FilterLike",
    "IndexInfo",
    "VectorStore",
    "VersionInfo",
    "WriteMode",
    "_check_positions",
    "_sorted_positions",
]


@dataclass(frozen=True)
class IndexInfo:
    name: str
    columns: tuple[str, ...]
    index_type: str
    vector: bool


@dataclass(frozen=True)
class VersionInfo:
    version: int
    timestamp: Any
    metadata: dict[str, Any]


class VectorStore(ABC):
    """A connection to one backend. Use it as a context manager or call :meth:`close`."""

    scheme: ClassVar[str] = ""
    capabilities: ClassVar[Capabilities] = Capabilities()

    # ------------------------------------------------------------------ tables
    @abstractmethod
    def create_table(
        self,
        name: str,
        schema: pa.Schema,
        *,
        key: str | None = None,
        vectors: Sequence[VectorColumn] = (),
        metadata: dict[str, Any] | None = None,
        exist_ok: bool = False,
        data: Data | None = None,
    ) -> TableInfo:
        """Create a table; vector columns not in ``schema`` are appended to it. With ``data``
        the table is created holding those rows, in one commit (a failure leaves no table)."""

    def replace_table(self, name: str, schema: pa.Schema, *, key: str | None = None,
                      vectors: Sequence[VectorColumn] = (),
                      metadata: dict[str, Any] | None = None,
                      data: Data | None = None) -> TableInfo:
        """Replace table ``name`` (if there is one) by a new table holding ``data``.

        One commit where the backend can (LanceDB: an overwrite version of the same table,
        so its history stays); here, the default, the old table is dropped first, so a kill
        in between leaves no table until the step is run again."""
        self.drop_table(name, missing_ok=True)
        return self.create_table(name, schema, key=key, vectors=vectors, metadata=metadata,
                                 data=data)

    @abstractmethod
    def table_info(self, name: str) -> TableInfo:
        """Schema, key, vector columns and metadata of a table (TableNotFound if absent)."""

    @abstractmethod
    def list_tables(self) -> list[str]: ...

    @abstractmethod
    def drop_table(self, name: str, *, missing_ok: bool = False) -> None: ...

    def has_table(self, name: str) -> bool:
        return name in self.list_tables() or name in self._hidden_tables()

    def table(self, name: str) -> Table:
        """A handle on table ``name`` (:class:`vectorstore.table.Table`): the common operations
        without repeating the name, and the description cached per table version (read
        again only when it changed). TableNotFound if there is no such table."""
        handle = Table(self, name)
        handle.info  # noqa: B018 (read now: a missing table fails here, not later)
        return handle

    def _description_token(self, name: str) -> object | None:
        """A cheap value that changes whenever table ``name``'s description may have
        changed (TableNotFound if the table is gone); None when the backend has none, and
        :class:`~vectorstore.table.Table` then reads the description every time. This
        default: the table version on backends that keep versions."""
        if self.capabilities.versions:
            return self.version(name)
        return None

    def set_metadata(self, name: str, updates: MetadataPatch) -> TableInfo:
        """Patch the table's metadata in one commit: ``{"key": value}`` replaces a top-level
        key, ``{("a", "b"): value}`` one entry of a nested dict; None removes. Merged with
        the description committed at that moment, so concurrent patches of other keys or
        paths are kept (see :func:`vectorstore.schema.patch_metadata`)."""
        with self.transaction(name) as tx:
            tx.set_metadata(updates)
        return self.table_info(name)

    def add_columns(
        self, name: str, fields: Sequence[pa.Field], *, vectors: Sequence[VectorColumn] = ()
    ) -> TableInfo:
        """Add nullable columns (existing rows get nulls) and vector columns, in one commit."""
        with self.transaction(name) as tx:
            tx.add_columns(fields, vectors=vectors)
        return self.table_info(name)

    def drop_columns(self, name: str, columns: Sequence[str]) -> TableInfo:
        """Remove columns (their values and any vector entry) in one commit; the key column
        cannot go."""
        from .errors import UnsupportedOperation

        raise UnsupportedOperation(f"the {self.scheme} backend cannot drop columns")

    @staticmethod
    def _columns_to_drop(info: TableInfo, columns: Sequence[str]) -> list[str]:
        return _helpers.columns_to_drop(info, columns)

    # ------------------------------------------------------------------ data
    def write(self, name: str, data: Data, *, mode: WriteMode = "append",
              touch: dict[str, Any] | None = None) -> WriteResult:
        """Write record batches in one atomic commit: all of them or, on error, none.

        ``append`` adds rows (new keys only); ``overwrite`` replaces all rows; ``upsert`` is a
        partial upsert: a matched key gets only the columns present in ``data`` (the others,
        vectors included, keep their values; a row whose given columns already hold these
        values is counted ``unchanged`` and not rewritten) and a new key is inserted with the
        missing columns null; ``insert_missing`` inserts new keys and leaves existing ones
        untouched (counted ``unchanged``). Data is cast to the table's schema. ``touch``:
        constant column values set on the rows the write inserts or changes, and on no other
        (:meth:`Transaction.write`).
        """
        with self.transaction(name) as tx:
            pending = tx.write(data, mode=mode, touch=touch)
        assert pending.result is not None
        return pending.result

    def update(self, name: str, data: Data, *, key: str | None = None,
               touch: dict[str, Any] | None = None) -> int:
        """Set the columns present in ``data`` on the rows whose key matches; others untouched.

        Returns the number of rows matched (rows already holding the values included). Keys
        that are not in the table are an error. One commit. ``touch``: as in :meth:`write`.
        """
        with self.transaction(name) as tx:
            pending = tx.update(data, key=key, touch=touch)
        assert pending.result is not None
        return pending.result.updated + pending.result.unchanged

    # ------------------------------------------------------------------ staged steps
    @abstractmethod
    def transaction(self, name: str) -> Transaction:
        """A staged step on ``name``: use as ``with store.transaction(name) as tx:``; the
        block's writes become visible in one commit when it ends, none if it raises (see
        :mod:`vectorstore.txn`). Raises ConcurrentWriteError, writing nothing, when another
        writer's change cannot be combined with the step's."""

    def partitions(self, name: str) -> list[Partition]:
        """The parts of the table that can be staged independently (one on backends without
        partitions)."""
        return [Partition(name, 0, None, self.count(name))]

    def scan_partition(self, partition: Partition, *, columns: Sequence[str] | None = None,
                       batch_size: int = 65_536, rows: np.ndarray | Sequence[int] | None = None
                       ) -> Iterator[pa.RecordBatch]:
        """The rows of one partition in a stable order (the order staged data aligns to): all
        of them, or only the scan positions in ``rows`` (ascending, duplicates ignored).

        Backends implement :meth:`_scan_partition`; ``rows`` is served by reading the
        partition and keeping those positions unless the backend overrides
        :meth:`_take_partition` with random access."""
        if rows is None:
            return self._scan_partition(partition, columns=columns, batch_size=batch_size)
        pos = _sorted_positions(rows)
        _check_positions(partition.table, pos, partition.rows)
        return self._take_partition(partition, pos, columns=columns, batch_size=batch_size)

    def _scan_partition(self, partition: Partition, *, columns: Sequence[str] | None = None,
                        batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        from .errors import UnsupportedOperation

        raise UnsupportedOperation(f"the {self.scheme} backend cannot scan partitions")

    def _take_partition(self, partition: Partition, positions: np.ndarray, *,
                        columns: Sequence[str] | None, batch_size: int
                        ) -> Iterator[pa.RecordBatch]:
        """The rows at ``positions`` (sorted) of a partition's scan, streamed."""
        start = 0
        with contextlib.closing(cast(_Closable, self._scan_partition(partition, columns=columns,
                                                                 batch_size=batch_size))) as scan:
            for batch in scan:
                stop = start + batch.num_rows
                lo, hi = np.searchsorted(positions, [start, stop])
                if hi > lo:
                    yield batch.take(pa.array(positions[lo:hi] - start))
                start = stop
                if hi == positions.size:
                    break

    def stage_partition(self, partition: Partition, data: Data, *,
                        rows: np.ndarray | Sequence[int] | None = None,
                        info: TableInfo | None = None) -> StagedPartition:
        """Write (not commit) column values for one partition, aligned with
        :meth:`scan_partition` (all rows, or the scan positions in ``rows``); the result is
        attached to a transaction with ``tx.attach``. ``info`` is the transaction's
        ``tx.info`` when columns it adds are staged (their types and vector dimensions)."""
        from .errors import UnsupportedOperation

        raise UnsupportedOperation(f"the {self.scheme} backend stages partitions only inside "
                                   "a transaction")

    def worker_handle(self) -> StoreHandle:
        """A picklable handle another process opens this store with
        (:func:`vectorstore.handle.open_handle`), for runners whose workers scan and stage
        partitions themselves. Backends without partitions raise UnsupportedOperation."""
        from .errors import UnsupportedOperation

        raise UnsupportedOperation(f"the {self.scheme} backend cannot be opened by "
                                   "distributed workers (it has no partitions)")

    def lookup(self, name: str, keys: pa.Array, *, columns: Sequence[str] | None = None,
               key: str | None = None) -> pa.Table:
        """The rows whose ``key`` column (default: the table's key) holds one of ``keys``, for
        insert-if-absent checks of a batch against the table without reading every key.
        Uses the column's scalar index where the backend has one."""
        from .filters import In

        info = self.table_info(name)
        key, cols = lookup_columns(info, key, columns)
        values = [v for v in pa.array(keys).unique().to_pylist() if v is not None]
        parts = [self.to_arrow(name, columns=cols, filter=In(key, tuple(values[i:i + 4096])))
                 for i in range(0, len(values), 4096)]
        if not parts:
            return pa.table({c: pa.array([], info.schema.field(c).type) for c in cols})
        return pa.concat_tables(parts)

    def null_count(self, name: str, column: str) -> int:
        """Rows whose ``column`` is null, e.g. customers a vector column has not embedded yet."""
        from .filters import IsNull

        self.table_info(name).check_columns([column])
        return self.count(name, IsNull(column))

    @abstractmethod
    def scan(
        self,
        name: str,
        *,
        columns: Sequence[str] | None = None,
        filter: FilterLike = None,
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        """Stream the rows (optionally filtered) as record batches of at most ``batch_size``."""

    def to_arrow(
        self, name: str, *, columns: Sequence[str] | None = None, filter: FilterLike = None
    ) -> pa.Table:
        """Read rows into one Arrow table (for small tables and tests; prefer :meth:`scan`)."""
        batches = list(self.scan(name, columns=columns, filter=filter))
        if batches:
            return pa.Table.from_batches(batches)
        schema = self.table_info(name).schema
        if columns is not None:
            schema = pa.schema([schema.field(c) for c in columns])
        return schema.empty_table()

    def take(self, name: str, positions: np.ndarray | Sequence[int], *,
             columns: Sequence[str] | None = None) -> pa.Table:
        """The rows at these 0-based positions of the table's scan order, in ascending position
        order (for seeded samples of large tables). Positions are not stable across writes.

        This default streams the table once and keeps the chosen rows; backends with random
        access override it.
        """
        info = self.table_info(name)
        info.check_columns(columns)
        pos = _sorted_positions(positions)
        _check_positions(name, pos, self.count(name))
        kept, start = [], 0
        with contextlib.closing(cast(_Closable, self.scan(name, columns=columns))) as scan:
            for batch in scan:
                stop = start + batch.num_rows
                lo, hi = np.searchsorted(pos, [start, stop])
                if hi > lo:
                    kept.append(batch.take(pa.array(pos[lo:hi] - start)))
                start = stop
                if hi == pos.size:
                    break
        if kept:
            return pa.Table.from_batches(kept)
        schema = info.schema if columns is None else pa.schema([info.schema.field(c) for c in columns])
        return schema.empty_table()

    @abstractmethod
    def search(
        self,
        name: str,
        query: np.ndarray | Sequence[float] | Sequence[Sequence[float]],
        *,
        k: int = 10,
        vector_column: str | None = None,
        filter: FilterLike = None,
        columns: Sequence[str] | None = None,
        exact: bool = False,
        params: dict[str, Any] | None = None,
    ) -> pa.Table:
        """Nearest rows to one query vector (shape ``(d,)``) or to many (shape ``(n, d)``).

        Returns the requested ``columns`` (default: every non-vector column) plus ``score``
        (cosine, dot: similarity, higher is closer) or ``distance`` (l2), closest first; with
        many queries, also ``query_index``. The filter is applied before top-k, so ``k`` rows
        come back whenever ``k`` rows match. ``exact=True`` ignores any ANN index; ``params``
        are backend ANN knobs (LanceDB: nprobes, refine_factor, ef; pgvector: ef_search).
        """

    @abstractmethod
    def delete(self, name: str, filter: FilterLike) -> int:
        """Delete the rows matching ``filter``; returns how many were deleted."""

    @abstractmethod
    def count(self, name: str, filter: FilterLike = None) -> int: ...

    # ------------------------------------------------------------------ indexes & maintenance
    @abstractmethod
    def create_vector_index(
        self,
        name: str,
        column: str | None = None,
        *,
        index_type: str | None = None,
        replace: bool = True,
        **params: Any,
    ) -> None:
        """Build an approximate-nearest-neighbour index on a vector column."""

    @abstractmethod
    def create_scalar_index(self, name: str, column: str, *, replace: bool = True) -> None: ...

    @abstractmethod
    def list_indexes(self, name: str) -> list[IndexInfo]: ...

    def prewarm(self, name: str) -> None:
        """Load the table's indexes into memory ahead of queries, so the first searches of a
        long-running process do not pay for reading them (a hint: backends without an index
        cache do nothing). Costs about the indexes' size in memory."""
        self.table_info(name)

    @abstractmethod
    def optimize(self, name: str) -> None:
        """Compact storage and bring indexes up to date with new rows."""

    def versions(self, name: str) -> list[VersionInfo]:
        from .errors import UnsupportedOperation

        raise UnsupportedOperation(f"the {self.scheme} backend does not keep table versions")

    def version(self, name: str) -> int:
        from .errors import UnsupportedOperation

        raise UnsupportedOperation(f"the {self.scheme} backend does not keep table versions")

    def data_version(self, name: str) -> str:
        """A token that changes whenever the table's rows or columns change, and only then
        (not on metadata patches or index builds, which also make new versions): for caches
        and "anything written since?" checks. Backends with versions only."""
        from .errors import UnsupportedOperation

        raise UnsupportedOperation(f"the {self.scheme} backend does not keep table versions")

    def restore(self, name: str, version: int) -> None:
        from .errors import UnsupportedOperation

        raise UnsupportedOperation(f"the {self.scheme} backend does not keep table versions")

    # ------------------------------------------------------------------ artifacts
    # Fitted state (embedder transforms, detectors) is kept in the store beside the tables, as
    # bytes with a sha256, in one reserved table. Readers get bytes back only after the digest
    # matches; deserialising them safely is the caller's job.

    def put_artifact(self, name: str, data: bytes, metadata: dict[str, Any] | None = None) -> str:
        """Store ``data`` under ``name`` (replacing it); returns its sha256 hex digest."""
        return _artifacts.put_artifact(self, name, data, metadata)

    def get_artifact(self, name: str) -> tuple[bytes, dict[str, Any]]:
        """The bytes and metadata stored under ``name``, after checking their sha256 (and,
        with ``KINDRED_ARTIFACT_KEY`` set, their HMAC: :mod:`vectorstore.sealing`)."""
        return _artifacts.get_artifact(self, name)

    def copy_artifacts(self, source: VectorStore, names: Sequence[str] | None = None
                       ) -> list[str]:
        """Copy artifacts from ``source`` (all, or ``names``) exactly as stored there: bytes,
        metadata, HMAC and whether they are content-addressed (swept when unreferenced);
        each is verified on the way (sha256, and the HMAC when the key is set). One commit:
        a failure or a kill copies none. Returns the names copied."""
        return _artifacts.copy_artifacts(self, source, names)

    def _artifact_record(self, name: str) -> tuple[bytes, dict[str, Any], str]:
        """Bytes, stored metadata and sha256 of an artifact, verified (see get_artifact)."""
        return _artifacts.artifact_record(self, name)

    def save_artifact(self, prefix: str, data: bytes, metadata: dict[str, Any] | None = None
                      ) -> str:
        """Store ``data`` under a name derived from its content, ``<prefix>.<sha256[:16]>``,
        and return the name. The same bytes give the same name and write nothing again.

        Write it before the commit that references it (its name in the table's metadata):
        a step killed in between leaves at most an artifact nothing mentions, which
        :meth:`sweep_artifacts` removes later.
        """
        return _artifacts.save_artifact(self, prefix, data, metadata)

    def list_artifacts(self) -> list[str]:
        return _artifacts.list_artifacts(self)

    def delete_artifact(self, name: str) -> None:
        _artifacts.delete_artifact(self, name)

    def sweep_artifacts(self, *, grace: dt.timedelta = ARTIFACT_GRACE) -> list[str]:
        """Delete content-addressed artifacts (:meth:`save_artifact`) that no table's
        description mentions and that are older than ``grace`` (steps in flight write their
        artifact before the commit that references it). Returns the names deleted."""
        return _artifacts.sweep_artifacts(self, grace=grace)

    def _artifact_table(self) -> None:
        _artifacts.artifact_table(self)

    def _hidden_tables(self) -> list[str]:
        """Reserved tables (names starting with ``_kindred``) that list_tables leaves out."""
        return []

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release connections; the store is unusable afterwards."""

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers for backends
    def _check_search(self, info: TableInfo, query: Any, k: int, vector_column: str | None,
                      params: dict[str, Any] | None, accepted: set[str],
                      ) -> tuple[VectorColumn, np.ndarray, dict[str, Any]]:
        """Validate a search call: the vector column, the query's shape and values, k, params.

        Returns the column, the query as float32 (1-D or 2-D) and a copy of the params.
        """
        return _helpers.check_search(self.scheme, info, query, k, vector_column, params, accepted)

    def _update_data(self, info: TableInfo, data: Data, key: str | None,
                     ) -> tuple[str, pa.Table | None]:
        """The key column and the update's rows cast to the table schema (only the columns
        given, keys unique and not null), or None when there is nothing to set."""
        return _helpers.update_data(info, data, key)

    def _bind_filter(self, info: TableInfo, filter: FilterLike) -> Filter | None:
        return _helpers.bind_filter(info, filter)

