"""Staged steps: everything a step writes to one table becomes visible in one commit.

``with store.transaction(name) as tx:`` collects the parts of a step (new columns, rows
written by key, column values staged partition by partition, metadata patches) without
making any of them visible; leaving the block commits them together, an exception (or a
killed process) leaves the table exactly as it was. Nothing is ever undone by restoring a
version, so a failed step cannot erase another writer's work. Each backend implements the
staging and the one commit (:mod:`vectorstore.lance.txn`, :mod:`vectorstore.pgvector.txn`,
:mod:`vectorstore.milvus.txn`); the backends without partitions share
:class:`KeyedTransaction`.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import pyarrow as pa

from .conform import conform
from .errors import InvalidOption, KeyConflict, SchemaMismatch, UnsupportedOperation
from .faults import fault_point
from .names import check_name
from .schema import MetadataPatch, TableInfo, VectorColumn

if TYPE_CHECKING:
    from .base import Data, VectorStore

_log = logging.getLogger(__name__)
ROW_MODES = ("append", "upsert", "insert_missing", "update")


@dataclass(frozen=True)
class WriteResult:
    """Row counts of one write: rows inserted, rows updated (their given columns changed)
    and matched rows left as they were (given columns already equal, or ``insert_missing``
    keys already present)."""

    inserted: int
    updated: int = 0
    unchanged: int = 0

    @property
    def rows(self) -> int:
        return self.inserted + self.updated


@dataclass
class PendingWrite:
    """A row write staged in a transaction; ``result`` is set when the transaction commits.

    ``touch``: columns set to these constant values on the rows the write inserts or changes
    (never on rows it leaves as they were), e.g. a change stamp."""

    mode: str
    result: WriteResult | None = None
    touch: dict[str, Any] = field(default_factory=dict)

    def touch_arrays(self, info: TableInfo, n: int) -> dict[str, pa.Array]:
        """The touched columns as ``n``-row constant arrays of the table's types."""
        return {c: pa.nulls(n, info.schema.field(c).type) if v is None else
                pa.repeat(pa.scalar(v, info.schema.field(c).type), n)
                for c, v in self.touch.items()}


@dataclass(frozen=True)
class Partition:
    """One independently stageable part of a table: a Lance fragment at a table version, or
    the whole table on backends without partitions. Small and picklable."""

    table: str
    id: int
    version: int | None
    rows: int


@dataclass(frozen=True)
class StagedPartition:
    """The written, not yet committed, new column values of one partition (picklable).

    ``payload`` is backend-specific (Lance: fragment metadata and the ids its files use).
    """

    partition: Partition
    columns: tuple[str, ...]
    payload: Any = field(repr=False, default=None)


class Transaction(ABC):
    """The staged parts of one step on one table (see the module docstring)."""

    def __init__(self, store: VectorStore, name: str, base: TableInfo) -> None:
        self.store = store
        self.name = name
        self.base = base
        self.new_fields: list[pa.Field] = []
        self.new_vectors: list[VectorColumn] = []
        self.patches: list[MetadataPatch] = []
        self.writes: list[PendingWrite] = []
        self.version: int | None = None
        """The table version committed (None before the commit, or if nothing was written)."""
        self._closed = False

    # ------------------------------------------------------------------ description
    @property
    def info(self) -> TableInfo:
        """The table as this step will leave it: base description, staged columns, metadata."""
        vectors = dict(self.base.vectors)
        vectors.update({v.name: v for v in self.new_vectors})
        meta = self.base.metadata
        info = TableInfo(self.name, pa.schema(list(self.base.schema) + self.new_fields),
                         self.base.key, vectors, meta)
        for p in self.patches:
            info = info.with_metadata(p)
        return info

    def add_columns(self, fields: Sequence[pa.Field], *,
                    vectors: Sequence[VectorColumn] = ()) -> None:
        """Add nullable columns and vector columns (rows not given a value hold nulls)."""
        self._check_open()
        have = set(self.info.schema.names)
        new = [f.with_nullable(True) for f in list(fields) + [v.field() for v in vectors]]
        for f in new:
            check_name(f.name, "column name")
            if f.name in have:
                raise SchemaMismatch(f"table {self.name!r} already has a column {f.name!r}")
            have.add(f.name)
            self._check_type(f)
        self.new_fields += new
        self.new_vectors += list(vectors)

    def set_metadata(self, updates: MetadataPatch) -> None:
        """Patch the metadata (see :func:`vectorstore.schema.patch_metadata`); applied at commit
        time to the description committed then, so other writers' keys survive."""
        self._check_open()
        self.info.with_metadata(updates)  # fail now on a bad key or a value JSON cannot hold
        self.patches.append(dict(updates))

    # ------------------------------------------------------------------ rows by key
    def write(self, data: Data, *, mode: str = "upsert",
              touch: Mapping[str, Any] | None = None) -> PendingWrite:
        """Stage rows: ``append`` (new keys only), ``upsert`` (partial: matched keys get the
        given columns, new keys are inserted with the others null), ``insert_missing`` (new
        keys only, existing ones untouched) or ``overwrite`` (replace every row).

        ``touch`` maps columns to constant values set on every row this write inserts or
        changes, and on no other row (a row whose given columns already hold the values is
        left as it was, touched columns included): e.g. a change stamp. Touched columns
        exist in the table (or are added in this step) and are not among the data's."""
        self._check_open()
        if mode not in ("append", "upsert", "insert_missing", "overwrite"):
            raise InvalidOption(f"unknown write mode {mode!r}; expected append, overwrite, "
                                "upsert or insert_missing")
        if mode in ("upsert", "insert_missing") and self.info.key is None:
            raise KeyConflict(f"table {self.name!r} has no key column: {mode} needs one")
        pending = PendingWrite(mode, touch=self._check_touch(touch))
        self._stage_rows(pending, data)
        self.writes.append(pending)
        return pending

    def update(self, data: Data, *, key: str | None = None,
               touch: Mapping[str, Any] | None = None) -> PendingWrite:
        """Stage new values of the given columns for existing keys (unknown keys: KeyConflict);
        ``touch`` as in :meth:`write` (set on the rows whose values change)."""
        self._check_open()
        if key is not None and key != self.info.key:
            raise InvalidOption(f"table {self.name!r} is keyed by {self.info.key!r}: a staged "
                                f"update cannot match on {key!r}")
        if self.info.key is None:
            raise KeyConflict(f"table {self.name!r} has no key column: name one with key=")
        pending = PendingWrite("update", touch=self._check_touch(touch))
        self._stage_rows(pending, data)
        self.writes.append(pending)
        return pending

    def _check_touch(self, touch: Mapping[str, Any] | None) -> dict[str, Any]:
        out = dict(touch or {})
        info = self.info
        for c, v in out.items():
            if c not in info.schema.names:
                raise SchemaMismatch(f"table {self.name!r} has no column {c!r} to touch")
            if c == info.key or c in info.vectors:
                raise InvalidOption(f"table {self.name!r}: column {c!r} cannot be touched "
                                    "(the key and vector columns are set by the data)")
            if v is not None:
                try:
                    pa.scalar(v, info.schema.field(c).type)
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
                    raise SchemaMismatch(f"table {self.name!r}: {v!r} does not fit column "
                                         f"{c!r} ({info.schema.field(c).type}): {exc}") from None
        return out

    @staticmethod
    def _touch_conflict(pending: PendingWrite, names: Sequence[str], table: str) -> None:
        both = sorted(set(pending.touch) & set(names))
        if both:
            raise InvalidOption(f"table {table!r}: column(s) {both} are both in the data and "
                                "touched")

    # ------------------------------------------------------------------ partitions
    @abstractmethod
    def partitions(self) -> list[Partition]:
        """The partitions of the table as this step found it."""

    def scan(self, partition: Partition, *, columns: Sequence[str] | None = None,
             batch_size: int = 65_536, rows: np.ndarray | Sequence[int] | None = None
             ) -> Iterator[pa.RecordBatch]:
        """The rows of one partition, in the order :meth:`stage` aligns data to (all of them,
        or only the scan positions in ``rows``, in ascending order)."""
        return self.store.scan_partition(partition, columns=columns, batch_size=batch_size,
                                         rows=rows)

    def stage(self, partition: Partition, data: Data, *,
              rows: np.ndarray | Sequence[int] | None = None) -> StagedPartition:
        """Stage column values for one partition, aligned with :meth:`scan`'s rows (all of
        them, or the scan positions in ``rows``, ascending). Columns are existing ones
        (rewritten) or ones added with :meth:`add_columns`."""
        self._check_open()
        staged = self.store.stage_partition(partition, data, rows=rows, info=self.info)
        self.attach(staged)
        fault_point("stage", self.name)
        return staged

    @abstractmethod
    def attach(self, staged: StagedPartition) -> None:
        """Add a partition staged elsewhere (:meth:`VectorStore.stage_partition`)."""

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self._closed:
            return
        self._closed = True
        if exc_type is not None:
            try:
                self._discard()
            except Exception as err:  # the step's own error is the one to raise
                _log.warning("discarding the staged step on table %r failed: %s", self.name, err)
            return
        try:
            self._commit()
        except BaseException:
            try:
                self._discard()
            except Exception as err:
                _log.warning("discarding the staged step on table %r failed: %s", self.name,
                             err)
            raise

    def _check_open(self) -> None:
        if self._closed:
            raise InvalidOption(f"the transaction on table {self.name!r} is already closed")

    # ------------------------------------------------------------------ backend hooks
    def _check_type(self, f: pa.Field) -> None:  # noqa: B027 (optional hook)
        """Raise SchemaMismatch if the backend cannot store this column type."""

    @abstractmethod
    def _stage_rows(self, pending: PendingWrite, data: Data) -> None:
        """Stage the rows of one write (``pending.mode``)."""

    @abstractmethod
    def _commit(self) -> None:
        """Make everything staged visible in one commit (fault points ``commit``/``committed``
        around it) and fill in the pending writes' results."""

    def _discard(self) -> None:  # noqa: B027 (optional hook)
        """Release what staging holds (temporary tables, connections)."""


class KeyedTransaction(Transaction):
    """A step on a backend without partitions (PostgreSQL, Milvus): the whole table is one
    partition, and data staged for it is applied by key, so it must include the key column.

    Subclasses name the backend (:attr:`backend_name`, for messages), keep the conformed
    rows of each write (:meth:`_stage_rows`, using :meth:`_conformed` and
    :meth:`_check_staged`) and say which columns a staged write holds."""

    backend_name: ClassVar[str] = ""

    def _conformed(self, pending: PendingWrite, data: Data) -> Iterator[pa.RecordBatch]:
        """The write's batches cast to the table as this step leaves it (partial for every
        mode that sets given columns only; keys required and unique where a key exists)."""
        info = self.info
        key = info.key
        partial = pending.mode in ("upsert", "update", "insert_missing", "stage") or \
            bool(pending.touch)
        return conform(info, data, partial=partial, require_key=key is not None,
                       unique_key=key is not None and pending.mode != "overwrite")

    def _check_staged(self, pending: PendingWrite, names: Sequence[str]) -> None:
        """Refuse data that repeats a touched column, or lacks the key column."""
        self._touch_conflict(pending, names, self.name)
        key = self.info.key
        if key is not None and key not in names:
            raise KeyConflict(f"table {self.name!r}: data staged on {self.backend_name} needs "
                              f"the key column {key!r}")

    @abstractmethod
    def _staged_columns(self, pending: PendingWrite) -> tuple[str, ...]:
        """The columns the staged write ``pending`` holds (none when it had no rows)."""

    def partitions(self) -> list[Partition]:
        return self.store.partitions(self.name)

    def stage(self, partition: Partition, data: Data, *,
              rows: np.ndarray | Sequence[int] | None = None) -> StagedPartition:
        """Positional data is applied by key here: it must include the key column."""
        self._check_open()
        pending = PendingWrite("stage")
        self._stage_rows(pending, data)
        self.writes.append(pending)
        fault_point("stage", self.name)
        return StagedPartition(partition, self._staged_columns(pending))

    def attach(self, staged: StagedPartition) -> None:
        raise UnsupportedOperation(f"the {self.backend_name} backend has no partitions to "
                                   "stage elsewhere: use tx.stage")
