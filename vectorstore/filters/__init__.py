"""Filters as data: a small model, a parser for readable text, and schema binding.

A filter is a tree of :class:`Cmp`, :class:`In`, :class:`IsNull`, :class:`Has`, :class:`And`,
:class:`Or` and :class:`Not`. Backends compile it (a safely quoted predicate for LanceDB,
parameterised SQL for PostgreSQL); values are never pasted into query text unescaped.

Build one in code with :func:`col`::

    (col("age") >= 30) & col("region").isin(["EU", "UK"]) & ~col("products").has("mortgage")

or parse text with :func:`parse_filter`::

    parse_filter("age >= 30 and region in ('EU','UK') and not has(products, 'mortgage')")

:func:`bind` checks a filter against a table's schema (columns exist, values fit their column's
type) and converts literals to the column's type. :func:`to_mask` evaluates a bound filter on an
Arrow table with SQL's three-valued logic; it is the reference the backends are tested against.
"""

from .binding import bind, check_size, simplify
from .nodes import (
    CMP_OPS,
    MAX_DEPTH,
    MAX_TERMS,
    MAX_TEXT_DEPTH,
    And,
    Cmp,
    CmpOp,
    Filter,
    Has,
    In,
    IsNull,
    Not,
    Or,
    Scalar,
    all_of,
    col,
    columns_of,
)
from .parser import parse_filter
from .reference import to_mask

__all__ = [
    "CMP_OPS",
    "MAX_DEPTH",
    "MAX_TERMS",
    "MAX_TEXT_DEPTH",
    "And",
    "Cmp",
    "CmpOp",
    "Filter",
    "Has",
    "In",
    "IsNull",
    "Not",
    "Or",
    "Scalar",
    "all_of",
    "bind",
    "check_size",
    "col",
    "columns_of",
    "parse_filter",
    "simplify",
    "to_mask",
]
