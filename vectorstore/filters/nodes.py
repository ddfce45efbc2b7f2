"""The filter model: the node types, the :func:`col` builder and the size limits of a tree.

A filter is a tree of :class:`Cmp`, :class:`In`, :class:`IsNull`, :class:`Has`, :class:`And`,
:class:`Or` and :class:`Not` (see :mod:`vectorstore.filters`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Union

Scalar = Union[str, int, float, bool, dt.date, dt.datetime]  # noqa: UP007 (runtime alias)
CmpOp = Literal["=", "!=", "<", "<=", ">", ">="]
CMP_OPS: tuple[str, ...] = ("=", "!=", "<", "<=", ">", ">=")


class _Node:
    """Boolean combinators shared by every filter node: ``&``, ``|`` and ``~``."""

    def __and__(self, other: Filter) -> And:
        return And((self, other))  # type: ignore[arg-type]

    def __or__(self, other: Filter) -> Or:
        return Or((self, other))  # type: ignore[arg-type]

    def __invert__(self) -> Not:
        return Not(self)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Cmp(_Node):
    column: str
    op: CmpOp
    value: Scalar


@dataclass(frozen=True)
class In(_Node):
    column: str
    values: tuple[Scalar, ...]


@dataclass(frozen=True)
class IsNull(_Node):
    column: str


@dataclass(frozen=True)
class Has(_Node):
    """True when the list column ``column`` contains ``value``."""

    column: str
    value: Scalar


@dataclass(frozen=True)
class And(_Node):
    items: tuple[Filter, ...]


@dataclass(frozen=True)
class Or(_Node):
    items: tuple[Filter, ...]


@dataclass(frozen=True)
class Not(_Node):
    item: Filter


Filter = Union[Cmp, In, IsNull, Has, And, Or, Not]  # noqa: UP007


class col:
    """Start a filter on a column: ``col("age") >= 30``."""

    def __init__(self, name: str) -> None:
        self.name = name

    def _cmp(self, op: CmpOp, value: Scalar) -> Cmp:
        return Cmp(self.name, op, value)

    def __eq__(self, value: object) -> Cmp:  # type: ignore[override]
        return self._cmp("=", value)  # type: ignore[arg-type]

    def __ne__(self, value: object) -> Cmp:  # type: ignore[override]
        return self._cmp("!=", value)  # type: ignore[arg-type]

    def __lt__(self, value: Scalar) -> Cmp:
        return self._cmp("<", value)

    def __le__(self, value: Scalar) -> Cmp:
        return self._cmp("<=", value)

    def __gt__(self, value: Scalar) -> Cmp:
        return self._cmp(">", value)

    def __ge__(self, value: Scalar) -> Cmp:
        return self._cmp(">=", value)

    __hash__ = None  # type: ignore[assignment]

    def isin(self, values: Iterable[Scalar]) -> In:
        return In(self.name, tuple(values))

    def is_null(self) -> IsNull:
        return IsNull(self.name)

    def not_null(self) -> Not:
        return Not(IsNull(self.name))

    def has(self, value: Scalar) -> Has:
        return Has(self.name, value)

    def between(self, low: Scalar, high: Scalar) -> And:
        return And((Cmp(self.name, ">=", low), Cmp(self.name, "<=", high)))


def all_of(filters: Sequence[Filter | None]) -> Filter | None:
    """AND of the non-None filters (None when there are none)."""
    items = tuple(f for f in filters if f is not None)
    if not items:
        return None
    return items[0] if len(items) == 1 else And(items)


def columns_of(f: Filter) -> set[str]:
    """Every column a filter refers to."""
    if isinstance(f, And | Or):
        return set().union(*(columns_of(i) for i in f.items))
    if isinstance(f, Not):
        return columns_of(f.item)
    return {f.column}


MAX_TEXT_DEPTH = 128
"""Parentheses a filter's text may nest (the parser recurses once per level)."""
MAX_DEPTH = 32
"""And/or/not levels a bound filter may nest once simplified (``((x))`` and ``not not x``
are ``x``; ``a and (b and c)`` is one level): deeper trees make DataFusion's planner slow
beyond use, and no one writes them by hand."""
MAX_TERMS = 10_000
"""Comparisons one filter may hold."""
