"""Readable filter text to a filter tree (:func:`parse_filter`), tokenizer and a recursive parser
bounded by :data:`~vectorstore.filters.nodes.MAX_TEXT_DEPTH`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import pyarrow as pa

from ..errors import InvalidFilter
from .binding import bind
from .nodes import MAX_TEXT_DEPTH, And, Cmp, Filter, Has, In, IsNull, Not, Or, Scalar

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
