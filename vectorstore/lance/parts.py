"""LanceDB partitions (fragments): listed, scanned and staged one by one, for runners that
compute a partition's new columns anywhere (another process or machine) and commit them all
in one step; and the per-fragment counts that only change with their fragment.

A mixin of :class:`vectorstore.lance.backend.LanceStore` (it uses its ``_dataset``,
``_translate`` and caches).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..base import Data, _sorted_positions
from ..conform import conform
from ..errors import InvalidOption, SchemaMismatch, StoreError
from ..filters import IsNull
from ..schema import TableInfo
from ..store_helpers import lookup_columns
from ..txn import Partition, StagedPartition
from .fields import Fields
from .filter import compile_filter
from .stage import stage_existing, stage_new, stage_new_stream
from .txn import is_sparse, read_description, stage_sparse


class LancePartitions:
    """Partition listing, scanning and staging, null counts and data versions."""

    _dataset: Any
    _translate: Any
    _lock: Any
    _null_counts: dict[tuple[str, str, int, str], int]
    _data_versions: dict[str, tuple[int, str]]
    table_info: Any

    def partitions(self, name: str) -> list[Partition]:
        ds = self._dataset(name)
        return [Partition(name, f.fragment_id, ds.version, f.metadata.num_rows)
                for f in ds.get_fragments()]

    def _at(self, partition: Partition) -> Any:
        ds = self._dataset(partition.table)
        if partition.version is not None and ds.version != partition.version:
            ds = ds.checkout_version(partition.version)
        return ds

    def _scan_partition(self, partition: Partition, *, columns: Sequence[str] | None = None,
                        batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        frag, cols = self._fragment(partition, columns)
        with self._translate(partition.table, "scanning a partition"):
            reader = frag.to_batches(columns=cols, batch_size=batch_size)
        for b in reader:
            yield b.replace_schema_metadata(None)

    def _take_partition(self, partition: Partition, positions: np.ndarray, *,
                        columns: Sequence[str] | None, batch_size: int
                        ) -> Iterator[pa.RecordBatch]:
        """Random access: only the rows asked for are read (``LanceFragment.take`` counts
        live rows, the scan positions)."""
        frag, cols = self._fragment(partition, columns)
        for start in range(0, len(positions), batch_size):
            with self._translate(partition.table, "reading rows of a partition"):
                t = frag.take(positions[start:start + batch_size].tolist(), columns=cols)
            for b in t.to_batches():
                yield b.replace_schema_metadata(None)

    def _fragment(self, partition: Partition, columns: Sequence[str] | None
                  ) -> tuple[Any, list[str]]:
        ds = self._at(partition)
        info = read_description(partition.table, ds.schema)
        info.check_columns(columns)
        frag = ds.get_fragment(partition.id)
        if frag is None:
            raise StoreError(f"table {partition.table!r} has no partition {partition.id} at "
                             f"version {partition.version}")
        return frag, list(columns) if columns is not None else info.schema.names

    def stage_partition(self, partition: Partition, data: Data, *,
                        rows: np.ndarray | Sequence[int] | None = None,
                        info: TableInfo | None = None) -> StagedPartition:
        ds = self._at(partition)
        base = read_description(partition.table, ds.schema)
        info = info or base
        frag = ds.get_fragment(partition.id)
        if frag is None:
            raise StoreError(f"table {partition.table!r} has no partition {partition.id} at "
                             f"version {partition.version}")
        it = conform(info, data, partial=True)
        first = next(it, None)
        cols = [] if first is None else [c for c in first.schema.names if c != info.key]
        if first is None or not cols:
            for _ in it:  # drain: a stream's errors still surface
                pass
            return StagedPartition(partition, (), [])
        live = frag.metadata.num_rows
        old = [c for c in cols if c in base.schema.names]
        new = [c for c in cols if c not in base.schema.names]
        if rows is None and not old:  # new columns for every row: stream into the files
            with self._translate(partition.table, "staging a partition"):
                piece = stage_new_stream(frag, live, itertools.chain([first], it), new)
            return StagedPartition(partition, tuple(cols), [piece])
        table = pa.Table.from_batches([first, *it])
        pos = None if rows is None else _sorted_positions(rows)
        want = live if pos is None else len(pos)
        if table.num_rows != want:
            raise SchemaMismatch(f"table {partition.table!r}, partition {partition.id}: "
                                 f"{want} rows to stage, the data has {table.num_rows}")
        if pos is not None and len(pos) and (pos[0] < 0 or pos[-1] >= live):
            raise InvalidOption(f"partition {partition.id} has {live} rows: position "
                                f"{int(pos[-1])} is out of range")
        pieces: list[Any] = []
        with self._translate(partition.table, "staging a partition"):
            if old:
                addrs = frag.to_table(columns=[], with_row_address=True).column(
                    "_rowaddr").to_numpy().astype(np.uint64)
                if pos is not None:
                    addrs = addrs[pos]
                paths = Fields.of(ds.lance_schema).paths()
                if pos is not None and not new and is_sparse(len(pos),
                                                             frag.metadata.physical_rows):
                    # a few rows: moved at commit time, not a rewrite of the whole fragment
                    pieces.append(stage_sparse(frag, paths, addrs, table.select(old)))
                else:
                    pieces.append(stage_existing(frag, paths, addrs, table.select(old)))
            if new:
                pieces.append(stage_new(frag, live, pos, table.select(new)))
        return StagedPartition(partition, tuple(cols), pieces)

    def key_index(self, name: str, column: str | None = None) -> str | None:
        """The name of the scalar index on ``column`` (default: the key), if there is one."""
        ds = self._dataset(name)
        column = column or read_description(name, ds.schema).key
        if column is None:
            return None
        with self._translate(name, "listing indexes"):
            by_id = {i: p for p, i in Fields.of(ds.lance_schema).paths().items()}
            for ix in ds.describe_indices():
                kind = str(ix.type_url).lower()
                if [by_id.get(f) for f in ix.fields] == [column] and "ivf" not in kind and \
                        "hnsw" not in kind and "vector" not in kind:
                    return str(ix.name)
        return None

    def lookup(self, name: str, keys: pa.Array, *, columns: Sequence[str] | None = None,
               key: str | None = None) -> pa.Table:
        """One filtered read of the rows holding ``keys`` (an ``IN`` over the column, answered
        by its scalar index when there is one, by a scan of that column otherwise)."""
        ds = self._dataset(name)
        info = read_description(name, ds.schema)
        key, cols = lookup_columns(info, key, columns)
        values = pa.array(keys)
        typ = info.schema.field(key).type
        values = values.filter(values.is_valid())
        if len(values) == 0:
            return pa.table({c: pa.array([], info.schema.field(c).type) for c in cols})
        if values.type != typ:
            values = values.cast(typ)
        import pyarrow.compute as pc

        with self._translate(name, "looking up keys"):
            out = ds.to_table(columns=cols, filter=pc.field(key).isin(values.unique()))
        return out.replace_schema_metadata(None)

    def null_count(self, name: str, column: str) -> int:
        """Counted fragment by fragment and remembered per fragment state, so a repeated call
        only counts the fragments written since (new rows, a rewritten column)."""
        info = self.table_info(name)
        info.check_columns([column])
        ds = self._dataset(name)
        paths = Fields.of(ds.lance_schema).paths()
        ids = {paths[p] for p in paths if p == column or p.startswith(column + ".")}
        total = 0
        with self._translate(name, "counting nulls"):
            for frag in ds.get_fragments():
                meta = frag.metadata
                state = (name, column, meta.id, json.dumps(meta.to_json(), sort_keys=True,
                                                           default=str))
                n = self._null_counts.get(state)
                if n is None:
                    held = any(ids & set(f.fields) for f in meta.files)
                    n = frag.count_rows(compile_filter(IsNull(column))) if held else \
                        meta.num_rows
                    with self._lock:
                        self._null_counts[state] = n
                total += n
        return total

    def data_version(self, name: str) -> str:
        ds = self._dataset(name)
        with self._lock:
            cached = self._data_versions.get(name)
        if cached is not None and cached[0] == ds.version:
            return cached[1]
        h = hashlib.sha256(json.dumps(Fields.of(ds.lance_schema).items).encode())
        for f in ds.get_fragments():
            h.update(json.dumps(f.metadata.to_json(), sort_keys=True, default=str).encode())
        token = h.hexdigest()[:16]
        with self._lock:
            self._data_versions[name] = (ds.version, token)
        return token

