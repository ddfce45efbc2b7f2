"""The filter model and parser, independent of any backend."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from vectorstore import ColumnNotFound, InvalidFilter, InvalidName
from vectorstore.filters import And, Cmp, Has, In, IsNull, Not, Or, bind, col, parse_filter, to_mask
from vectorstore.lance.filter import compile_filter

SCHEMA = pa.schema([
    ("age", pa.int64()), ("income", pa.float64()), ("region", pa.string()),
    ("products", pa.list_(pa.string())), ("active", pa.bool_()),
    ("joined", pa.date32()), ("seen", pa.timestamp("us")),
])


def test_parses_the_documented_example():
    f = parse_filter("age >= 30 and region in ('EU','UK') and not has(products, 'mortgage')")
    assert f == And((Cmp("age", ">=", 30), In("region", ("EU", "UK")),
                     Not(Has("products", "mortgage"))))


def test_precedence_and_parentheses():
    assert parse_filter("a = 1 or b = 2 and c = 3") == Or((Cmp("a", "=", 1),
                                                           And((Cmp("b", "=", 2), Cmp("c", "=", 3)))))
    assert parse_filter("(a = 1 or b = 2) and c = 3") == And((Or((Cmp("a", "=", 1), Cmp("b", "=", 2))),
                                                              Cmp("c", "=", 3)))


def test_literals_and_operators():
    assert parse_filter("x <> 'it''s'") == Cmp("x", "!=", "it's")
    assert parse_filter("x == -1.5e2") == Cmp("x", "=", -150.0)
    assert parse_filter("x is not null") == Not(IsNull("x"))
    assert parse_filter("x not in (1, 2)") == Not(In("x", (1, 2)))
    assert parse_filter("x between 25 and 60") == And((Cmp("x", ">=", 25), Cmp("x", "<=", 60)))
    assert parse_filter("d >= date '2024-01-31'") == Cmp("d", ">=", dt.date(2024, 1, 31))
    assert parse_filter("flag = TRUE") == Cmp("flag", "=", True)


@pytest.mark.parametrize("text", [
    "", "age >", "age >= 30 and", "age in ()", "age in (1", "has(products)", "'x' = age",
    "age = 'unterminated", "age ~ 3", "age >= 30 30", "age = null",
])
def test_malformed_text_is_invalid_filter(text):
    with pytest.raises(InvalidFilter):
        parse_filter(text)


def test_bind_checks_columns_and_types():
    with pytest.raises(ColumnNotFound, match="nope"):
        parse_filter("nope = 1", SCHEMA)
    with pytest.raises(InvalidFilter, match="age"):
        parse_filter("age = 'thirty'", SCHEMA)
    with pytest.raises(InvalidFilter, match="list"):
        parse_filter("products = 'x'", SCHEMA)
    with pytest.raises(InvalidFilter, match="has"):
        parse_filter("has(region, 'x')", SCHEMA)
    with pytest.raises(InvalidFilter):
        parse_filter("active > true", SCHEMA)
    with pytest.raises(InvalidName):
        bind(Cmp("a;drop", "=", 1), SCHEMA)
    assert parse_filter("joined >= '2020-01-01'", SCHEMA) == Cmp("joined", ">=", dt.date(2020, 1, 1))
    assert parse_filter("income > 3", SCHEMA) == Cmp("income", ">", 3)


def test_builder_matches_parser():
    built = (col("age") >= 30) & col("region").isin(["EU", "UK"]) & ~col("products").has("mortgage")
    flat = And((And((Cmp("age", ">=", 30), In("region", ("EU", "UK")))), Not(Has("products", "mortgage"))))
    assert built == flat


def test_compiled_lance_predicate_escapes_values():
    f = bind(Cmp("region", "=", "x'); drop table t; --"), SCHEMA)
    assert compile_filter(f) == "(`region` = 'x''); drop table t; --')"


def test_reference_uses_three_valued_logic():
    t = pa.table({"x": [1, None, 3], "l": [["a"], None, []]})
    assert to_mask(parse_filter("not x > 1"), t).to_pylist() == [True, False, False]
    assert to_mask(parse_filter("x is null or x = 3"), t).to_pylist() == [False, True, True]
    assert to_mask(parse_filter("not has(l, 'a')"), t).to_pylist() == [False, False, True]
