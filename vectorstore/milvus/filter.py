"""Compile a bound filter into a Milvus boolean expression, with SQL's three-valued logic.

Milvus takes filters as text, so this is the one place that text is built: names are
validated plain identifiers (and never one of Milvus's keywords: see
:func:`vectorstore.milvus.types.check_column_name`), strings are double-quoted with every
backslash, quote and line break escaped (the escapes Milvus's lexer knows), numbers are
rendered from Python numbers (float32 columns compare with the float32 value, as the Arrow
reference does), timestamps and dates as the integers they are stored as. Nothing a user
typed reaches the expression except through these escapes.

Milvus evaluates ``not`` on a row whose column is null as true (``not (s in ["x"])`` keeps
rows where ``s`` is null); the filter model says unknown. So every node compiles to the
expression that is true exactly where the node is TRUE (``_true``), with ``_false`` for the
rows where it is FALSE, both guarded with ``is not null``: ``not f`` is then ``_false(f)``.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import InvalidFilter
from ..filters import And, Cmp, Filter, Has, In, IsNull, Not, Or
from ..names import check_name
from ..schema import TableInfo
from .types import has_field

_NEGATE = {"=": "!=", "!=": "=", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
_OPS = {"=": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def quote_string(value: str) -> str:
    """A Milvus string literal holding exactly ``value``."""
    if "\x00" in value:
        raise InvalidFilter("string values cannot contain NUL characters")
    return '"' + "".join(_ESCAPES.get(ch, ch) for ch in value) + '"'


def literal(value: Any, typ: pa.DataType) -> str:
    """``value`` (already coerced to the column's type by :func:`vectorstore.filters.bind`) as
    Milvus expression text, in the form the column is stored."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if pa.types.is_timestamp(typ) or pa.types.is_date(typ):
        if not isinstance(value, dt.date):
            raise InvalidFilter(f"cannot compare {typ} with {value!r}")
        stored = pa.scalar(value, typ).cast(pa.int64() if not pa.types.is_date32(typ)
                                            else pa.int32())
        return str(int(stored.as_py()))
    if isinstance(value, int | float) and not math.isfinite(value):
        raise InvalidFilter(f"value {value!r} is not a finite number")
    if isinstance(value, int | float) and pa.types.is_float32(typ):
        return repr(float(np.float32(value)))  # the column's float32, as the reference compares
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, str):
        return quote_string(value)
    raise InvalidFilter(f"cannot use {type(value).__name__} value {value!r} in a filter")


class _Compiler:
    def __init__(self, info: TableInfo) -> None:
        self.info = info
        self.schema = info.schema

    def ident(self, column: str) -> str:
        return check_name(column, "column name")

    def typ(self, column: str) -> pa.DataType:
        return self.schema.field(column).type

    def not_null(self, column: str) -> str:
        if column == self.info.key:
            return ""
        return f"{self.ident(column)} is not null and "

    def leaf(self, f: Filter, positive: bool) -> str:
        if isinstance(f, IsNull):
            if f.column in self.info.vectors:
                flag = has_field(self.ident(f.column))
                return f"({flag} == {'false' if positive else 'true'})"
            return f"({self.ident(f.column)} is {'' if positive else 'not '}null)"
        assert isinstance(f, Cmp | In | Has), f  # the compiler hands leaves only
        c = self.ident(f.column)
        guard = self.not_null(f.column)
        if isinstance(f, Has):
            test = f"array_contains({c}, {literal(f.value, self.typ(f.column).value_type)})"
            return f"({guard}{test})" if positive else f"({guard}not {test})"
        if isinstance(f, In):
            typ = self.typ(f.column)
            values = ", ".join(literal(v, typ) for v in dict.fromkeys(f.values))
            test = f"{c} in [{values}]"
            return f"({guard}{test})" if positive else f"({guard}not ({test}))"
        if isinstance(f, Cmp):
            if f.op not in _OPS:
                raise InvalidFilter(f"unknown operator {f.op!r}")
            op = _OPS[f.op] if positive else _OPS[_NEGATE[f.op]]
            return f"({guard}{c} {op} {literal(f.value, self.typ(f.column))})"
        raise InvalidFilter(f"not a filter: {f!r}")

    def compile(self, f: Filter, positive: bool = True) -> str:
        """The rows where ``f`` is TRUE (``positive``) or FALSE (not ``positive``)."""
        if isinstance(f, Not):
            return self.compile(f.item, not positive)
        if isinstance(f, And | Or):
            conj = isinstance(f, And) == positive  # De Morgan for the FALSE side
            joiner = " and " if conj else " or "
            return "(" + joiner.join(self.compile(i, positive) for i in f.items) + ")"
        return self.leaf(f, positive)


def compile_filter(f: Filter, info: TableInfo) -> str:
    """A Milvus expression for a filter already bound to ``info.schema``."""
    return _Compiler(info).compile(f)
