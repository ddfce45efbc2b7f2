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

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Union, cast

import pyarrow as pa
import pyarrow.compute as pc

from .errors import ColumnNotFound, InvalidFilter
from .names import check_name

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


# --------------------------------------------------------------------------- parsing

_TOKEN = re.compile(
    r"""
    \s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
    | (?P<op><=|>=|!=|<>|==|=|<|>)
    | (?P<punct>[(),])
    | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<bad>\S)
    )""",
    re.VERBOSE,
)
MAX_TEXT_DEPTH = 128
"""Parentheses a filter's text may nest (the parser recurses once per level)."""
MAX_DEPTH = 32
"""And/or/not levels a bound filter may nest once simplified (``((x))`` and ``not not x``
are ``x``; ``a and (b and c)`` is one level): deeper trees make DataFusion's planner slow
beyond use, and no one writes them by hand."""
MAX_TERMS = 10_000
"""Comparisons one filter may hold."""

_KEYWORDS = {"and", "or", "not", "in", "is", "null", "has", "true", "false", "between", "date",
             "timestamp"}


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - the pattern matches any non-space char
            break
        kind = m.lastgroup or "bad"
        value = m.group(kind)
        start = m.start(kind)
        if kind == "bad":
            if value == "'":
                raise InvalidFilter(f"unterminated string starting at position {start} in {text!r}")
            raise InvalidFilter(f"unexpected character {value!r} at position {start} in {text!r}")
        if kind == "word" and value.lower() in _KEYWORDS:
            kind, value = "kw", value.lower()
        toks.append(_Tok(kind, value, start))
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def error(self, expected: str) -> InvalidFilter:
        t = self.peek()
        got = "end of text" if t.kind == "end" else repr(t.text)
        return InvalidFilter(f"expected {expected} at position {t.pos}, got {got}, in {self.text!r}")

    def accept(self, kind: str, text: str | None = None) -> _Tok | None:
        t = self.peek()
        if t.kind == kind and (text is None or t.text == text):
            self.i += 1
            return t
        return None

    def expect(self, kind: str, text: str | None = None, what: str | None = None) -> _Tok:
        t = self.accept(kind, text)
        if t is None:
            raise self.error(what or repr(text) if text else (what or kind))
        return t

    def parse(self) -> Filter:
        if self.peek().kind == "end":
            raise InvalidFilter("empty filter")
        f = self.parse_or()
        if self.peek().kind != "end":
            raise self.error("'and', 'or' or end of filter")
        return f

    def parse_or(self) -> Filter:
        items = [self.parse_and()]
        while self.accept("kw", "or"):
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def parse_and(self) -> Filter:
        items = [self.parse_not()]
        while self.accept("kw", "and"):
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else And(tuple(items))

    def parse_not(self) -> Filter:
        negations = 0
        while self.accept("kw", "not"):  # a loop, not recursion: "not not ... x" of any length
            negations += 1
        f = self.parse_atom()
        return Not(f) if negations % 2 else f  # NOT NOT x is x, also for NULL

    def parse_atom(self) -> Filter:
        if self.accept("punct", "("):
            self.depth += 1
            if self.depth > MAX_TEXT_DEPTH:
                raise InvalidFilter(f"the filter nests parentheses more than {MAX_TEXT_DEPTH} "
                                    f"levels deep at position {self.peek().pos}; simplify it")
            f = self.parse_or()
            self.expect("punct", ")", "')'")
            self.depth -= 1
            return f
        if self.accept("kw", "has"):
            self.expect("punct", "(", "'(' after has")
            column = self.expect("word", what="a column name").text
            self.expect("punct", ",", "','")
            value = self.parse_literal()
            self.expect("punct", ")", "')'")
            return Has(column, value)
        name = self.accept("word")
        if name is None:
            raise self.error("a column name, 'not', 'has' or '('")
        column = name.text
        if op := self.accept("op"):
            sym = {"==": "=", "<>": "!="}.get(op.text, op.text)
            return Cmp(column, sym, self.parse_literal())  # type: ignore[arg-type]
        if self.accept("kw", "is"):
            negate = bool(self.accept("kw", "not"))
            self.expect("kw", "null", "'null'")
            return Not(IsNull(column)) if negate else IsNull(column)
        negate = bool(self.accept("kw", "not"))
        if self.accept("kw", "in"):
            self.expect("punct", "(", "'(' after in")
            values = [self.parse_literal()]
            while self.accept("punct", ","):
                values.append(self.parse_literal())
            self.expect("punct", ")", "')'")
            f = In(column, tuple(values))
            return Not(f) if negate else f
        if self.accept("kw", "between"):
            low = self.parse_literal()
            self.expect("kw", "and", "'and'")
            high = self.parse_literal()
            f = And((Cmp(column, ">=", low), Cmp(column, "<=", high)))
            return Not(f) if negate else f
        raise self.error(f"an operator after {column!r} (= != < <= > >= in is between)")

    def parse_literal(self) -> Scalar:
        t = self.peek()
        if t.kind == "string":
            self.i += 1
            return t.text[1:-1].replace("''", "'")
        if t.kind == "number":
            self.i += 1
            if re.fullmatch(r"[-+]?\d+", t.text):
                return int(t.text)
            return float(t.text)
        if t.kind == "kw" and t.text in ("true", "false"):
            self.i += 1
            return t.text == "true"
        if t.kind == "kw" and t.text in ("date", "timestamp"):
            self.i += 1
            s = self.expect("string", what=f"a quoted {t.text}").text[1:-1]
            try:
                return dt.date.fromisoformat(s) if t.text == "date" else dt.datetime.fromisoformat(s)
            except ValueError:
                raise InvalidFilter(f"invalid {t.text} literal {s!r} in {self.text!r}") from None
        if t.kind == "kw" and t.text == "null":
            raise InvalidFilter(f"use 'is null' / 'is not null' to test for null, in {self.text!r}")
        raise self.error("a value (number, 'quoted string', true, false, date '...')")


def parse_filter(text: str, schema: pa.Schema | None = None) -> Filter:
    """Parse readable filter text; with ``schema``, also :func:`bind` it."""
    if not isinstance(text, str):
        raise InvalidFilter(f"filter text must be a string, got {type(text).__name__}")
    f = _Parser(text).parse()
    return bind(f, schema) if schema is not None else f


# --------------------------------------------------------------------------- binding


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


# --------------------------------------------------------------------------- reference evaluation


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
