"""What is particular to the Milvus backend: locations, the alias switch that commits a step,
what Milvus cannot do (each refused with the reason), a killed step, and a shared server.

The behaviour it shares with every backend is checked by the conformance suites (the
``store`` fixture's ``milvus-lite`` parameter).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import vectorstore as vs
from vectorstore import VectorColumn, col

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from vectorstore.milvus.conn import parse_milvus_uri
from vectorstore.milvus.filter import compile_filter, quote_string

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def lite(tmp_path):
    with vs.connect(f"milvus://{tmp_path / 'm.db'}") as s:
        yield s


def people(store, n=5):
    store.create_table("p", pa.schema([("id", pa.string()), ("age", pa.int64())]), key="id")
    store.write("p", pa.table({"id": [f"c{i}" for i in range(n)], "age": list(range(20, 20 + n))}))


# ------------------------------------------------------------------ locations


def test_locations_name_a_file_or_a_server_and_hide_passwords(tmp_path):
    t = parse_milvus_uri(f"milvus://{tmp_path}/x/store.db")
    assert t.lite_path == str(tmp_path / "x" / "store.db")
    assert t.address is None
    rel = parse_milvus_uri("milvus://data/store.db")
    assert rel.lite_path == str(Path("data/store.db").resolve())
    srv = parse_milvus_uri("milvus://alice:s3cr%40t@db.example:19531/crm")
    assert (srv.address, srv.database, srv.token) == ("http://db.example:19531", "crm",
                                                      "alice:s3cr@t")
    assert "s3cr" not in srv.display
    assert "s3cr" not in repr(srv)
    assert parse_milvus_uri("milvus+https://h").address == "https://h:19530"
    with pytest.raises(vs.InvalidOption, match="colour"):
        vs.connect(f"milvus://{tmp_path}/s.db", colour="blue")
    with pytest.raises(vs.BackendUnavailable, match="port"):
        vs.connect("milvus://h:notaport")


def test_an_unreachable_server_is_backend_unavailable_without_the_password():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    with pytest.raises(vs.BackendUnavailable) as err:
        vs.connect(f"milvus://u:hunter22@127.0.0.1:{port}", timeout=2)
    assert "hunter22" not in str(err.value)


def test_a_store_file_keeps_its_tables_across_connections(tmp_path):
    uri = f"milvus://{tmp_path / 'keep.db'}"
    with vs.connect(uri) as s:
        people(s)
        s.add_columns("p", [pa.field("note", pa.string())], vectors=[VectorColumn("v", 2)])
        s.set_metadata("p", {"owner": "crm"})
    with vs.connect(uri) as again:
        info = again.table_info("p")
        assert info.metadata == {"owner": "crm"}
        assert "v" in info.vectors
        assert again.count("p") == 5
        assert again.null_count("p", "v") == 5


# ------------------------------------------------------------------ how a step commits


def test_a_new_column_is_a_new_collection_behind_the_alias(lite):
    people(lite)
    before = lite._describe("p").physical
    assert lite.write("p", pa.table({"id": ["c1", "n1"], "age": [99, 1]}),
                      mode="upsert").rows == 2
    assert lite._describe("p").physical == before  # a small row-only step: one upsert, in place
    lite.add_columns("p", [], vectors=[VectorColumn("v", 3)])
    after = lite._describe("p").physical
    assert after != before
    names = lite._client.list_collections()
    assert after in names
    assert before not in names
    # other Milvus clients reach the table by its name (the alias)
    rows = lite._client.query("p", filter='id == "c1"', output_fields=["age"])
    assert [r["age"] for r in rows] == [99]
    lite.set_metadata("p", {"x": 1})
    assert lite._describe("p").physical == after  # metadata alone: the description row


def test_many_rows_in_one_step_are_written_by_a_collection_switch(lite, monkeypatch):
    import vectorstore.milvus.txn as mtxn

    people(lite)
    monkeypatch.setattr(mtxn, "IN_PLACE_ROWS", 2)
    before = lite._describe("p").physical
    r = lite.write("p", pa.table({"id": ["c0", "c1", "z"], "age": [0, 21, 5]}), mode="upsert")
    assert (r.inserted, r.updated, r.unchanged) == (1, 1, 1)
    assert lite._describe("p").physical != before
    got = dict(zip(*lite.to_arrow("p").to_pydict().values(), strict=True))
    assert got == {"c0": 0, "c1": 21, "c2": 22, "c3": 23, "c4": 24, "z": 5}


def test_a_step_killed_before_its_alias_switch_leaves_the_table_as_it_was(tmp_path):
    uri = f"milvus://{tmp_path / 'kill.db'}"
    with vs.connect(uri) as s:
        people(s)
    script = ("import pyarrow as pa, vectorstore as vs\n"
              f"s = vs.connect({uri!r})\n"
              "with s.transaction('p') as tx:\n"
              "    tx.add_columns([pa.field('score', pa.float64())])\n"
              "    tx.update(pa.table({'id': ['c1'], 'score': [1.0]}))\n"
              "    tx.set_metadata({'risk': {'model': 'x'}})\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KINDRED_FAULT_POINT": "commit:p"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    with vs.connect(uri) as s:
        info = s.table_info("p")
        assert info.schema.names == ["id", "age"]
        assert info.metadata == {}
        assert s.to_arrow("p").column("age").to_pylist() == [20, 21, 22, 23, 24]
        current = s._describe("p").physical
        assert s.sweep_collections("p") == []  # within the grace period: a step may be running
        swept = s.sweep_collections("p", grace=dt.timedelta(0))
        assert len(swept) == 1
        assert current not in swept
        assert s._describe("p").physical == current
        assert s.count("p") == 5


# ------------------------------------------------------------------ what Milvus cannot do


def test_versions_and_remote_partitions_are_refused_with_the_reason(lite):
    people(lite)
    assert not lite.capabilities.versions
    assert not lite.capabilities.partitions
    for call in (lambda: lite.versions("p"), lambda: lite.version("p"),
                 lambda: lite.restore("p", 1), lambda: lite.data_version("p")):
        with pytest.raises(vs.UnsupportedOperation, match="keeps no table versions"):
            call()
    (part,) = lite.partitions("p")
    assert part.rows == 5
    with pytest.raises(vs.UnsupportedOperation, match="no partitions another process can stage"):
        lite.stage_partition(part, pa.table({"id": ["c1"], "age": [1]}))


def test_a_rewrite_of_rows_another_writer_set_meanwhile_is_the_last_writer_wins(lite):
    """Where LanceDB refuses a positional rewrite of a column another writer rewrote
    (conformance: ``capabilities.partitions``), Milvus stages by key, as PostgreSQL does:
    the later commit wins for the columns it sets; rows it does not set keep the other
    writer's values."""
    import pyarrow.compute as pc

    people(lite)
    with lite.transaction("p") as tx:
        (part,) = tx.partitions()
        rows = pa.concat_tables(pa.Table.from_batches([b])
                                for b in tx.scan(part, columns=["id", "age"]))
        keep = pa.array([0, 1, 2])  # c0, c1, c2 (the scan is in key order)
        tx.stage(part, pa.table({"id": rows.column("id").take(keep),
                                 "age": pc.add(rows.column("age").take(keep), 100)}),
                 rows=keep)
        lite.update("p", pa.table({"id": ["c2", "c3"], "age": [0, 0]}))  # the other writer
    got = dict(zip(*lite.to_arrow("p").select(["id", "age"]).to_pydict().values(), strict=True))
    assert got == {"c0": 120, "c1": 121, "c2": 122, "c3": 0, "c4": 24}


@pytest.mark.parametrize(("schema", "match"), [
    (pa.schema([("id", pa.string()), ("x", pa.decimal128(10, 2))]), "decimal.*not supported"),
    (pa.schema([("id", pa.string()), ("x", pa.struct([("a", pa.int64())]))]), "not supported"),
    (pa.schema([("id", pa.float64())]), "Milvus keys are integers or strings"),
    (pa.schema([("id", pa.string()), ("like", pa.int64())]), "keyword of Milvus"),
    (pa.schema([("id", pa.string()), ("_kindred_x", pa.int64())]), "reserved"),
])
def test_types_and_names_milvus_cannot_hold_are_refused_up_front(lite, schema, match):
    with pytest.raises(vs.SchemaMismatch, match=match):
        lite.create_table("t", schema, key="id")
    assert lite.list_tables() == []


def test_values_milvus_cannot_hold_are_refused_with_row_and_column(lite):
    lite.create_table("t", pa.schema([("id", pa.string()), ("s", pa.string()),
                                      ("tags", pa.list_(pa.string()))]), key="id")
    with pytest.raises(vs.SchemaMismatch, match=r"column 's', row 1: a string of 70,000 bytes"):
        lite.write("t", pa.table({"id": ["a", "b"], "s": ["ok", "x" * 70_000]}))
    with pytest.raises(vs.SchemaMismatch, match=r"'tags'.*null element"):
        lite.write("t", pa.table({"id": ["a"], "tags": [["x", None]]}))
    assert lite.count("t") == 0


# ------------------------------------------------------------------ filters as text


@pytest.mark.parametrize("value", ['a"b', "a\\", 'x\\" or id != "', "line\nbreak\ttab\r",
                                   "') or true or ('", "ü 客户 ✓"])
def test_hostile_strings_are_one_escaped_literal(lite, value):
    lite.create_table("t", pa.schema([("id", pa.string()), ("s", pa.string())]), key="id")
    lite.write("t", pa.table({"id": ["a", "b", "c"], "s": [value, "plain", None]}))
    bound = vs.filters.bind(col("s") == value, lite.table_info("t").schema)
    text = compile_filter(bound, lite.table_info("t"))
    assert text == f"(s is not null and s == {quote_string(value)})"
    assert lite.count("t", col("s") == value) == 1
    assert lite.count("t", col("s") != value) == 1  # the null row is unknown, not true
    assert lite.count("t", ~col("s").isin([value])) == 1
    assert lite.delete("t", col("s") == value) == 1
    assert lite.to_arrow("t").column("id").to_pylist() == ["b", "c"]


def test_null_rows_are_unknown_under_not_as_in_sql(lite):
    lite.create_table("t", pa.schema([("id", pa.int64()), ("n", pa.int64()),
                                      ("tags", pa.list_(pa.string()))]), key="id")
    lite.write("t", pa.table({"id": [1, 2, 3], "n": [1, None, 5], "tags": [["a"], None, []]}))
    assert lite.count("t", "not (n in (1, 2))") == 1
    assert lite.count("t", "not has(tags, 'a')") == 1
    assert lite.count("t", "not (n > 2 and has(tags, 'a'))") == 2  # rows 1 and 3: false
    assert lite.count("t", "n is null or not (n = 1)") == 2


# ------------------------------------------------------------------ a shared server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``milvus-lite server`` on 127.0.0.1, as a Milvus server several processes share."""
    data = tmp_path_factory.mktemp("milvus-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir",
                             str(data), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    try:
        yield f"milvus://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


_WRITER = """
import sys, pyarrow as pa, vectorstore as vs
uri, who = sys.argv[1], sys.argv[2]
with vs.connect(uri) as s:
    for i in range(6):
        s.write("shared", pa.table({"id": [f"{who}{i}"], "n": [i]}), mode="upsert")
        s.set_metadata("shared", {("writers", who): i})
    if who == "a":
        s.add_columns("shared", [pa.field("note", pa.string())])
"""


def test_two_processes_writing_one_table_on_a_server_lose_nothing(server):
    with vs.connect(server) as s:
        s.create_table("shared", pa.schema([("id", pa.string()), ("n", pa.int64())]), key="id")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, server, who], env=env,
                              stderr=subprocess.PIPE) for who in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    with vs.connect(server) as s:
        got = s.to_arrow("shared")
        assert sorted(got.column("id").to_pylist()) == [f"{w}{i}" for w in "ab" for i in range(6)]
        info = s.table_info("shared")
        assert info.metadata == {"writers": {"a": 5, "b": 5}}
        assert "note" in info.schema.names
        assert not [a for a in s._aliases() if a.startswith("_kindred_lock_")]


def test_a_lock_whose_holder_died_is_broken_after_the_lease(server, monkeypatch, caplog):
    import json

    import vectorstore.milvus.conn as conn

    monkeypatch.setattr(conn, "LEASE", 0.5)
    with vs.connect(server) as s:
        s.create_table("stale", pa.schema([("id", pa.string())]), key="id")
        # a writer that died holding the lock: its alias and an expired lease remain
        s._client.create_alias(s._catalog, conn.LOCK_PREFIX + "stale")
        s._put_catalog_row("lock:stale", "stale", json.dumps({"token": "dead", "expires": 0}))
        start = time.monotonic()
        s.write("stale", pa.table({"id": ["x"]}))
        assert time.monotonic() - start >= 0.5
        assert s.count("stale") == 1
    assert "breaking the commit lock of table 'stale'" in caplog.text


def test_the_server_passes_a_search_with_a_filter(server):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    with vs.connect(server) as s:
        s.create_table("items", pa.schema([("id", pa.int64()), ("g", pa.int64())]), key="id",
                       vectors=[VectorColumn("v", 8, "l2")])
        s.write("items", pa.table({"id": np.arange(200), "g": np.arange(200) % 3,
                                   "v": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 8)}))
        s.create_vector_index("items", "v", index_type="IVF_FLAT")
        got = s.search("items", x[7], k=3, filter="g = 1", columns=["id", "g"])
        d = np.where(np.arange(200) % 3 == 1, np.linalg.norm(x - x[7], axis=1), np.inf)
        assert got.column("id").to_pylist() == np.argsort(d)[:3].tolist()
        np.testing.assert_allclose(got.column("distance").to_numpy(), np.sort(d)[:3], rtol=1e-4)


def test_alias_changes_at_once_on_a_server_all_take_effect(server):
    """Milvus Lite's server can fail to save an alias change it applied (two changes at once
    share one temporary file); the store reads the alias back instead of failing a commit."""
    import threading

    from pymilvus import MilvusClient

    from vectorstore.milvus.conn import change_alias

    address = "http://" + server.removeprefix("milvus://")
    with vs.connect(server) as s:
        s.create_table("aliased", pa.schema([("id", pa.string())]), key="id")
        target = s._describe("aliased").physical
    errors: list[str] = []

    def churn(worker: int) -> None:
        client = MilvusClient(address)
        for i in range(30):
            alias = f"churn_{worker}_{i}"
            try:
                change_alias(client, "create", alias, target)
                change_alias(client, "alter", alias, target)
                change_alias(client, "drop", alias)
            except Exception as exc:
                errors.append(str(exc)[:200])

    threads = [threading.Thread(target=churn, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    client = MilvusClient(address)
    assert not [a for a in client.list_aliases()["aliases"] if a.startswith("churn_")]
