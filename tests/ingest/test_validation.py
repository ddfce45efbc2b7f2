"""Row-level validation: casts, bad-row masks, ids, duplicates, vectors, holdings, plans."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from ingest.errors import MappingError, SchemaEvolutionError
from ingest.mapping import Mapping, parse_type
from ingest.sources import Chunk
from ingest.validate import (
    KeySet,
    Validator,
    content_hash,
    convert,
    first_occurrence_dups,
    infer_text_type,
    is_lossless,
    make_plan,
)


def test_text_to_int_float_bool():
    out, bad, _ = convert(pa.array(["1", " 2 ", "x", None, "3.5", ""]), pa.int64())
    assert bad.tolist() == [False, False, True, False, True, False]
    assert out.to_pylist() == [1, 2, None, None, None, None]
    out, bad, _ = convert(pa.array(["1.5", "1e3", "abc", "-2"]), pa.float64())
    assert bad.tolist() == [False, False, True, False]
    assert out.to_pylist()[:2] == [1.5, 1000.0]
    out, bad, _ = convert(pa.array(["yes", "No", "1", "maybe"]), pa.bool_())
    assert out.to_pylist() == [True, False, True, None]
    assert bad.tolist() == [False, False, False, True]


def test_integer_overflow_is_a_bad_row():
    out, bad, _ = convert(pa.array(["1", "99999999999999999999999"]), pa.int64())
    assert bad.tolist() == [False, True]
    assert out.to_pylist() == [1, None]


def test_timestamps_with_and_without_format():
    out, bad, what = convert(pa.array(["02/01/2024 10:30", "31/02/2024 10:00", None]),
                             pa.timestamp("us", tz="UTC"), "%d/%m/%Y %H:%M")
    assert bad.tolist() == [False, True, False]
    assert out[0].as_py().isoformat() == "2024-01-02T10:30:00+00:00"
    assert "%d/%m/%Y %H:%M" in what
    out, bad, _ = convert(pa.array(["2024-01-02", "2024-01-02 03:04:05", "soon"]),
                          pa.timestamp("us", tz="UTC"))
    assert bad.tolist() == [False, False, True]


def test_lossy_numeric_casts_are_bad_rows():
    out, bad, _ = convert(pa.array([1.0, 2.5, float("nan"), None]), pa.int64())
    assert bad.tolist() == [False, True, True, False]
    assert out.to_pylist() == [1, None, None, None]
    out, bad, _ = convert(pa.array([1, 2**40], pa.int64()), pa.int32())
    assert bad.tolist() == [False, True]


def test_vectors_wrong_length_or_nan():
    arr = pa.array([[1.0, 2.0, 3.0], [1.0, 2.0], [1.0, float("nan"), 0.0], None, [0.0, 0.0, 1.0]])
    out, bad, expected = convert(arr, pa.list_(pa.float32(), 3))
    assert bad.tolist() == [False, True, True, False, False]
    assert out.type == pa.list_(pa.float32(), 3)
    assert out.to_pylist()[0] == [1.0, 2.0, 3.0]
    assert out.to_pylist()[4] == [0.0, 0.0, 1.0]
    assert out[3].as_py() is None
    assert "3 finite" in expected


def test_infer_text_type():
    assert infer_text_type(pa.array(["1", "2", None])) == pa.int64()
    assert infer_text_type(pa.array(["1", "2.5"])) == pa.float64()
    assert infer_text_type(pa.array(["2024-01-01", "2024-02-01 10:00:00"])).tz == "UTC"
    assert infer_text_type(pa.array(["1", "x"])) == pa.string()
    assert infer_text_type(pa.array([None, None], pa.string())) == pa.string()


@pytest.mark.parametrize(("src", "dst", "ok"), [
    (pa.int32(), pa.int64(), True), (pa.int64(), pa.int32(), False),
    (pa.int64(), pa.float64(), True), (pa.float64(), pa.int64(), False),
    (pa.float32(), pa.float64(), True), (pa.string(), pa.int64(), False),
    (pa.int64(), pa.string(), True), (pa.date32(), pa.timestamp("us", tz="UTC"), True),
    (pa.timestamp("us", tz="UTC"), pa.date32(), False),
])
def test_is_lossless(src, dst, ok):
    assert is_lossless(src, dst) is ok


def test_keyset_matches_python_set():
    rng = np.random.default_rng(0)
    seen = KeySet()
    reference: set[str] = set()
    for _ in range(12):
        keys = [f"k{v}" for v in rng.integers(0, 3000, 400)]
        arr = pa.array(keys)
        from ingest.validate.hashing import _key_hashes

        a, b = _key_hashes(arr)
        hit = seen.contains(a, b)
        assert hit.tolist() == [k in reference for k in keys]
        seen.add(a, b)
        reference.update(keys)
    assert len(reference) <= len(seen)


def test_first_occurrence_dups():
    a = np.array([5, 1, 5, 2, 1, 5], dtype=np.uint64)
    b = np.array([0, 0, 0, 0, 1, 0], dtype=np.uint64)
    assert first_occurrence_dups(a, b).tolist() == [False, False, True, False, False, True]


def test_content_hash_is_stable_and_order_independent():
    t1 = pa.record_batch({"a": ["x", "y", None], "b": ["1", "2", "3"]})
    t2 = pa.record_batch({"b": ["1", "2", "3"], "a": ["x", "y", None]})
    h1, h2 = content_hash(t1), content_hash(t2)
    assert h1.equals(h2)
    assert len(set(h1.to_pylist())) == 3
    assert all(len(h) == 64 for h in h1.to_pylist())
    t3 = pa.record_batch({"a": ["x", "y", ""], "b": ["1", "2", "3"]})
    assert content_hash(t3)[2] != h1[2]  # empty string differs from null


def _validate(mapping: Mapping, batch: pa.RecordBatch, lines=None, dedupe=False):
    plan = make_plan(mapping, batch, None, text_source=True)
    v = Validator(plan, "src.csv", dedupe=dedupe)
    return plan, v, v.check(Chunk(batch, 1, lines, None if lines is None else lines - 1))


def test_row_errors_name_source_line_column_value_expected():
    m = Mapping.from_options("customers", id_column="id", types=["age=int64"])
    batch = pa.record_batch({"id": ["a", "b", None, "a"], "age": ["1", "x", "3", "4"]})
    _, _, checked = _validate(m, batch, lines=np.array([2, 3, 4, 5]))
    msgs = [str(e) for e in checked.errors]
    assert msgs[0] == "src.csv:3 (row 2), column 'age': value 'x'; expected an integer (int64)"
    assert "src.csv:4 (row 3), column 'id': value missing" in msgs[1]
    assert "src.csv:5 (row 4), column 'id': value 'a'" in msgs[2]
    assert "not already used" in msgs[2]
    assert checked.good.column("customer_id").to_pylist() == ["a"]
    assert checked.rejected_lines.tolist() == [3, 4, 5]


def test_duplicates_across_batches_and_event_dedupe():
    m = Mapping.from_options("customers", id_column="id")
    b1 = pa.record_batch({"id": ["a", "b"], "x": ["1", "2"]})
    b2 = pa.record_batch({"id": ["c", "a"], "x": ["3", "4"]})
    plan = make_plan(m, b1, None, text_source=True)
    v = Validator(plan, "s")
    assert not v.check(Chunk(b1, 1)).errors
    errs = v.check(Chunk(b2, 3)).errors
    assert [(e.row, e.value) for e in errs] == [(4, "a")]
    e = pa.record_batch({"customer_id": ["a", "a", "b"], "ts": ["2024-01-01"] * 3,
                         "amount": ["1", "1", "2"]})
    # identical events are repeats by default (a purchase log counts them) ...
    _, _, checked = _validate(Mapping.from_options("events"), e, dedupe=True)
    assert (checked.duplicates, checked.good.num_rows) == (0, 3)
    ids = checked.good.column("event_id").to_pylist()
    assert ids[1] == ids[0] + "#2"
    assert "#" not in ids[2]
    # ... and one event with dedupe (a source that replays rows)
    _, _, checked = _validate(Mapping.from_options("events", dedupe=True), e, dedupe=True)
    assert checked.duplicates == 1
    assert not checked.errors
    assert checked.good.num_rows == 2


def test_holdings_from_flags_and_list_column():
    m = Mapping.from_options("customers", id_column="id",
                             holdings=["term_deposit=y:yes", "card=has_card:1"],
                             holdings_column="products")
    batch = pa.record_batch({"id": ["a", "b", "c"], "y": ["yes", "no", "YES"],
                             "has_card": ["1", "1", "0"], "products": ["mortgage|savings", None, ""]})
    plan, _, checked = _validate(m, batch)
    assert checked.good.column("holdings").to_pylist() == [
        ["term_deposit", "card", "mortgage", "savings"], ["card"], ["term_deposit"]]
    assert "y" not in plan.schema.names
    assert "products" not in plan.schema.names


def test_plan_refuses_lossy_type_change():
    from vectorstore import TableInfo

    info = TableInfo("customers", pa.schema([pa.field("customer_id", pa.string()),
                                             pa.field("age", pa.int64())]), key="customer_id")
    m = Mapping.from_options("customers")
    native = pa.record_batch({"customer_id": ["a"], "age": pa.array([1.5])})
    with pytest.raises(SchemaEvolutionError, match=r"'age' is int64.*double"):
        make_plan(m, native, info, text_source=False)
    declared = Mapping.from_options("customers", types=["age=float64"])
    with pytest.raises(SchemaEvolutionError, match="declares double"):
        make_plan(declared, pa.record_batch({"customer_id": ["a"], "age": ["1"]}), info,
                  text_source=True)
    ok = make_plan(m, pa.record_batch({"customer_id": ["a"], "age": pa.array([1], pa.int32()),
                                       "new": ["x"]}), info, text_source=False)
    assert [f.name for f in ok.new_fields] == ["new"]


def test_mapping_errors():
    with pytest.raises(MappingError, match="either id_column or generate_id"):
        Mapping.from_options("customers", id_column="a", generate_id=True)
    with pytest.raises(MappingError, match="NAME=VALUE"):
        Mapping.from_options("customers", holdings=["term_deposit"])
    with pytest.raises(MappingError, match="unknown type"):
        Mapping.from_options("customers", types=["age=number"])
    with pytest.raises(MappingError, match="table"):
        Mapping.from_dict({"table": "accounts"})
    with pytest.raises(MappingError, match="no 'customer_id' column"):
        make_plan(Mapping.from_options("customers"), pa.record_batch({"x": ["1"]}), None,
                  text_source=True)
    assert parse_type("vector[8]") == pa.list_(pa.float32(), 8)
    assert math.isfinite(1.0)
