"""Hypothesis-driven fuzzing of every input a user hands Kindred: CSV, JSON Lines and Parquet
files, TOML mapping files and filter strings, through the ``kindred`` CLI.

Each input must either load (exit 0) or give one ``Error:`` line with exit status 1 or 2 (a
click usage error); never a traceback; and a rejected input leaves the store as it was. A
fixed, derandomised sample runs with the suite; ``KINDRED_FUZZ_EXAMPLES`` sets the number of
examples of the ``slow`` variant (default 150 per format).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import string
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.cli import main
from tests.faults import cases as C

SAMPLE = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
LONG = settings(max_examples=int(os.environ.get("KINDRED_FUZZ_EXAMPLES", "150")),
                deadline=None, database=None, suppress_health_check=list(HealthCheck))

# ---------------------------------------------------------------------------------- inputs
_CELL = st.one_of(
    st.text(alphabet=string.ascii_letters + string.digits + ' ,;"\'\t\r\n\\-.:eE+%#é€\x00',
            max_size=12),
    st.integers(-10**20, 10**20).map(str), st.floats(allow_nan=True).map(repr),
    st.sampled_from(["", "NaN", "inf", "-0", "1e309", "2024-02-31", "2024-01-01T00:00:00Z",
                     "true", "yes", "0x1F", "\ufeff", "null", '"', '""', "'"]))


@st.composite
def csv_bytes(draw: st.DrawFn) -> bytes:
    delim = draw(st.sampled_from([",", ";", "\t", "|"]))
    header = draw(st.lists(st.sampled_from(["customer_id", "age", "region", "note", "x y",
                                            "a.b", "", "age", "holdings", "Ünï"]),
                           min_size=1, max_size=5))
    if draw(st.booleans()):
        header = ["customer_id", *header]
    rows = draw(st.lists(st.lists(_CELL, min_size=0, max_size=len(header) + 1), max_size=8))
    quote = draw(st.booleans())

    def cell(v: str) -> str:
        return '"' + v.replace('"', '""') + '"' if quote and draw(st.booleans()) else v

    lines = [delim.join(header)] + [delim.join(cell(v) for v in r) for r in rows]
    text = draw(st.sampled_from(["\n", "\r\n", "\r"])).join(lines)
    data = text.encode(draw(st.sampled_from(["utf-8", "latin-1", "utf-16"])), "replace")
    if draw(st.integers(0, 9)) == 0:  # damage: cut, or splice random bytes
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=20))
    return data


_JSON = st.recursive(st.none() | st.booleans() | st.integers(-10**19, 10**19)
                     | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)


@st.composite
def jsonl_bytes(draw: st.DrawFn) -> bytes:
    keys = ["customer_id", "age", "note", "tags", "x"]
    lines = []
    for i in range(draw(st.integers(0, 6))):
        obj = {k: draw(_JSON) for k in draw(st.lists(st.sampled_from(keys), max_size=4,
                                                      unique=True))}
        if draw(st.integers(0, 3)):
            obj["customer_id"] = draw(st.sampled_from([f"j{i}", "j0", "", None, 5]))
        line = json.dumps(obj, allow_nan=False)
        if draw(st.integers(0, 9)) == 0:
            line = line[: draw(st.integers(0, len(line)))]
        lines.append(line)
    return "\n".join(lines).encode()


_ARROW_TYPES = [pa.int8(), pa.int64(), pa.uint64(), pa.float16(), pa.float32(), pa.float64(),
                pa.bool_(), pa.string(), pa.large_string(), pa.binary(), pa.date32(),
                pa.timestamp("ns"), pa.timestamp("s", tz="Europe/Paris"), pa.decimal128(20, 4),
                pa.time64("us"), pa.duration("ms"), pa.list_(pa.string()),
                pa.list_(pa.int32()), pa.struct([("a", pa.int64())]),
                pa.dictionary(pa.int32(), pa.string()), pa.list_(pa.float32(), 3), pa.null()]


@st.composite
def parquet_bytes(draw: st.DrawFn) -> bytes:
    n = draw(st.integers(0, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cols, names = [], []
    if draw(st.booleans()):
        names.append("customer_id")
        cols.append(pa.array([draw(st.sampled_from(["p1", "p2", "p3", "", "p\x00"]))
                              for _ in range(n)]))
    for _ in range(draw(st.integers(0, 4))):
        typ = draw(st.sampled_from(_ARROW_TYPES))
        names.append(draw(st.sampled_from(["v", "w", "age", "x y", "customer_id", "note"])))
        cols.append(_random_array(typ, n, rng))
    buf = io.BytesIO()
    pq.write_table(pa.table(cols, names=names) if cols else pa.table({"z": pa.nulls(n)}), buf)
    data = buf.getvalue()
    if draw(st.integers(0, 9)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    return data


def _random_array(typ: pa.DataType, n: int, rng: np.random.Generator) -> pa.Array:
    ints = rng.integers(-(2**62), 2**62, n)
    if pa.types.is_null(typ):
        return pa.nulls(n)
    if pa.types.is_unsigned_integer(typ):
        return pa.array(rng.integers(0, 2**63, n, dtype=np.uint64) * 2, typ)
    if pa.types.is_integer(typ):
        return pa.array(ints % 100, typ)
    if pa.types.is_floating(typ):
        vals = rng.normal(size=n) * 10.0 ** rng.integers(-3, 6, n)
        vals[rng.random(n) < 0.2] = np.nan
        return pa.array(vals.astype(typ.to_pandas_dtype()), typ)
    if pa.types.is_dictionary(typ):
        return pa.array([f"d{i % 3}" for i in range(n)]).dictionary_encode()
    if pa.types.is_fixed_size_list(typ):
        return pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=n * 3), pa.float32()), 3)
    if pa.types.is_list(typ) and pa.types.is_string(typ.value_type):
        return pa.array([[f"t{j}" for j in range(i % 3)] for i in range(n)], typ)
    if pa.types.is_list(typ):
        return pa.array([list(range(i % 3)) for i in range(n)], typ)
    if pa.types.is_struct(typ):
        return pa.array([{"a": int(i)} for i in ints % 9], typ)
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return pa.array([["a", "b\x00c", "", "ünï", "x" * 40][i % 5] for i in range(n)], typ)
    if pa.types.is_binary(typ):
        return pa.array([bytes([i % 256]) * 3 for i in range(n)], typ)
    if pa.types.is_decimal(typ):
        import decimal

        return pa.array([decimal.Decimal(int(i)) / 10000 for i in ints % 10**12], typ)
    if pa.types.is_date32(typ):
        return pa.array((ints % 20_000).astype(np.int32), pa.int32()).cast(typ)
    return pa.array(ints % 10**9, pa.int64()).cast(typ, safe=False)


_TOML_VALUE = st.one_of(st.integers(-5, 5).map(str), st.sampled_from(
    ['"x"', '"customers"', '"events"', '""', "true", '"ab"', '"\\""', "[1, 2]", '{a = "b"}',
     '"int64"', '"vector[0]"', '"timestamp"', "[[", '"%Y"']))
_TOML_KEY = st.sampled_from(["table", "id_column", "generate_id", "rename", "types", "drop",
                             "attributes", "text_columns", "timestamp_formats", "bogus"])
_SOURCE_KEY = st.sampled_from(["delimiter", "quote_char", "encoding", "multiline", "kind",
                               "null_values", "query", "table", "weird"])


@st.composite
def mapping_text(draw: st.DrawFn) -> str:
    lines = [f"{k} = {v}" for k, v in draw(st.dictionaries(_TOML_KEY, _TOML_VALUE, max_size=4)
                                           ).items()]
    if draw(st.booleans()):
        lines.insert(0, 'table = "customers"')
    lines += ["[source]", 'path = "@"']
    lines += [f"{k} = {v}" for k, v in draw(st.dictionaries(_SOURCE_KEY, _TOML_VALUE,
                                                            max_size=3)).items()]
    if draw(st.integers(0, 5)) == 0:
        lines.append(draw(st.text(max_size=10)))
    return "\n".join(lines) + "\n"


_FILTER_TOKEN = st.sampled_from(
    ["age", "region", "income", "holdings", "nope", "customer_id", "=", "!=", "<", ">=", "<>",
     "and", "or", "not", "in", "is", "null", "between", "has", "(", ")", ",", "'north'",
     "'x''y'", "'", "3", "-2.5e3", "1e999", "true", "date", "'2024-01-01'", "timestamp",
     ";", "--", "`", "\\", "\x00", "0x10", "NaN"])


@st.composite
def filter_text(draw: st.DrawFn) -> str:
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(max_size=30))
    return " ".join(draw(st.lists(_FILTER_TOKEN, min_size=1, max_size=14)))


# ---------------------------------------------------------------------------------- oracle
def _check(store: Path, argv: list[str]) -> None:
    before = C.fingerprint(store)
    res = CliRunner().invoke(main, ["--store", str(store), *argv], catch_exceptions=True)
    out = res.output
    assert "Traceback (most recent call last)" not in out, out[-3000:]
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    if res.exit_code == 0:
        return
    assert res.exit_code in (1, 2), out
    errors = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, out
    assert C.fingerprint(store) == before, f"a rejected input changed the store: {errors[0]}"


@pytest.fixture(scope="module")
def base_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return C.make_store(tmp_path_factory.mktemp("fuzz"))


def _fresh(base: Path) -> tuple[Path, Path]:
    work = Path(tempfile.mkdtemp(prefix="kindred-fuzz-"))
    store = work / "store"
    shutil.copytree(base, store)
    return work, store


def _file_case(suffix: str) -> Callable[[Path, bytes], None]:
    def run(base: Path, data: bytes) -> None:
        work, store = _fresh(base)
        try:
            path = work / f"input{suffix}"
            path.write_bytes(data)
            _check(store, ["ingest", "customers", str(path)])
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return run


def _mapping_case(base: Path, text: str) -> None:
    work, store = _fresh(base)
    try:
        (work / "m.csv").write_text(C.BASE_CSV)
        m = work / "m.toml"
        m.write_text(text.replace("@", str(work / "m.csv")), encoding="utf-8",
                     errors="surrogateescape")
        _check(store, ["ingest", "--mapping", str(m)])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _filter_case(base: Path, text: str) -> None:
    _check(base, ["match", "mortgage", "--where", text, "--show", "1"])


FORMATS: dict[str, tuple[st.SearchStrategy, Callable[[Path, object], None]]] = {
    "csv": (csv_bytes(), _file_case(".csv")),
    "jsonl": (jsonl_bytes(), _file_case(".jsonl")),
    "parquet": (parquet_bytes(), _file_case(".parquet")),
    "mapping": (mapping_text(), _mapping_case),
    "filter": (filter_text(), _filter_case),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_fuzz_sample(fmt: str, base_store: Path) -> None:
    strategy, run = FORMATS[fmt]
    SAMPLE(given(strategy)(lambda value: run(base_store, value)))()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_fuzz_long(fmt: str, base_store: Path) -> None:
    strategy, run = FORMATS[fmt]
    LONG(given(strategy)(lambda value: run(base_store, value)))()
