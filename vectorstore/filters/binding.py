"""Binding a filter to a table's schema: columns exist, literals converted to column types, trees
simplified and bounded in size (what every backend compiles).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import cast

import pyarrow as pa

from ..errors import ColumnNotFound, InvalidFilter
from ..names import check_name
from .nodes import (
    CMP_OPS,
    MAX_DEPTH,
    MAX_TERMS,
    MAX_TEXT_DEPTH,
    And,
    Cmp,
    Filter,
    Has,
    In,
    IsNull,
    Not,
    Or,
    Scalar,
)


def _coerce(value: object, typ: pa.DataType, column: str) -> Scalar:
    """Convert a literal to the Python type that matches an Arrow column type, or refuse."""

    def refuse(expected: str) -> InvalidFilter:
        return InvalidFilter(
            f"column {column!r} is {typ}: value {value!r} is not {expected}"
        )

    if value is None:
        raise InvalidFilter(f"column {column!r}: use is null to compare with null")
    if pa.types.is_boolean(typ):
        if isinstance(value, bool):
            return value
        raise refuse("true or false")
    if pa.types.is_integer(typ):
        if isinstance(value, bool):
            raise refuse("a number")
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            if not math.isfinite(value):
                raise refuse("a finite number")
            return int(value) if value.is_integer() else value
        raise refuse("a number")
    if pa.types.is_floating(typ) or pa.types.is_decimal(typ):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise refuse("a number")
        if isinstance(value, float) and not math.isfinite(value):
            raise refuse("a finite number")
        return value
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        if isinstance(value, str):
            if "\x00" in value:
                raise refuse("a string without NUL characters")
            return value
        raise refuse("a quoted string")
    if pa.types.is_timestamp(typ):
        if isinstance(value, dt.datetime):
            out = value
        elif isinstance(value, dt.date):
            out = dt.datetime(value.year, value.month, value.day)
        elif isinstance(value, str):
            try:
                out = dt.datetime.fromisoformat(value)
            except ValueError:
                raise refuse("an ISO timestamp") from None
        else:
            raise refuse("a timestamp")
        if typ.tz is not None and out.tzinfo is None:
            out = out.replace(tzinfo=dt.UTC)
        if typ.tz is None and out.tzinfo is not None:
            out = out.astimezone(dt.UTC).replace(tzinfo=None)
        return out
    if pa.types.is_date(typ):
        if isinstance(value, dt.datetime):
            raise refuse("a date without time")
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value)
            except ValueError:
                raise refuse("an ISO date (YYYY-MM-DD)") from None
        raise refuse("a date")
    raise InvalidFilter(f"column {column!r} has type {typ}, which filters cannot compare")


def _field(schema: pa.Schema, column: str) -> pa.Field:
    check_name(column, "column name")
    idx = schema.get_field_index(column)
    if idx < 0:
        raise ColumnNotFound(
            f"filter names unknown column {column!r}; columns: {', '.join(schema.names)}"
        )
    return schema.field(idx)


def _is_list(typ: pa.DataType) -> bool:
    return pa.types.is_list(typ) or pa.types.is_large_list(typ)


def _shape(f: object) -> tuple[int, int]:
    """(nesting depth, number of leaves) of a filter tree, without recursion."""
    depth = leaves = 0
    stack: list[tuple[object, int]] = [(f, 1)]
    while stack:
        node, d = stack.pop()
        depth = max(depth, d)
        if depth > 10 * MAX_TEXT_DEPTH:
            break
        if isinstance(node, And | Or):
            stack.extend((i, d + 1) for i in node.items)
        elif isinstance(node, Not):
            stack.append((node.item, d + 1))
        else:
            leaves += 1
    return depth, leaves


def simplify(f: Filter) -> Filter:
    """The same filter with nested and/or flattened, one-item and/or unwrapped and double
    negation removed (all exact under SQL's three-valued logic)."""
    if isinstance(f, Not):
        inner = simplify(f.item)
        return inner.item if isinstance(inner, Not) else Not(inner)
    if isinstance(f, And | Or):
        kind = type(f)
        items: list[Filter] = []
        for i in f.items:
            i = simplify(i)
            items.extend(cast("And | Or", i).items if isinstance(i, kind) else (i,))
        return items[0] if len(items) == 1 else kind(tuple(items))  # () stays: bind refuses
    return f


def check_size(f: Filter) -> Filter:
    """``f`` simplified, or InvalidFilter when it nests or holds more than backends accept."""
    depth, leaves = _shape(f)
    if depth > 4 * MAX_TEXT_DEPTH:
        raise InvalidFilter(f"the filter nests more than {4 * MAX_TEXT_DEPTH} levels deep; "
                            "simplify it")
    if leaves > MAX_TERMS:
        raise InvalidFilter(f"the filter has {leaves:,} comparisons, more than {MAX_TERMS:,}: "
                            "use 'column in (...)' for long lists of values")
    out = simplify(f)
    depth, _ = _shape(out)
    if depth > MAX_DEPTH:
        raise InvalidFilter(f"the filter nests and/or/not {depth} levels deep, more than "
                            f"{MAX_DEPTH}; simplify it")
    return out


def bind(f: Filter, schema: pa.Schema) -> Filter:
    """Check ``f`` against ``schema`` and return it with literals converted to column types.

    Raises ColumnNotFound for an unknown column and InvalidFilter for a value that does not
    fit its column (a string compared with a number column, ``has`` on a non-list column, ...)
    or a tree too deep or too large for the backends (:func:`check_size`).
    """
    return _bind(check_size(f), schema)


def _bind(f: Filter, schema: pa.Schema) -> Filter:
    if isinstance(f, And):
        if not f.items:
            raise InvalidFilter("'and' needs at least one operand")
        return And(tuple(_bind(i, schema) for i in f.items))
    if isinstance(f, Or):
        if not f.items:
            raise InvalidFilter("'or' needs at least one operand")
        return Or(tuple(_bind(i, schema) for i in f.items))
    if isinstance(f, Not):
        return Not(_bind(f.item, schema))
    if not isinstance(f, Cmp | In | IsNull | Has):
        raise InvalidFilter(f"not a filter: {f!r}")
    fld = _field(schema, f.column)
    typ = fld.type
    if isinstance(f, IsNull):
        return f
    if isinstance(f, Has):
        if not _is_list(typ):
            raise InvalidFilter(f"has() needs a list column; {f.column!r} is {typ}")
        return Has(f.column, _coerce(f.value, typ.value_type, f.column))
    if _is_list(typ) or pa.types.is_fixed_size_list(typ):
        raise InvalidFilter(f"column {f.column!r} is a list ({typ}); use has({f.column}, value)")
    if isinstance(f, Cmp):
        if f.op not in CMP_OPS:
            raise InvalidFilter(f"unknown operator {f.op!r}; expected one of {' '.join(CMP_OPS)}")
        if pa.types.is_boolean(typ) and f.op not in ("=", "!="):
            raise InvalidFilter(f"column {f.column!r} is boolean: only = and != apply")
        return Cmp(f.column, f.op, _coerce(f.value, typ, f.column))
    if not f.values:
        raise InvalidFilter(f"'in' on column {f.column!r} needs at least one value")
    return In(f.column, tuple(_coerce(v, typ, f.column) for v in f.values))
