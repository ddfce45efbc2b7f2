"""The reference evaluator: a bound filter on an Arrow table with SQL's three-valued logic, the
result every backend is tested against.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from .nodes import And, Cmp, Filter, Has, IsNull, Not, Or, Scalar


def to_mask(f: Filter, table: pa.Table) -> pa.ChunkedArray | pa.Array:
    """Evaluate a bound filter on ``table``: a boolean mask with nulls (unknown) as False.

    Uses SQL's three-valued logic, so ``not (x > 1)`` is False where ``x`` is null, as in a
    WHERE clause.
    """
    return pc.fill_null(_eval(f, table), False)


def _scalar(value: Scalar, typ: pa.DataType) -> pa.Scalar:
    return pa.scalar(value, type=typ)


_PC_CMP = {"=": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
           ">": pc.greater, ">=": pc.greater_equal}


def _eval(f: Filter, table: pa.Table) -> pa.ChunkedArray | pa.Array:
    if isinstance(f, And):
        out = _eval(f.items[0], table)
        for item in f.items[1:]:
            out = pc.and_kleene(out, _eval(item, table))
        return out
    if isinstance(f, Or):
        out = _eval(f.items[0], table)
        for item in f.items[1:]:
            out = pc.or_kleene(out, _eval(item, table))
        return out
    if isinstance(f, Not):
        return pc.invert(_eval(f.item, table))
    column = table.column(f.column)
    if isinstance(f, IsNull):
        return pc.is_null(column)
    if isinstance(f, Has):
        flat_parent = pc.list_parent_indices(column)
        hit = pc.equal(pc.list_flatten(column), _scalar(f.value, column.type.value_type))
        hits = pc.filter(flat_parent, pc.fill_null(hit, False))
        present = pc.is_in(pa.array(range(len(column)), pa.int64()), value_set=hits.cast(pa.int64()))
        return pc.if_else(pc.is_null(column), pa.scalar(None, pa.bool_()), present)
    if isinstance(f, Cmp):
        return _PC_CMP[f.op](column, _scalar(f.value, column.type))
    values = pa.array(list(f.values), type=column.type)
    hit = pc.is_in(column, value_set=values)
    return pc.if_else(pc.is_null(column), pa.scalar(None, pa.bool_()), hit)
