"""Row-wise equality of Arrow columns, for telling a changed row from an unchanged one.

Two values are equal when both are null, both are NaN, or they hold the same value; lists and
vectors are equal element by element. Vectorised (Arrow compute and numpy), no row loop.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _np(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def values_equal(a: pa.Array, b: pa.Array) -> np.ndarray:
    """Boolean numpy array: row ``i`` of ``a`` equals row ``i`` of ``b`` (same type, length)."""
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    if isinstance(b, pa.ChunkedArray):
        b = b.combine_chunks()
    n = len(a)
    if n == 0:
        return np.zeros(0, dtype=bool)
    a_null, b_null = _np(a.is_null()), _np(b.is_null())
    both_null = a_null & b_null
    valid = ~a_null & ~b_null
    t = a.type
    if pa.types.is_fixed_size_list(t):
        d = t.list_size
        fa = a.flatten() if a.null_count == 0 else pc.list_flatten(a.fill_null(_zeros(t)))
        fb = b.flatten() if b.null_count == 0 else pc.list_flatten(b.fill_null(_zeros(t)))
        ea = values_equal(fa, fb).reshape(n, d).all(axis=1) if d else np.ones(n, bool)
        return both_null | (valid & ea)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        same_len = valid & (_np(pc.equal(pc.list_value_length(a), pc.list_value_length(b))))
        out = both_null.copy()
        idx = np.flatnonzero(same_len)
        if idx.size:
            sa, sb = a.take(pa.array(idx)), b.take(pa.array(idx))
            elem = values_equal(pc.list_flatten(sa), pc.list_flatten(sb))
            parents = pc.list_parent_indices(sa).to_numpy(zero_copy_only=False)
            bad = np.bincount(parents[~elem], minlength=idx.size) if elem.size else \
                np.zeros(idx.size, dtype=np.int64)
            out[idx] = bad == 0
        return out
    eq = _np(pc.equal(a, b))
    if pa.types.is_floating(t):
        eq |= _np(pc.and_(pc.is_nan(a), pc.is_nan(b)))
    return both_null | (valid & eq)


def _zeros(t: pa.FixedSizeListType) -> pa.Scalar:
    return pa.scalar([0] * t.list_size, t)


def rows_equal(a: pa.Table, b: pa.Table, columns: list[str]) -> np.ndarray:
    """Boolean numpy array: every one of ``columns`` of row ``i`` is equal in ``a`` and ``b``."""
    out = np.ones(a.num_rows, dtype=bool)
    for c in columns:
        out &= values_equal(a.column(c), b.column(c))
    return out
