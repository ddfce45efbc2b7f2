"""Holdings: the list of products a customer holds, from yes/no flag columns and/or a
delimited list column (as the plan names them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .cast import _np

if TYPE_CHECKING:
    from .plan import Plan


def _holdings(batch: pa.RecordBatch, plan: Plan) -> pa.Array:
    """list<string> of products held, from yes/no flag columns and/or a list column."""
    n = batch.num_rows
    parts_rows: list[np.ndarray] = []
    parts_vals: list[pa.Array] = []
    if plan.flags:
        held = np.zeros((n, len(plan.flags)), dtype=bool)
        for j, (_, col, values) in enumerate(plan.flags):
            arr = batch.column(col)
            text = pc.utf8_lower(pc.utf8_trim_whitespace(arr.cast(pa.string())))
            held[:, j] = _np(pc.is_in(text, value_set=pa.array(list(values))))
        rows, cols = np.nonzero(held)  # row-major: each row's products in declaration order
        products = pa.array([p for p, _, _ in plan.flags])
        parts_rows.append(rows.astype(np.int64))
        parts_vals.append(products.take(pa.array(cols)))
    if plan.list_column:
        arr = batch.column(plan.list_column)
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            arr = pc.split_pattern(pc.utf8_trim_whitespace(arr.cast(pa.string())),
                                   plan.separator)
        flat = pc.utf8_trim_whitespace(pc.list_flatten(arr).cast(pa.string()))
        parents = np.asarray(pc.list_parent_indices(arr).to_numpy(zero_copy_only=False),
                             dtype=np.int64)
        keep = _np(pc.and_(pc.is_valid(flat), pc.not_equal(flat, "")))
        parts_rows.append(parents[keep])
        parts_vals.append(flat.filter(pa.array(keep)))
    rows = np.concatenate(parts_rows) if parts_rows else np.zeros(0, dtype=np.int64)
    values = pa.concat_arrays(parts_vals) if parts_vals else pa.array([], pa.string())
    order = np.argsort(rows, kind="stable")
    rows, values = rows[order], values.take(pa.array(order))
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(np.bincount(rows, minlength=n), dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values.cast(pa.string()))
