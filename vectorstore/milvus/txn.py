"""The Milvus transaction: stage in memory, then one atomic change of the table.

Rows a step writes are kept (conformed Arrow tables) until the commit, which holds the
table's commit lock, reads the newest committed description and applies the step's writes
in order to the newest rows (so another writer's commit in the meantime is kept, and keyed
rows are matched again), then makes ONE visible change:

- metadata patches alone: the description row of the current collection (one upsert);
- rows only, at most :data:`IN_PLACE_ROWS` keys: the changed rows, whole, in one ``upsert``
  request (new rows of a table without a key: one ``insert``);
- anything else (new columns, an overwrite, rows together with a description change, many
  rows, a new index, dropped columns): a new collection holding the newest rows with the
  step applied and the new description, then the table's alias is switched to it. That
  switch is the commit; the old collection is dropped after it. A failure or a kill before
  it leaves the table as it was (an unreferenced collection that ``optimize`` sweeps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConcurrentWriteError, KeyConflict, TableNotFound
from ..faults import fault_point
from ..rows import rows_equal
from ..schema import TableInfo
from ..txn import KeyedTransaction, PendingWrite, WriteResult
from . import types as mt
from .conn import CommitLock, change_alias, translate

if TYPE_CHECKING:
    from .backend import MilvusStore
    from .catalog import Described

IN_PLACE_ROWS = 10_000
IN_PLACE_BYTES = 32 << 20
Write = tuple[PendingWrite, pa.Table]


class MilvusTransaction(KeyedTransaction):
    """One staged step on a Milvus table (see the module docstring)."""

    backend_name = "Milvus"

    def __init__(self, store: MilvusStore, name: str) -> None:
        super().__init__(store, name, store.table_info(name))
        self._mv = store
        self.staged: list[Write] = []

    def _check_type(self, f: pa.Field) -> None:
        mt.check_column_name(self.name, f.name)
        vector = pa.types.is_fixed_size_list(f.type) and pa.types.is_float32(f.type.value_type)
        mt.milvus_field(self.name, f, vector=vector)

    def _stage_rows(self, pending: PendingWrite, data: Any) -> None:
        info = self.info
        batches = [b for b in self._conformed(pending, data) if b.num_rows]
        if not batches:
            pending.result = WriteResult(0)
            if pending.mode == "overwrite":  # an overwrite with no rows empties the table
                self.staged.append((pending, info.schema.empty_table()))
            return
        table = pa.Table.from_batches(batches)
        self._check_staged(pending, table.column_names)
        self.staged.append((pending, table))

    def _staged_columns(self, pending: PendingWrite) -> tuple[str, ...]:
        cols = self.staged[-1][1].column_names if self.staged and \
            self.staged[-1][0] is pending else []
        return tuple(cols)

    def _commit(self) -> None:
        if self.new_fields or self.patches or self.staged:
            commit(self._mv, self)


# --------------------------------------------------------------------------- applying writes


def _widen(t: pa.Table, info: TableInfo) -> pa.Table:
    """``t`` with every column of ``info`` (missing ones null), in schema order."""
    n = t.num_rows
    arrays = [t.column(f.name) if f.name in t.column_names else pa.nulls(n, f.type)
              for f in info.schema]
    return pa.Table.from_arrays(arrays, schema=info.schema)


def _replace_rows(rows: pa.Table, where: np.ndarray, values: pa.Table) -> pa.Table:
    """``rows`` with the rows at ``where`` given ``values``' columns."""
    n = rows.num_rows
    take = np.arange(n, dtype=np.int64)
    take[where] = n + np.arange(where.size, dtype=np.int64)
    idx = pa.array(take)
    for c in values.column_names:
        i = rows.schema.get_field_index(c)
        both = pa.concat_arrays([rows.column(c).combine_chunks(),
                                 values.column(c).combine_chunks().cast(rows.schema.field(c).type)])
        rows = rows.set_column(i, rows.schema.field(i), both.take(idx))
    return rows


class Applier:
    """The step's writes applied, in order, to the rows they match (see the module
    docstring); counts what each write inserted, updated and left unchanged."""

    def __init__(self, info: TableInfo, writes: list[Write]) -> None:
        self.info, self.key = info, info.key
        last = max((i for i, (p, _) in enumerate(writes) if p.mode == "overwrite"), default=-1)
        self.overwrite = last >= 0
        self.dropped = [p for p, _ in writes[:max(last, 0)]]
        self.writes = writes[max(last, 0):]
        self.seen = [np.zeros(t.num_rows, dtype=bool) for _, t in self.writes]
        self.counts = [[0, 0, 0] for _ in self.writes]
        self.keys = [t.column(self.key).combine_chunks() if self.key else None
                     for _, t in self.writes]

    def _apply(self, rows: pa.Table, i: int, changed: np.ndarray | None) -> tuple[pa.Table, np.ndarray]:
        """Write ``i`` applied to the ``rows`` it matches; returns the rows and the matched
        positions of the write."""
        pending, w = self.writes[i]
        idx = pc.index_in(rows.column(self.key), value_set=self.keys[i])
        valid = np.asarray(idx.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        if not valid.any():
            return rows, np.zeros(0, dtype=np.int64)
        where = np.flatnonzero(valid)
        pos = np.asarray(pc.filter(idx, pa.array(valid)).to_numpy(zero_copy_only=False),
                         dtype=np.int64)
        if pending.mode in ("append", "overwrite"):
            value = rows.column(self.key)[int(where[0])].as_py()
            raise KeyConflict(f"table {self.info.name!r}: a key to append is already in the "
                              f"table ({self.key}={value!r}); append adds new keys only, use "
                              "mode='upsert'")
        cols = [c for c in w.column_names if c != self.key]
        if pending.mode == "insert_missing" or not cols:
            self.counts[i][2] += where.size
            return rows, pos
        new = w.select(cols).take(pa.array(pos))
        same = rows_equal(rows.select(cols).take(pa.array(where)), new, cols)
        self.counts[i][1] += int((~same).sum())
        self.counts[i][2] += int(same.sum())
        if (~same).any():
            rows = _replace_rows(rows, where[~same], new.filter(pa.array(~same)))
            touched = self._touched(pending, int((~same).sum()))
            if touched is not None:  # touched columns on the rows this write changes only
                rows = _replace_rows(rows, where[~same], touched)
            if changed is not None:
                changed[where[~same]] = True
        return rows, pos

    def _touched(self, pending: PendingWrite, n: int) -> pa.Table | None:
        """The write's touched columns as an ``n``-row table (None when it touches none)."""
        if not pending.touch:
            return None
        return pa.table(pending.touch_arrays(self.info, n))

    def apply_base(self, rows: pa.Table) -> tuple[pa.Table, np.ndarray]:
        """Stored rows (widened to the new schema) with the writes applied, and which changed."""
        changed = np.zeros(rows.num_rows, dtype=bool)
        if self.key is None or self.overwrite or not rows.num_rows:
            return rows, changed
        for i in range(len(self.writes)):
            rows, pos = self._apply(rows, i, changed)
            self.seen[i][pos] = True
        return rows, changed

    def tail(self) -> pa.Table:
        """The rows of keys that were not stored (new keys, in write order)."""
        new = self.info.schema.empty_table()
        for i, (pending, w) in enumerate(self.writes):
            rest = w.filter(pa.array(~self.seen[i])) if self.key else w
            if self.key is not None and rest.num_rows and new.num_rows:
                sub = Applier(self.info, [(pending, rest)])
                new, pos = sub._apply(new, 0, None)
                self.counts[i][1] += sub.counts[0][1]
                self.counts[i][2] += sub.counts[0][2]
                hit = np.zeros(rest.num_rows, dtype=bool)
                hit[pos] = True
                rest = rest.filter(pa.array(~hit))
            if not rest.num_rows:
                continue
            if pending.mode == "update":
                first = rest.column(self.key)[0].as_py()
                raise KeyConflict(f"table {self.info.name!r}: {rest.num_rows} key(s) to update "
                                  f"are not in the table, e.g. {self.key}={first!r}")
            if pending.mode == "stage":  # rows deleted while the step ran are gone
                continue
            self.counts[i][0] += rest.num_rows
            touched = self._touched(pending, rest.num_rows)
            if touched is not None:  # new rows are always touched
                for c in touched.column_names:
                    rest = rest.append_column(self.info.schema.field(c), touched.column(c))
            new = pa.concat_tables([new, _widen(rest, self.info)])
        return new

    def finish(self) -> None:
        for p in self.dropped:
            p.result = WriteResult(0)
        for (p, _), (ins, upd, same) in zip(self.writes, self.counts, strict=True):
            p.result = WriteResult(ins, upd, same)


# --------------------------------------------------------------------------- the commit


def commit(store: MilvusStore, tx: MilvusTransaction) -> None:
    name = tx.name
    with store._lock(name) as lock:
        try:
            cur = store._describe(name)
        except TableNotFound:
            raise ConcurrentWriteError(f"table {name!r} was dropped by another writer while "
                                       "this step ran; nothing was written") from None
        for f in tx.new_fields:
            if f.name in cur.info.schema.names:
                raise ConcurrentWriteError(
                    f"table {name!r}: column {f.name!r} was added by another writer while this "
                    "step ran; nothing was written")
        vectors = {**cur.info.vectors, **{v.name: v for v in tx.new_vectors}}
        info = TableInfo(name, pa.schema(list(cur.info.schema) + tx.new_fields), cur.info.key,
                         vectors, cur.info.metadata)
        for p in tx.patches:
            info = info.with_metadata(p)
        described_changes = bool(tx.new_fields) or info.metadata != cur.info.metadata
        if not tx.staged and not tx.new_fields:
            fault_point("commit", name)
            with translate(name, "commit"):
                store._save_description(cur.physical, info, cur.indexes)
        elif described_changes or not _in_place(store, cur, Applier(info, tx.staged)):
            _rebuild(store, cur, info, cur.indexes, Applier(info, tx.staged), lock)
    fault_point("committed", name)


def _in_place(store: MilvusStore, cur: Described, applier: Applier) -> bool:
    """Apply a rows-only step with one request, if it is small enough (else False, nothing
    done)."""
    info = applier.info
    if applier.overwrite or sum(t.nbytes for _, t in applier.writes) > IN_PLACE_BYTES:
        return False
    if info.key is None:
        upload = applier.tail()
    else:
        keys = pc.unique(pa.chunked_array([k for k in applier.keys if k is not None]))
        if len(keys) > IN_PLACE_ROWS:
            return False
        base = store._rows_by_key(cur, keys)
        if base.nbytes > IN_PLACE_BYTES:
            return False
        rows, changed = applier.apply_base(base)
        upload = pa.concat_tables([rows.filter(pa.array(changed)), applier.tail()])
    if upload.num_rows:
        fault_point("commit", info.name)
        with translate(info.name, "commit"):
            records = mt.to_rows(info, upload)
            if info.key is None:
                store._client.insert(cur.physical, records)
            else:
                store._client.upsert(cur.physical, records)
    applier.finish()
    return True


def _rebuild(store: MilvusStore, cur: Described, info: TableInfo,
             indexes: dict[str, dict[str, Any]], applier: Applier | None,
             lock: CommitLock) -> None:
    """Build the table's new collection and switch the alias to it (the one commit)."""
    name = info.name
    physical = store._new_collection(info, indexes)
    try:
        if applier is None or not applier.overwrite:
            names = [c for c in cur.info.schema.names if c in info.schema.names]
            for batch in store._scan_physical(cur, names):
                rows = _widen(pa.Table.from_batches([batch]), info)
                if applier is not None:
                    rows, _ = applier.apply_base(rows)
                store._insert(name, physical, info, rows, lock)
        if applier is not None:
            store._insert(name, physical, info, applier.tail(), lock)
        with translate(name, "commit"):
            store._save_description(physical, info, indexes)
            fault_point("commit", name)
            change_alias(store._client, "alter", name, physical)
    except BaseException:
        store._drop_collection(physical)
        raise
    if applier is not None:
        applier.finish()
    store._retire(cur.physical)


def rebuild(store: MilvusStore, name: str, *, drop: Sequence[str] = (),
            index: tuple[str, dict[str, Any]] | None = None) -> None:
    """A new collection for ``name`` without the ``drop`` columns or with a new ``index``
    (``(column, definition)``), switched in as one commit."""
    with store._lock(name) as lock:
        cur = store._describe(name)
        info, indexes = cur.info, dict(cur.indexes)
        if drop:
            info = TableInfo(name, pa.schema([f for f in info.schema if f.name not in drop]),
                             info.key, {k: v for k, v in info.vectors.items() if k not in drop},
                             info.metadata)
            indexes = {c: ix for c, ix in indexes.items() if c not in drop}
        if index is not None:
            indexes[index[0]] = index[1]
        _rebuild(store, cur, info, indexes, None, lock)
    fault_point("committed", name)
