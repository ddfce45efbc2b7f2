"""Where each key lives in a Lance dataset: row addresses, scan positions, presence checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


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
