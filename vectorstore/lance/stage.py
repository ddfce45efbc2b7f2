"""Staged column data for Lance fragments: write the files now, attach them at commit time.

A *piece* is the new or rewritten column values of one fragment, written to data files of
their own with pylance (``LanceFragment.merge_columns`` for columns the table does not have
yet, ``update_columns`` on row addresses for existing ones) but referenced by no manifest.
At commit time each piece is applied to the fragment as the newest version has it: the
columns it rewrites are masked out of that fragment's files and its files are added, their
field ids remapped to the committed schema. That only holds if the fragment still has the
same rows and nobody rewrote the same columns of it meanwhile; otherwise :class:`Stale`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import SchemaMismatch
from .fields import Fields, with_fields

TOMBSTONE = -2


class Stale(Exception):
    """A piece no longer fits the fragment it was staged for (internal: becomes a retry or
    a ConcurrentWriteError)."""


def _file_tuple(f: Any) -> tuple[Any, ...]:
    return (f.path, list(f.fields), list(f.column_indices), f.file_major_version,
            f.file_minor_version, f.file_size_bytes, f.base_id)


def _file(t: tuple[Any, ...]) -> Any:
    from lance.fragment import DataFile

    return DataFile(*t)


@dataclass
class Piece:
    """New files for one fragment (picklable: files kept as plain tuples)."""

    fragment_id: int
    physical_rows: int
    files: list[tuple[Any, ...]]
    ids: dict[str, int]
    """Column path -> field id of the numbering the files use."""
    rewritten: dict[str, list[str]] = field(default_factory=dict)
    """Existing column path -> paths of the files that held it when the piece was staged."""
    columns: tuple[str, ...] = ()
    rows: np.ndarray | None = None
    """Row addresses whose values the piece sets (None: every row)."""


class Feed:
    """Batches handed to a pylance writer: counts their rows and keeps the exception the
    batches themselves raised, so the caller's own error surfaces (not pylance's wrapping)."""

    def __init__(self, batches: Iterator[pa.RecordBatch], schema: pa.Schema,
                 columns: list[str] | None = None) -> None:
        self.batches, self.schema, self.columns = batches, schema, columns
        self.rows = 0
        self.failure: BaseException | None = None

    def reader(self) -> pa.RecordBatchReader:
        def gen() -> Iterator[pa.RecordBatch]:
            try:
                for b in self.batches:
                    self.rows += b.num_rows
                    if self.columns is not None:
                        b = pa.RecordBatch.from_arrays([b.column(c) for c in self.columns],
                                                       schema=self.schema)
                    yield b
            except BaseException as exc:
                self.failure = exc
                raise

        return pa.RecordBatchReader.from_batches(self.schema, gen())

    def run(self, write: Any) -> Any:
        """``write(reader)``, raising the batches' own error if they failed."""
        try:
            out = write(self.reader())
        except BaseException:
            if self.failure is not None:
                raise self.failure from None
            raise
        if self.failure is not None:
            raise self.failure
        return out


def write_fragments(uri: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch],
                    storage_options: dict[str, str] | None) -> tuple[list[Any], int]:
    """New, uncommitted fragments of the dataset at ``uri`` holding ``batches`` (written as
    they stream in), and their row count. Their field ids are a fresh numbering of
    ``schema`` (:meth:`Fields.fresh`)."""
    from lance.fragment import write_fragments as write

    feed = Feed(batches, schema)
    frags = feed.run(lambda reader: write(reader, uri, schema=schema, mode="overwrite",
                                          storage_options=storage_options))
    return list(frags), feed.rows


def leaf_paths(paths: dict[str, int], column: str) -> list[str]:
    return [p for p in paths if p == column or p.startswith(column + ".")]


def _holders(meta: Any, ids: set[int]) -> list[str]:
    return sorted({f.path for f in meta.files if ids & set(f.fields)})


def stage_existing(frag: Any, schema_paths: dict[str, int], addrs: np.ndarray,
                   values: pa.Table) -> Piece:
    """Rewrite existing columns ``values`` at the row addresses ``addrs`` of ``frag``."""
    meta = frag.metadata
    before = {f.path for f in meta.files}
    data = values.add_column(0, "_rowid", pa.array(addrs.astype(np.uint64), pa.uint64()))
    new_meta, _ = frag.update_columns(data, left_on="_rowid")
    rewritten = {}
    for c in values.column_names:
        ids = {schema_paths[p] for p in leaf_paths(schema_paths, c)}
        rewritten[c] = _holders(meta, ids)
    files = [_file_tuple(f) for f in new_meta.files if f.path not in before]
    return Piece(meta.id, meta.physical_rows, files, dict(schema_paths), rewritten,
                 tuple(values.column_names),
                 None if len(addrs) == meta.num_rows else np.asarray(addrs, dtype=np.uint64))


def stage_new(frag: Any, live_rows: int, positions: np.ndarray | None, values: pa.Table) -> Piece:
    """Add columns the table does not have yet; ``values`` rows are for the fragment's live rows
    in scan order, or for the scan positions ``positions`` (the others null)."""
    meta = frag.metadata
    before = {f.path for f in meta.files}
    if positions is not None:
        take = np.full(live_rows, -1, dtype=np.int64)
        take[positions] = np.arange(len(positions))
        idx = pa.array(take, mask=take < 0)
        values = values.take(idx)
    if values.num_rows != live_rows:
        raise SchemaMismatch(f"fragment {meta.id} has {live_rows} rows, data has {values.num_rows}")
    reader = pa.RecordBatchReader.from_batches(values.schema, values.to_batches())
    new_meta, schema = frag.merge_columns(reader)
    files = [_file_tuple(f) for f in new_meta.files if f.path not in before]
    return Piece(meta.id, meta.physical_rows, files, Fields.of(schema).paths(), {},
                 tuple(values.column_names))


def stage_new_stream(frag: Any, live_rows: int, batches: Iterator[pa.RecordBatch],
                     columns: list[str]) -> Piece:
    """:func:`stage_new` for every live row, the values streamed (one batch in memory)."""
    meta = frag.metadata
    before = {f.path for f in meta.files}
    first = next(batches)
    schema = pa.schema([first.schema.field(c) for c in columns])
    feed = Feed(itertools.chain([first], batches), schema, columns)
    try:
        new_meta, lschema = feed.run(frag.merge_columns)
    except (OSError, ValueError) as exc:
        if feed.rows != live_rows or "Stream" in str(exc):
            more = "more" if feed.rows > live_rows else str(feed.rows)
            raise SchemaMismatch(f"fragment {meta.id} has {live_rows} rows, the data has "
                                 f"{more}") from None
        raise
    if feed.rows != live_rows:
        raise SchemaMismatch(f"fragment {meta.id} has {live_rows} rows, the data has {feed.rows}")
    files = [_file_tuple(f) for f in new_meta.files if f.path not in before]
    return Piece(meta.id, meta.physical_rows, files, Fields.of(lschema).paths(), {},
                 tuple(columns))


def apply_pieces(meta: Any, pieces: list[Piece], current: dict[str, int],
                 final: dict[str, int]) -> Any:
    """The fragment ``meta`` (as the newest version has it, ids in ``current`` numbering) with
    ``pieces`` applied, its files in the ``final`` numbering. Raises Stale."""
    masked: set[int] = set()
    added = []
    seen: set[str] = set()
    for piece in pieces:
        if piece.physical_rows != meta.physical_rows:
            raise Stale(f"fragment {meta.id} was rewritten by another writer")
        for col, holders in piece.rewritten.items():
            if col in seen:
                raise Stale(f"column {col!r} of fragment {meta.id} is set twice in one step")
            ids = {current[p] for p in leaf_paths(current, col)}
            if not ids or _holders(meta, ids) != holders:
                raise Stale(f"column {col!r} of fragment {meta.id} was rewritten by another "
                            "writer")
            masked |= ids
        seen |= set(piece.columns)
        by_id = {fid: path for path, fid in piece.ids.items()}
        for t in piece.files:
            f = _file(t)
            added.append(with_fields(f, [i if i < 0 else final[by_id[i]] for i in f.fields]))
    files = [with_fields(f, [TOMBSTONE if i in masked else i for i in f.fields])
             for f in meta.files]
    return replace(meta, files=files + added)


def remap_fragment(meta: Any, source: dict[str, int], final: dict[str, int]) -> Any:
    """A new fragment (written with ``source`` ids) in the ``final`` numbering, id 0."""
    by_id = {fid: path for path, fid in source.items()}
    files = [with_fields(f, [i if i < 0 else final[by_id[i]] for i in f.fields])
             for f in meta.files]
    return replace(meta, id=0, files=files)
