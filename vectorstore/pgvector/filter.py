"""Compile a bound filter into parameterised PostgreSQL: ``sql.Composed`` text plus values.

Column names go through :func:`vectorstore.check_name` and ``sql.Identifier``; every value is a
``%s`` placeholder cast to the column's PostgreSQL type (so ``real = 0.1`` compares float32 with
float32, as the Arrow reference does). No value or name is ever formatted into the SQL text.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from psycopg import sql

from ..errors import InvalidFilter
from ..filters import And, Cmp, Filter, Has, In, IsNull, Not, Or
from ..names import check_name

_OPS = {op: sql.SQL(op) for op in ("=", "!=", "<", "<=", ">", ">=")}


def plain_pg_type(typ: pa.DataType) -> str | None:
    """The PostgreSQL type of a boolean, integer, float or string Arrow type, else None."""
    if pa.types.is_boolean(typ):
        return "boolean"
    if pa.types.is_int8(typ) or pa.types.is_int16(typ) or pa.types.is_uint8(typ):
        return "smallint"
    if pa.types.is_int32(typ) or pa.types.is_uint16(typ):
        return "integer"
    if pa.types.is_int64(typ) or pa.types.is_uint32(typ):
        return "bigint"
    if pa.types.is_float32(typ):
        return "real"
    if pa.types.is_float64(typ):
        return "double precision"
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "text"
    return None


def scalar_pg_type(typ: pa.DataType) -> str:
    """The PostgreSQL type of a scalar Arrow type (the subset filters can compare)."""
    plain = plain_pg_type(typ)
    if plain is not None:
        return plain
    if pa.types.is_timestamp(typ):
        return "timestamptz" if typ.tz is not None else "timestamp"
    if pa.types.is_date(typ):
        return "date"
    raise InvalidFilter(f"filters cannot compare values of type {typ}")


def _placeholder(value: Any, typ: pa.DataType) -> sql.Composable:
    pg = scalar_pg_type(typ)
    if pa.types.is_integer(typ) and isinstance(value, float):
        pg = "double precision"  # 2.5 against an integer column compares as a number
    return sql.SQL("%s::") + sql.SQL(pg)


class _Compiler:
    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.params: list[Any] = []

    def ident(self, column: str) -> sql.Identifier:
        return sql.Identifier(check_name(column, "column name"))

    def typ(self, column: str) -> pa.DataType:
        return self.schema.field(column).type

    def value(self, value: Any, typ: pa.DataType) -> sql.Composable:
        self.params.append(value)
        return _placeholder(value, typ)

    def compile(self, f: Filter) -> sql.Composable:
        if isinstance(f, And | Or):
            joiner = sql.SQL(" AND " if isinstance(f, And) else " OR ")
            return sql.SQL("({})").format(joiner.join(self.compile(i) for i in f.items))
        if isinstance(f, Not):
            return sql.SQL("(NOT {})").format(self.compile(f.item))
        if isinstance(f, IsNull):
            return sql.SQL("({} IS NULL)").format(self.ident(f.column))
        if isinstance(f, Has):
            # containment is false (not null) when the list holds nulls but not the value,
            # and null for a null list: the reference semantics; GIN indexes serve it
            elem = self.typ(f.column).value_type
            return sql.SQL("({} @> ARRAY[{}])").format(self.ident(f.column),
                                                       self.value(f.value, elem))
        if isinstance(f, In):
            typ = self.typ(f.column)
            items = sql.SQL(", ").join(self.value(v, typ) for v in f.values)
            return sql.SQL("({} IN ({}))").format(self.ident(f.column), items)
        if isinstance(f, Cmp):
            if f.op not in _OPS:
                raise InvalidFilter(f"unknown operator {f.op!r}")
            return sql.SQL("({} {} {})").format(self.ident(f.column), _OPS[f.op],
                                                self.value(f.value, self.typ(f.column)))
        raise InvalidFilter(f"not a filter: {f!r}")


def compile_filter(f: Filter, schema: pa.Schema) -> tuple[sql.Composable, list[Any]]:
    """``(predicate, params)`` for a filter already bound to ``schema``."""
    c = _Compiler(schema)
    return c.compile(f), c.params
