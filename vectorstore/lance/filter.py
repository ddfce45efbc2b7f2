"""Compile a bound filter into a LanceDB (DataFusion SQL) predicate.

LanceDB takes predicates as text, so this is the one place text is built: identifiers are
validated plain names quoted with backticks, strings are single-quoted with quotes doubled,
numbers are rendered from Python numbers, dates and timestamps as typed literals. Nothing
the user typed reaches the predicate except through these escapes.
"""

from __future__ import annotations

import datetime as dt
import math

from ..errors import InvalidFilter
from ..filters import And, Cmp, Filter, Has, In, IsNull, Not, Or, Scalar
from ..names import check_name


def quote_ident(name: str) -> str:
    return f"`{check_name(name, 'column name')}`"


def literal(value: Scalar) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFilter(f"value {value!r} is not a finite number")
        return repr(float(value))
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidFilter("string values cannot contain NUL characters")
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return f"TIMESTAMP '{value.isoformat(sep=' ', timespec='microseconds')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    raise InvalidFilter(f"cannot use {type(value).__name__} value {value!r} in a filter")


def compile_filter(f: Filter) -> str:
    """A predicate string for ``where``/``filter`` arguments of LanceDB."""
    if isinstance(f, And):
        return "(" + " AND ".join(compile_filter(i) for i in f.items) + ")"
    if isinstance(f, Or):
        return "(" + " OR ".join(compile_filter(i) for i in f.items) + ")"
    if isinstance(f, Not):
        return f"(NOT {compile_filter(f.item)})"
    if isinstance(f, IsNull):
        return f"({quote_ident(f.column)} IS NULL)"
    if isinstance(f, Has):
        return f"array_has({quote_ident(f.column)}, {literal(f.value)})"
    if isinstance(f, In):
        values = list(dict.fromkeys(f.values))
        if len(values) == 1:
            # DataFusion rewrites a one-value IN list in a way that loses SQL's NULL logic:
            # NOT (a IN ('x')) OR NOT (a IN ('y')) comes back true for rows where a is NULL
            return f"({quote_ident(f.column)} = {literal(values[0])})"
        return f"({quote_ident(f.column)} IN ({', '.join(literal(v) for v in values)}))"
    if isinstance(f, Cmp):
        return f"({quote_ident(f.column)} {f.op} {literal(f.value)})"
    raise InvalidFilter(f"not a filter: {f!r}")
