"""The LanceDB transaction: staged fragments and one ``Merge`` commit per step.

Everything a step writes is staged in data files no manifest references yet: new rows in new
fragments (written as they stream in), new or rewritten column values in per-fragment files
(:mod:`vectorstore.lance_stage`). The commit builds one ``LanceOperation.Merge`` on the newest
table version: its fragments with the staged files attached, the new fragments, and the
schema with the table's description (key, vector columns, metadata) in its metadata, so data,
schema and description change in the same commit. If another writer committed meanwhile the
commit is rebuilt on their version (their rows, columns and metadata keys kept; rows this
step writes by key are matched again), a bounded number of times; a staged partition whose
fragment was rewritten meanwhile cannot be rebuilt and raises ConcurrentWriteError.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..conform import conform
from ..errors import ConcurrentWriteError, InvalidOption, KeyConflict, SchemaMismatch
from ..faults import fault_point
from ..schema import TableInfo
from ..txn import Partition, PendingWrite, StagedPartition, WriteResult
from .commit import LanceCommit, _full, _NewRows, _RowOp, _touched
from .description import DESCRIPTION_KEY, describe, read_description
from .fields import Fields
from .keys import KeyMap, key_map, present
from .sparse import SPARSE_SHARE, SparsePiece, is_sparse, stage_sparse
from .stage import write_fragments

__all__ = ["COMMIT_ATTEMPTS", "DESCRIPTION_KEY", "SPARSE_SHARE", "KeyMap", "LanceTransaction",
           "SparsePiece", "describe", "is_sparse", "key_map", "present", "read_description",
           "stage_sparse"]

COMMIT_ATTEMPTS = 8


class LanceTransaction(LanceCommit):
    """One staged step on a Lance table (see the module docstring)."""

    def _check_type(self, f: pa.Field) -> None:
        from lance.schema import LanceSchema

        try:
            LanceSchema.from_pyarrow(pa.schema([f]))
        except (ValueError, TypeError, OSError) as exc:
            raise SchemaMismatch(f"table {self.name!r}, column {f.name!r}: type {f.type} "
                                 f"cannot be stored: {exc}") from exc

    # ------------------------------------------------------------------ partitions
    def partitions(self) -> list[Partition]:
        return [Partition(self.name, f.fragment_id, self.ds.version, f.metadata.num_rows)
                for f in self.ds.get_fragments()]

    def attach(self, staged: StagedPartition) -> None:
        self._check_open()
        p = staged.partition
        if p.table != self.name or p.version != self.ds.version:
            raise InvalidOption(f"partition {p.id} of {p.table!r} at version {p.version} does "
                                f"not belong to this step on {self.name!r} (version "
                                f"{self.ds.version})")
        info = self.info
        for c in staged.columns:
            if c not in info.schema.names:
                raise SchemaMismatch(f"table {self.name!r}: staged column {c!r} was not added "
                                     "with add_columns")
        self.pieces.extend(staged.payload or [])

    # ------------------------------------------------------------------ rows
    def _stage_rows(self, pending: PendingWrite, data: Any) -> None:
        info = self.info
        mode = pending.mode
        if mode == "overwrite":
            if self.ops or self.new_rows or self.pieces:
                raise InvalidOption("an overwrite must be the first write of a step")
            self.replace_all = True
            rows = conform(info, data, require_key=info.key is not None,
                           unique_key=info.key is not None, partial=bool(pending.touch))
            n = self._write_new(info, (_full(info, _touched(pending, info, b, self.name))
                                       for b in rows))
            pending.result = WriteResult(inserted=n)
            return
        if self.replace_all:
            raise InvalidOption("no other write can follow an overwrite in one step")
        if info.key is None:
            if mode != "append":
                raise KeyConflict(f"table {self.name!r} has no key column: {mode} needs one")
            op = _RowOp(pending, info.schema.names)
            self.ops.append(op)
            op.inserted = self._write_new(info, (
                _full(info, _touched(pending, info, b, self.name))
                for b in conform(info, data, partial=bool(pending.touch))))
            return
        if mode == "insert_missing" and self._indexed():
            self._insert_missing_indexed(pending, info, data)
            return
        known = self._map(self.ds)
        key = info.key
        partial = mode != "append" or bool(pending.touch)
        op = _RowOp(pending, [])
        self.ops.append(op)

        def new_rows() -> Iterator[pa.RecordBatch]:
            for b in conform(info, data, partial=partial, require_key=True, unique_key=True):
                if not op.columns:
                    op.columns = b.schema.names
                    self._touch_conflict(pending, op.columns, self.name)
                hit = known.find(b.column(key)) >= 0
                if hit.any():
                    if mode == "append":
                        k = pc.filter(b.column(key), pa.array(hit))[0].as_py()
                        raise KeyConflict(f"table {self.name!r}: key {key}={k!r} is already in "
                                          "the table (append adds new keys only; use "
                                          "mode='upsert')")
                    if mode == "insert_missing":
                        op.unchanged += int(hit.sum())
                    else:
                        op.matched.append(pa.Table.from_batches([b.filter(pa.array(hit))]))
                fresh = b.filter(pa.array(~hit)) if hit.any() else b
                if fresh.num_rows == 0:
                    continue
                if mode == "update":
                    k = fresh.column(key)[0].as_py()
                    raise KeyConflict(f"table {self.name!r}: {fresh.num_rows} key(s) to update "
                                      f"are not in the table, e.g. {key}={k!r}")
                op.new_keys.append(fresh.column(key))
                yield _full(info, _touched(pending, info, fresh, self.name))

        op.inserted = self._write_new(info, new_rows())


    def _insert_missing_indexed(self, pending: PendingWrite, info: TableInfo, data: Any) -> None:
        """``insert_missing`` as an insert-if-absent merge on the indexed key: each batch's
        keys are looked up in the table (memory: one batch, not the table's keys)."""
        key = info.key
        assert key is not None
        op = _RowOp(pending, [])
        self.ops.append(op)

        def new_rows() -> Iterator[pa.RecordBatch]:
            for b in conform(info, data, partial=True, require_key=True, unique_key=True):
                if not op.columns:
                    op.columns = b.schema.names
                hit = present(self.ds, key, b.column(key))
                if hit.any():
                    op.unchanged += int(hit.sum())
                    b = b.filter(pa.array(~hit))
                if b.num_rows == 0:
                    continue
                op.new_keys.append(b.column(key))
                yield _full(info, b)

        op.inserted = self._write_new(info, new_rows())

    def _write_new(self, info: TableInfo, batches: Iterator[pa.RecordBatch]) -> int:
        """Write rows to new (uncommitted) fragments as they stream in; returns the count."""
        it = iter(batches)
        first = next(it, None)
        if first is None:
            return 0
        frags, n = write_fragments(self._store._table_uri(self.name), info.schema,
                                   itertools.chain([first], it), self._store._storage_options)
        self.new_rows.append(_NewRows(frags, Fields.fresh(list(info.schema)).paths()))
        return n

    # ------------------------------------------------------------------ commit
    def _commit(self) -> None:
        import lance
        from lance.commit import CommitConflictError

        for attempt in range(COMMIT_ATTEMPTS):
            latest = self.ds if attempt == 0 else self._store._dataset(self.name)
            if attempt == 0 and latest.latest_version != latest.version:
                latest = self._store._dataset(self.name)
            op = self._plan(latest)
            if op is None:
                return
            fault_point("commit", self.name)
            try:
                done = lance.LanceDataset.commit(
                    latest, op, read_version=latest.version,
                    storage_options=self._store._storage_options, max_retries=0)
            except (CommitConflictError, OSError) as exc:
                text = str(exc).lower()
                if not isinstance(exc, CommitConflictError) and "conflict" not in text \
                        and "preempted" not in text:
                    raise
                # jittered backoff: not a secret, just spreading writers apart
                time.sleep(min(0.05 * 2 ** attempt, 1.0) * (0.5 + random.random()))  # noqa: S311
                continue
            self.version = int(done.version)
            fault_point("committed", self.name)
            return
        raise ConcurrentWriteError(
            f"table {self.name!r}: other writers kept committing while this step tried to "
            f"commit ({COMMIT_ATTEMPTS} attempts); nothing was written, run it again")

