"""How the one commit of a Lance step is planned on the newest version: the staged pieces
applied to each fragment, rows written by key matched again, rows another writer moved
followed (the planning half of :class:`vectorstore.lance.txn.LanceTransaction`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import ConcurrentWriteError, KeyConflict, SchemaMismatch
from ..rows import rows_equal
from ..schema import TableInfo
from ..txn import PendingWrite, Transaction, WriteResult
from .description import DESCRIPTION_KEY, describe, read_description
from .fields import Fields
from .keys import KeyMap, key_map, present
from .sparse import SparsePiece, is_sparse, stage_sparse
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



class LanceCommit(Transaction):
    """The state of a staged Lance step and the planning of its commit."""

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

    def _indexed(self) -> bool:
        """Whether the key column has a scalar index (then keys are looked up batch by batch
        instead of reading every key of the table)."""
        if self._key_indexed is None:
            self._key_indexed = self._store.key_index(self.name, self.base.key) is not None
        return self._key_indexed

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

