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
import json
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..conform import conform
from ..errors import ConcurrentWriteError, InvalidOption, KeyConflict, SchemaMismatch
from ..faults import fault_point
from ..rows import rows_equal
from ..schema import TableInfo, VectorColumn
from ..txn import Partition, PendingWrite, StagedPartition, Transaction, WriteResult
from .fields import Fields
from .stage import (
    Piece,
    Stale,
    _holders,
    apply_pieces,
    leaf_paths,
    remap_fragment,
    stage_existing,
    stage_new,
    write_fragments,
)

if TYPE_CHECKING:
    from .backend import LanceStore

DESCRIPTION_KEY = b"kindred"
COMMIT_ATTEMPTS = 8
SPARSE_SHARE = 0.03
"""A write of existing columns on at most this share of a fragment's rows is *sparse*: at
commit time those rows are moved (deleted from the fragment, appended whole with the new
values to a new fragment) instead of rewriting the columns for every row of the fragment,
which costs like a write of all of them."""


def is_sparse(rows: int, physical_rows: int) -> bool:
    """Whether writing ``rows`` rows of a fragment of ``physical_rows`` rows is sparse."""
    return 0 < rows <= SPARSE_SHARE * physical_rows


@dataclass
class SparsePiece:
    """New values of existing columns for a few rows of one fragment, kept in memory until
    the commit moves those rows (picklable; at most :data:`SPARSE_SHARE` of a fragment)."""

    fragment_id: int
    physical_rows: int
    addrs: np.ndarray
    """Row addresses (sorted) in the fragment as staged."""
    values: pa.Table
    """One row per address: the columns written."""
    rewritten: dict[str, list[str]]
    """Column -> paths of the fragment's files that held it when staged."""
    columns: tuple[str, ...]


def stage_sparse(frag: Any, schema_paths: dict[str, int], addrs: np.ndarray,
                 values: pa.Table) -> SparsePiece:
    """A :class:`SparsePiece` setting existing columns ``values`` at ``addrs`` of ``frag``."""
    meta = frag.metadata
    order = np.argsort(addrs, kind="stable")
    addrs = np.asarray(addrs, dtype=np.uint64)[order]
    if not (order == np.arange(len(order))).all():
        values = values.take(pa.array(order))
    rewritten = {c: _holders(meta, {schema_paths[p] for p in leaf_paths(schema_paths, c)})
                 for c in values.column_names}
    return SparsePiece(meta.id, meta.physical_rows, addrs, values.combine_chunks(), rewritten,
                       tuple(values.column_names))


# ---------------------------------------------------------------------- descriptions
def describe(info: TableInfo) -> bytes:
    """The description kept in the table's schema metadata."""
    return json.dumps({"key": info.key, "vectors": [v.to_dict() for v in info.vectors.values()],
                       "metadata": info.metadata}, sort_keys=True, default=str).encode()


def read_description(name: str, schema: pa.Schema) -> TableInfo:
    """TableInfo from a Lance schema and its metadata (a table made outside Kindred: every
    float32 fixed-size-list column is a cosine vector column)."""
    raw = (schema.metadata or {}).get(DESCRIPTION_KEY)
    plain = schema.remove_metadata()
    if raw is None:
        vectors = {f.name: VectorColumn(f.name, f.type.list_size) for f in plain
                   if pa.types.is_fixed_size_list(f.type) and pa.types.is_float32(f.type.value_type)}
        return TableInfo(name=name, schema=plain, vectors=vectors)
    desc = json.loads(raw)
    vectors = {v["name"]: VectorColumn.from_dict(v) for v in desc.get("vectors", [])
               if v["name"] in plain.names}
    return TableInfo(name=name, schema=plain, key=desc.get("key"), vectors=vectors,
                     metadata=desc.get("metadata", {}))


# ---------------------------------------------------------------------- key maps
@dataclass
class KeyMap:
    """Every live row's key, row address and position in the dataset's scan order."""

    keys: pa.Array
    addrs: np.ndarray
    positions: np.ndarray
    live: dict[int, np.ndarray]
    """fragment id -> row addresses of its live rows, in scan order."""

    def find(self, keys: pa.Array) -> np.ndarray:
        """Index into this map of each key (-1 when absent)."""
        idx = pc.index_in(keys, value_set=self.keys)
        return np.asarray(pc.fill_null(idx, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def key_map(ds: Any, key: str) -> KeyMap:
    keys, addrs, live = [], [], {}
    for frag in ds.get_fragments():
        t = frag.to_table(columns=[key], with_row_address=True)
        keys.append(t.column(key).combine_chunks())
        a = t.column("_rowaddr").to_numpy().astype(np.uint64)
        addrs.append(a)
        live[frag.fragment_id] = a
    typ = ds.schema.field(key).type
    k = pa.concat_arrays(keys) if keys else pa.array([], typ)
    a = np.concatenate(addrs) if addrs else np.zeros(0, np.uint64)
    return KeyMap(k, a, np.arange(len(a), dtype=np.int64), live)


def present(ds: Any, key: str, keys: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Which of ``keys`` the dataset ``ds`` holds: one ``IN`` read of the key column
    (answered by its scalar index, plus a scan of the fragments the index does not cover)."""
    if isinstance(keys, pa.ChunkedArray):
        keys = keys.combine_chunks()
    if len(keys) == 0:
        return np.zeros(0, dtype=bool)
    typ = ds.schema.field(key).type
    values = keys if keys.type == typ else keys.cast(typ)
    found = ds.to_table(columns=[key], filter=pc.field(key).isin(values.unique()))
    return pc.fill_null(pc.is_in(values, value_set=found.column(key).combine_chunks()),
                        False).to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------- staged row writes
@dataclass
class _RowOp:
    pending: PendingWrite
    columns: list[str]
    matched: list[pa.Table] = field(default_factory=list)
    new_keys: list[pa.Array] = field(default_factory=list)
    inserted: int = 0
    unchanged: int = 0


@dataclass
class _NewRows:
    fragments: list[Any]
    ids: dict[str, int]


class LanceTransaction(Transaction):
    """One staged step on a Lance table (see the module docstring)."""

    def __init__(self, store: LanceStore, name: str) -> None:
        self._store = store
        self.ds = store._dataset(name)
        super().__init__(store, name, read_description(name, self.ds.schema))
        self.pieces: list[Piece | SparsePiece] = []
        self.new_rows: list[_NewRows] = []
        self.ops: list[_RowOp] = []
        self.replace_all = False
        self.drop: list[str] = []
        self._maps: dict[int, KeyMap] = {}
        self._key_indexed: bool | None = None

    # ------------------------------------------------------------------ helpers
    def _map(self, ds: Any) -> KeyMap:
        m = self._maps.get(ds.version)
        if m is None:
            assert self.base.key is not None
            m = self._maps[ds.version] = key_map(ds, self.base.key)
        return m

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

    def _indexed(self) -> bool:
        """Whether the key column has a scalar index (then keys are looked up batch by batch
        instead of reading every key of the table)."""
        if self._key_indexed is None:
            self._key_indexed = self._store.key_index(self.name, self.base.key) is not None
        return self._key_indexed

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

    def _plan(self, latest: Any) -> Any:
        """The one operation committing everything staged on top of ``latest`` (None when the
        step changes nothing)."""
        import lance

        current = read_description(self.name, latest.schema)
        if current.key != self.base.key:
            raise ConcurrentWriteError(f"table {self.name!r} was replaced by another writer "
                                       "while this step ran; nothing was written")
        for f in self.new_fields:
            if f.name in current.schema.names:
                raise ConcurrentWriteError(
                    f"table {self.name!r}: column {f.name!r} was added by another writer while "
                    "this step ran; nothing was written")
        written = {c for p in self.pieces for c in p.columns}
        written |= {c for op in self.ops for t in op.matched for c in t.column_names}
        gone = sorted(written - set(current.schema.names) - {f.name for f in self.new_fields})
        if gone:
            raise ConcurrentWriteError(
                f"table {self.name!r}: column(s) {gone} were dropped by another writer while "
                "this step ran; nothing was written")
        meta = current.metadata
        for p in self.patches:
            meta = TableInfo(self.name, current.schema, metadata=meta).with_metadata(p).metadata
        vectors = dict(current.vectors)
        vectors.update({v.name: v for v in self.new_vectors})
        keep = [n for n in current.schema.names if n not in self.drop]
        vectors = {k: v for k, v in vectors.items() if k not in self.drop}
        fields = [current.schema.field(n) for n in keep] + self.new_fields
        desc = describe(TableInfo(self.name, pa.schema(fields), current.key, vectors, meta))

        if self.replace_all:
            final = Fields.fresh(list(self.info.schema))
            frags = [remap_fragment(f, n.ids, final.paths()) for n in self.new_rows
                     for f in n.fragments]
            schema = final.schema({DESCRIPTION_KEY: desc})
            return lance.LanceOperation.Overwrite(schema, frags)

        now = Fields.of(latest.lance_schema)
        added = (Fields.fresh(self.new_fields).renumbered(latest.max_field_id + 1)
                 if self.new_fields else Fields([]))
        final = now.select(keep) + added
        current_paths, final_paths = now.paths(), final.paths()
        final_paths.update({p: i for p, i in current_paths.items() if p not in final_paths})

        pieces = self._follow(latest, self.pieces)
        pieces += self._derive(latest)
        by_frag: dict[int, list[Piece | SparsePiece]] = {}
        for piece in pieces:
            by_frag.setdefault(piece.fragment_id, []).append(piece)
        frags = []
        moved: list[pa.Table] = []
        for f in latest.get_fragments():
            meta_f = f.metadata
            mine = by_frag.pop(meta_f.id, None)
            if mine:
                try:
                    meta_f = self._apply(latest, f, mine, current_paths, final_paths, fields,
                                         moved)
                except Stale as exc:
                    raise ConcurrentWriteError(f"table {self.name!r}: {exc} while this step "
                                               "ran; nothing was written, run it again") from None
            if meta_f is not None:
                frags.append(meta_f)
        if by_frag:
            raise ConcurrentWriteError(
                f"table {self.name!r}: fragment(s) {sorted(by_frag)} were compacted or removed "
                "by another writer while this step ran; nothing was written, run it again")
        if moved:
            schema = pa.schema(fields)
            out, _ = write_fragments(self._store._table_uri(self.name), schema,
                                     iter(pa.concat_tables(moved).to_batches()),
                                     self._store._storage_options)
            ids = Fields.fresh(list(schema)).paths()
            frags += [remap_fragment(f, ids, final_paths) for f in out]
        frags += [remap_fragment(f, n.ids, final_paths) for n in self.new_rows
                  for f in n.fragments]
        changed = (pieces or self.new_rows or self.new_fields or self.drop
                   or desc != (latest.schema.metadata or {}).get(DESCRIPTION_KEY))
        if not changed:
            return None
        if self.base.key is None and not (pieces or self.new_fields or self.drop) \
                and desc == (latest.schema.metadata or {}).get(DESCRIPTION_KEY):
            # rows only, no key to keep unique: an append commutes with other writers
            return lance.LanceOperation.Append(frags[len(latest.get_fragments()):])
        return lance.LanceOperation.Merge(frags, final.schema({DESCRIPTION_KEY: desc}),
                                          preserves_nullability=True)

    def _apply(self, latest: Any, frag: Any, mine: list[Piece | SparsePiece],
               current: dict[str, int], final: dict[str, int], fields: list[pa.Field],
               moved: list[pa.Table]) -> Any:
        """The fragment ``frag`` of ``latest`` with this step's pieces applied (None: every
        row moved out); the rows a sparse write moves are added to ``moved`` (in the table's
        final columns). Raises Stale."""
        meta = frag.metadata
        sparse = [p for p in mine if isinstance(p, SparsePiece)]
        dense = [p for p in mine if not isinstance(p, SparsePiece)]
        if not sparse:
            return apply_pieces(meta, dense, current, final)
        seen: set[str] = set()
        for p in mine:
            if p.physical_rows != meta.physical_rows:
                raise Stale(f"fragment {meta.id} was rewritten by another writer")
            if seen & set(p.columns):
                raise Stale(f"column(s) {sorted(seen & set(p.columns))} of fragment {meta.id} "
                            "are set twice in one step")
            seen |= set(p.columns)
        for p in sparse:
            for col, holders in p.rewritten.items():
                ids = {current[x] for x in leaf_paths(current, col)}
                if not ids or _holders(meta, ids) != holders:
                    raise Stale(f"column {col!r} of fragment {meta.id} was rewritten by another "
                                "writer")
        live = _live(frag)
        rows = np.unique(np.concatenate([p.addrs for p in sparse]))
        rows = rows[_member(rows, live)]  # rows deleted meanwhile (moved ones: _follow)
        if dense or not is_sparse(len(rows), meta.physical_rows):
            # with a rewrite of the fragment's columns anyway (or too many rows to move):
            # the few rows' values go into rewrites of their columns too
            types = {f.name: f.type for f in fields}
            for p in sparse:
                keep = _member(p.addrs, rows)
                if not keep.any():
                    continue
                at, vals = p.addrs[keep], p.values.filter(pa.array(keep))
                old = [c for c in p.columns if c in current]
                new = [c for c in p.columns if c not in current]
                if old:
                    dense.append(stage_existing(frag, current, at, vals.select(old)))
                if new:
                    dense.append(stage_new(frag, len(live), np.searchsorted(live, at),
                                           pa.table({c: vals.column(c).cast(types[c])
                                                     for c in new})))
            return apply_pieces(meta, dense, current, final) if dense else meta
        if len(rows) == 0:
            return meta
        names = [f.name for f in fields if f.name in latest.schema.names]
        base = latest._take_rows(rows.tolist(), columns=names)
        if base.num_rows != len(rows):  # pragma: no cover (a pylance contract)
            raise Stale(f"rows of fragment {meta.id} could not be read back")
        cols = {n: base.column(n).combine_chunks() for n in names}
        types = {f.name: f.type for f in fields}
        for p in sparse:
            for c in p.columns:
                if c not in cols:  # a column this step adds: null so far
                    cols[c] = pa.nulls(len(rows), types[c])
        for p in sparse:
            keep = _member(p.addrs, rows)
            at = np.searchsorted(rows, p.addrs[keep])
            take = np.arange(len(rows), dtype=np.int64)
            take[at] = len(rows) + np.arange(len(at))
            for c in p.columns:
                vals = p.values.column(c).filter(pa.array(keep)).combine_chunks()
                vals = vals.cast(cols[c].type) if vals.type != cols[c].type else vals
                cols[c] = pa.concat_arrays([cols[c], vals]).take(pa.array(take))
        moved.append(pa.table({f.name: cols[f.name] if f.name in cols
                               else pa.nulls(len(rows), f.type) for f in fields},
                              schema=pa.schema(fields)))
        left = frag.delete_rows((rows & np.uint64(0xFFFFFFFF)).astype(np.int64).tolist())
        return left

    def _follow(self, latest: Any, pieces: list[Piece | SparsePiece]
                ) -> list[Piece | SparsePiece]:
        """``pieces`` plus, for rows another writer moved out of a staged fragment since the
        step's version (a sparse write of theirs), this step's values for those rows as sparse
        pieces on the fragments now holding them: the other writer's copy of a row gets them
        as the row would have. Rows deleted meanwhile stay deleted."""
        key = self.base.key
        out: list[Piece | SparsePiece] = []
        follow: list[tuple[pa.Array, pa.Table]] = []
        for p in pieces:
            snap = self.ds.get_fragment(p.fragment_id)
            now = latest.get_fragment(p.fragment_id)
            if snap is None or now is None or \
                    _deletions(snap.metadata) == _deletions(now.metadata):
                out.append(p)
                continue
            addrs = p.addrs if isinstance(p, SparsePiece) else \
                p.rows if p.rows is not None else _live(snap)
            gone = addrs[~_member(addrs, _live(now))]
            if len(gone):
                if key is None:
                    raise Stale(f"rows of fragment {p.fragment_id} were deleted or moved by "
                                "another writer")
                keys = self.ds._take_rows(gone.tolist(), columns=[key]).column(key)
                hit = present(latest, key, keys)
                if hit.any():
                    follow.append((keys.filter(pa.array(hit)),
                                   self._values_of(p, gone[hit])))
                if isinstance(p, SparsePiece):
                    keep = ~_member(p.addrs, gone)
                    p = replace(p, addrs=p.addrs[keep], values=p.values.filter(pa.array(keep)))
                    if not len(p.addrs):
                        continue
            out.append(p)
        return out + self._retarget(latest, follow) if follow else out

    def _values_of(self, piece: Piece | SparsePiece, addrs: np.ndarray) -> pa.Table:
        """The values ``piece`` stages for the rows at ``addrs`` (a rewrite's are read back
        from its files)."""
        if isinstance(piece, SparsePiece):
            return piece.values.take(pa.array(np.searchsorted(piece.addrs, addrs)))
        from lance.file import LanceFileReader

        offsets = (addrs & np.uint64(0xFFFFFFFF)).astype(np.int64).tolist()
        cols: dict[str, pa.ChunkedArray] = {}
        uri = self._store._table_uri(self.name)
        for f in piece.files:
            t = LanceFileReader(f"{uri}/data/{f[0]}", storage_options=self._store.
                                _storage_options or None).take_rows(offsets).to_table()
            cols.update({c: t.column(c) for c in t.column_names if c in piece.columns})
        if set(cols) != set(piece.columns):
            raise Stale(f"rows of fragment {piece.fragment_id} were moved by another writer")
        return pa.table({c: cols[c] for c in piece.columns})

    def _retarget(self, latest: Any, follow: list[tuple[pa.Array, pa.Table]]
                  ) -> list[Piece | SparsePiece]:
        """Sparse pieces setting ``follow``'s values (by key) where ``latest`` holds the rows."""
        key = self.base.key
        assert key is not None
        groups: dict[tuple[str, ...], list[tuple[pa.Array, pa.Table]]] = {}
        for keys, vals in follow:
            groups.setdefault(tuple(vals.column_names), []).append((keys, vals))
        paths = Fields.of(latest.lance_schema).paths()
        out: list[Piece | SparsePiece] = []
        for cols, parts in groups.items():
            keys = pa.concat_arrays([k.combine_chunks() if isinstance(k, pa.ChunkedArray)
                                     else k for k, _ in parts])
            vals = pa.concat_tables([v for _, v in parts]).combine_chunks()
            found = latest.to_table(columns=[key], filter=pc.field(key).isin(keys),
                                    with_row_address=True)
            at = np.asarray(pc.index_in(found.column(key), value_set=keys).to_numpy(
                zero_copy_only=False), dtype=np.int64)
            addrs = found.column("_rowaddr").to_numpy().astype(np.uint64)
            frag_ids = (addrs >> np.uint64(32)).astype(np.int64)
            for fid in np.unique(frag_ids):
                sel = frag_ids == fid
                meta = latest.get_fragment(int(fid)).metadata
                order = np.argsort(addrs[sel])
                rewritten = {c: _holders(meta, {paths[x] for x in leaf_paths(paths, c)})
                             for c in cols if c in paths}
                out.append(SparsePiece(int(fid), meta.physical_rows, addrs[sel][order],
                                       vals.take(pa.array(at[sel][order])), rewritten, cols))
        return out

    def _derive(self, latest: Any) -> list[Piece | SparsePiece]:
        """Stage the rows written by key against ``latest``; fills the pending results."""
        keyed = [op for op in self.ops if op.matched or op.new_keys]
        for op in self.ops:
            if not (op.matched or op.new_keys):
                op.pending.result = WriteResult(op.inserted, 0, op.unchanged)
        if not keyed:
            return []
        key = self.base.key
        assert key is not None
        written = [k for op in keyed for k in op.new_keys] + \
            [t.column(key).combine_chunks() for op in keyed for t in op.matched]
        if written:
            allk = pa.concat_arrays(written)
            if pc.count_distinct(allk).as_py() != len(allk):
                raise KeyConflict(f"table {self.name!r}: a key is written twice in one step")
        if latest.version != self.ds.version and any(op.new_keys for op in keyed):
            fresh = pa.concat_arrays([k for op in keyed for k in op.new_keys])
            # the new keys were absent at the step's version: present now = inserted meanwhile
            if present(latest, key, fresh).any() if self._indexed() else \
                    (self._map(latest).find(fresh) >= 0).any():
                raise ConcurrentWriteError(
                    f"table {self.name!r}: another writer inserted some of the same keys while "
                    "this step ran; nothing was written, run it again")
        if not any(op.matched for op in keyed):
            for op in keyed:
                op.pending.result = WriteResult(op.inserted, 0, op.unchanged)
            return []
        km = self._map(latest)
        info = self.info
        changes: dict[int, list[tuple[np.ndarray, pa.Table]]] = {}
        for op in keyed:
            updated = unchanged = 0
            if op.matched:
                t = pa.concat_tables(op.matched).combine_chunks()
                idx = km.find(t.column(key))
                t = t.filter(pa.array(idx >= 0))
                idx = idx[idx >= 0]
                cols = [c for c in t.column_names if c != key]
                if cols and len(idx):
                    there = [c for c in cols if c in latest.schema.names]
                    got: Any = latest.take(pa.array(km.positions[idx]), columns=there) if there \
                        else None  # None only when no column is there: never read then
                    # columns this step adds hold nulls so far
                    stored = pa.table({c: got.column(c) if c in there else
                                       pa.nulls(len(idx), t.schema.field(c).type) for c in cols})
                    same = rows_equal(t.select(cols), stored, cols)
                else:
                    same = np.ones(len(idx), dtype=bool)
                unchanged = int(same.sum())
                updated = len(idx) - unchanged
                if updated:
                    addrs = km.addrs[idx[~same]]
                    vals = t.select(cols).filter(pa.array(~same))
                    for c, a in op.pending.touch_arrays(info, vals.num_rows).items():
                        vals = vals.append_column(c, a)
                    frag_ids = (addrs >> np.uint64(32)).astype(np.int64)
                    for fid in np.unique(frag_ids):
                        sel = frag_ids == fid
                        changes.setdefault(int(fid), []).append(
                            (addrs[sel], vals.filter(pa.array(sel))))
            op.pending.result = WriteResult(op.inserted, updated, unchanged + op.unchanged)
        schema_paths = Fields.of(latest.lance_schema).paths()
        base_names = set(latest.schema.names)
        pieces: list[Piece | SparsePiece] = []
        for fid, parts in changes.items():
            frag = latest.get_fragment(fid)
            for addrs, vals in _group_columns(parts):
                order = np.argsort(addrs)
                addrs, vals = addrs[order], vals.take(pa.array(order))
                old = [c for c in vals.column_names if c in base_names]
                new = [c for c in vals.column_names if c not in base_names]
                if old and not new and is_sparse(len(addrs), frag.metadata.physical_rows):
                    pieces.append(stage_sparse(frag, schema_paths, addrs, vals.select(old)))
                elif old:
                    pieces.append(stage_existing(frag, schema_paths, addrs, vals.select(old)))
                if new:
                    live = km.live[fid]
                    pos = np.searchsorted(live, addrs)
                    data = pa.table({c: vals.column(c).cast(info.schema.field(c).type)
                                     for c in new})
                    pieces.append(stage_new(frag, len(live), pos, data))
        return pieces


def _live(frag: Any) -> np.ndarray:
    """Row addresses of a fragment's live rows, in scan order (sorted)."""
    return np.asarray(frag.to_table(columns=[], with_row_address=True).column(
        "_rowaddr").to_numpy(), dtype=np.uint64)


def _deletions(meta: Any) -> Any:
    d = meta.deletion_file
    return None if d is None else (d.id, d.num_deleted_rows)


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Which ``values`` are in ``sorted_set`` (sorted, unique)."""
    if len(sorted_set) == 0:
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return np.asarray(sorted_set[at] == values)


def _group_columns(parts: list[tuple[np.ndarray, pa.Table]]) -> list[tuple[np.ndarray, pa.Table]]:
    """One (addresses, values) per set of columns sharing the same rows of a fragment."""
    if len(parts) == 1:
        return parts
    per_col: dict[str, list[tuple[np.ndarray, pa.Array]]] = {}
    for addrs, t in parts:
        for c in t.column_names:
            per_col.setdefault(c, []).append((addrs, t.column(c).combine_chunks()))
    groups: dict[bytes, tuple[np.ndarray, dict[str, pa.Array]]] = {}
    for c, chunks in per_col.items():
        addrs = np.concatenate([a for a, _ in chunks])
        vals = pa.concat_arrays([v for _, v in chunks])
        order = np.argsort(addrs)
        addrs, vals = addrs[order], vals.take(pa.array(order))
        g = groups.setdefault(addrs.tobytes(), (addrs, {}))
        g[1][c] = vals
    return [(a, pa.table(cols)) for a, cols in groups.values()]


def _touched(pending: PendingWrite, info: TableInfo, batch: pa.RecordBatch,
             table: str) -> pa.RecordBatch:
    """``batch`` with the write's touched columns added (new rows are always touched)."""
    if not pending.touch:
        return batch
    Transaction._touch_conflict(pending, batch.schema.names, table)
    arrays = pending.touch_arrays(info, batch.num_rows)
    return pa.RecordBatch.from_arrays(
        [*batch.columns, *arrays.values()],
        schema=pa.schema([*batch.schema, *(info.schema.field(c) for c in arrays)]))


def _full(info: TableInfo, batch: pa.RecordBatch) -> pa.RecordBatch:
    """``batch`` (some of the table's columns) with the others null, in table order."""
    if batch.schema.names == info.schema.names:
        return batch
    arrays = []
    for f in info.schema:
        i = batch.schema.get_field_index(f.name)
        if i >= 0:
            arrays.append(batch.column(i))
        elif not f.nullable:
            raise SchemaMismatch(f"table {info.name!r}: new rows lack column {f.name!r}, which "
                                 "does not allow nulls")
        else:
            arrays.append(pa.nulls(batch.num_rows, f.type))
    return pa.RecordBatch.from_arrays(arrays, schema=info.schema)

