"""Row and key hashes: the sha256 of a row's content (generated ids), and a 64-bit numpy
hash of string keys (one seed, or two independent ones for the key sets)."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow as pa

from ..errors import MappingError
from ..identity import hash_rows
from .cast import _valid_mask


def content_hash(batch: pa.RecordBatch) -> pa.Array:
    """sha256 (hex) of each row's content: column names sorted, values as text, nulls marked.

    Stable across loads and column order; computed by DuckDB's vectorised sha256 (Arrow has
    no hash kernel).
    """
    names = sorted(batch.schema.names)
    if not names:
        raise MappingError("cannot hash rows with no columns")
    parts = []
    for n in names:
        q = '"' + n.replace('"', '""') + '"'
        label = n.replace("'", "''")
        parts.append(f"coalesce('{label}=' || CAST({q} AS VARCHAR), '{label}\\N')")
    sql = "SELECT sha256(concat_ws(chr(31), " + ", ".join(parts) + ")) AS h FROM t"
    arrays = [a.cast(pa.float32()) if pa.types.is_float16(a.type) else a for a in batch.columns]
    batch = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
    try:
        return hash_rows(sql, batch).cast(pa.string())
    except duckdb.Error:  # a type DuckDB cannot read: hash the rows' JSON text instead
        import hashlib

        rows = batch.select(names).to_pylist()
        return pa.array([hashlib.sha256(json.dumps(r, sort_keys=True, default=str).encode()
                                        ).hexdigest() for r in rows], pa.string())


_HASH_BLOCK = 1 << 22  # key bytes hashed at a time (bounds the uint64 temporaries)
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_POS_WEIGHTS: dict[int, np.ndarray] = {}


_WEIGHT_CHUNK = 1024


def _weights(seed: int, n: int) -> np.ndarray:
    """Fixed pseudo-random odd 64-bit weights, one per byte position (grown on demand).

    Grown by appending chunks, each from its own seeded generator, so the weight of a
    position never changes: a key hashes the same before and after a longer key was seen
    (sets of hashes built across batches stay consistent).
    """
    w = _POS_WEIGHTS.get(seed)
    if w is None or len(w) < n:
        parts = [] if w is None else [w]
        for k in range(0 if w is None else len(w) // _WEIGHT_CHUNK,
                       max(1, -(-n // _WEIGHT_CHUNK))):
            c = np.random.default_rng([seed, k]).integers(0, 2**63, _WEIGHT_CHUNK,
                                                          dtype=np.uint64)
            parts.append(c * np.uint64(2) + np.uint64(1))
        w = np.concatenate(parts)
        _POS_WEIGHTS[seed] = w
    return w


def _splitmix(h: np.ndarray) -> np.ndarray:
    h = (h ^ (h >> np.uint64(30))) * _MIX[0]
    h = (h ^ (h >> np.uint64(27))) * _MIX[1]
    return h ^ (h >> np.uint64(31))


def key_hash(keys: pa.Array, seed: int = 0) -> np.ndarray:
    """A 64-bit hash of each string key, computed with numpy over the Arrow buffers.

    Each byte (plus one) times a fixed random weight for its position, summed mod 2^64, mixed
    with the length. Equal keys hash equal; two different keys collide with probability about
    2^-57 per ``seed`` (the weights are random, so no crafted family of strings collides).
    Nulls hash as the empty string. No Python loop over rows.
    """
    if pa.types.is_dictionary(keys.type):
        keys = keys.dictionary_decode()
    if not pa.types.is_string(keys.type):
        keys = keys.cast(pa.string())
    n = len(keys)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    offs = np.frombuffer(keys.buffers()[1], dtype=np.int32)[keys.offset: keys.offset + n + 1]
    offs = offs.astype(np.int64)
    lens = np.diff(offs)
    if keys.null_count:
        lens[~_valid_mask(keys)] = 0
    data_buf = keys.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else \
        np.zeros(0, np.uint8)
    weights = _weights(seed, int(lens.max()) if n else 0)
    start = 0
    while start < n:
        # rows [start, stop) hold at most _HASH_BLOCK bytes (at least one row)
        stop = int(np.searchsorted(offs, offs[start] + _HASH_BLOCK, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        lo, hi = int(offs[start]), int(offs[stop])
        part_lens = lens[start:stop]
        starts = offs[start:stop] - lo
        pos = np.arange(hi - lo, dtype=np.int32) - np.repeat(starts.astype(np.int32),
                                                             part_lens) \
            if part_lens.sum() == hi - lo else None  # int32: a slice is < _HASH_BLOCK bytes
        if pos is None:  # nulls with data behind them: gather only the live bytes
            idx = np.concatenate([np.arange(s, s + ln) for s, ln in
                                  zip(starts.tolist(), part_lens.tolist(), strict=True)]
                                 ) if part_lens.sum() else np.zeros(0, np.int64)
            live = data[lo:hi][idx.astype(np.int64)]
            pos = idx - np.repeat(starts, part_lens)
        else:
            live = data[lo:hi]
        contrib = (live.astype(np.uint64) + np.uint64(1)) * weights[pos]
        csum = np.zeros(len(contrib) + 1, dtype=np.uint64)
        np.cumsum(contrib, out=csum[1:])
        ends = np.cumsum(part_lens)
        h = csum[ends] - csum[ends - part_lens]
        out[start:stop] = _splitmix(h ^ (part_lens.astype(np.uint64) * _MIX[1]))
        start = stop
    return out


def _key_hashes(keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Two independent 64-bit hashes of each key (see :func:`key_hash`)."""
    return key_hash(keys, 0), key_hash(keys, 1)
