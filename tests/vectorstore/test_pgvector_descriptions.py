"""PostgreSQL reads check the cached table description in the same round trip as the read
(vectorstore/pgvector/reads.py): round trips counted for real from libpq's protocol trace,
a description changed by another connection seen at once, and the same answers as the
earlier path that read the description first (``store._pipelined_reads = False``)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

import vectorstore as vs
from vectorstore import VectorColumn
from vectorstore.testing.roundtrips import RoundTrips

pytestmark = pytest.mark.pgvector

N = 60


def _schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def _vec(x: np.ndarray) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x, np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])


@pytest.fixture
def pg(pg_dsn: str) -> Iterator[vs.VectorStore]:
    with vs.connect(pg_dsn, schema=_schema(), pool_min_size=1, pool_max_size=1) as store:
        store.create_table("items", pa.schema([("id", pa.string()), ("n", pa.int64()),
                                               ("region", pa.string())]), key="id",
                           vectors=[VectorColumn("v", 4)])
        rng = np.random.default_rng(7)
        store.write("items", pa.table({
            "id": [f"i{i:03d}" for i in range(N)], "n": list(range(N)),
            "region": ["EU" if i % 3 else "UK" for i in range(N)],
            "v": _vec(rng.normal(size=(N, 4)))}))
        yield store
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
                sql.Identifier(store.schema)))  # type: ignore[attr-defined]


@pytest.fixture
def trips(pg: vs.VectorStore, tmp_path: Path) -> RoundTrips:
    return RoundTrips(pg, tmp_path / "libpq.trace")


def _other(pg_dsn: str, pg: vs.VectorStore) -> vs.VectorStore:
    return vs.connect(pg_dsn, schema=pg.schema)  # type: ignore[attr-defined]


Q = np.array([[1.0, 0.5, -0.2, 0.1], [0.0, 1.0, 0.0, 0.3]], np.float32)


def test_the_round_trip_counter_counts_statements_waited_for(pg, trips):
    # the pool's check is before the trace; then 2 statements, 2 round trips
    with pg._db.pool.connection() as conn, trips.counting() as n:
        conn.execute("SELECT 1")
        conn.execute("SELECT 2")
    assert n == [2]
    with pg._db.pool.connection() as conn, trips.counting() as n, conn.pipeline():
        conn.execute("SELECT 1")
        conn.execute("SELECT 2")
    assert n == [1]


def test_a_warm_read_takes_two_round_trips_the_earlier_path_seven(pg, trips):
    t = pg.table("items")
    pg.search("items", Q[0], k=5)
    warm = {
        "store.search": trips.of(lambda: pg.search("items", Q[0], k=5)),
        "handle.search": trips.of(lambda: t.search(Q[0], k=5, filter="n >= 10")),
        "two queries": trips.of(lambda: pg.search("items", Q, k=5, columns=["id"])),
        "exact": trips.of(lambda: pg.search("items", Q[0], k=5, exact=True)),
        "count": trips.of(lambda: t.count("region = 'EU'")),
        "null_count": trips.of(lambda: t.null_count("region")),
        "lookup": trips.of(lambda: t.lookup(pa.array(["i001", "i002", "zz"]))),
    }
    # the pool's check of the connection, then the description check and the read together
    assert warm == dict.fromkeys(warm, 2)
    scan_new = trips.of(lambda: pg.to_arrow("items"))
    pg._pipelined_reads = False
    assert trips.of(lambda: pg.search("items", Q[0], k=5)) == 7
    assert trips.of(lambda: pg.search("items", Q, k=5, columns=["id"])) == 11
    assert trips.of(lambda: pg.count("items", "region = 'EU'")) == 4
    # the scan: BEGIN and the check in one round trip (was: the description, BEGIN)
    assert (scan_new, trips.of(lambda: pg.to_arrow("items"))) == (7, 10)


def test_a_read_without_a_cached_description_reads_it_in_the_reads_snapshot(pg, trips):
    pg._catalog.cache.forget("items")
    # the check, the description (in the read's transaction), then the read and commit
    assert trips.of(lambda: pg.search("items", Q[0], k=5)) == 3
    assert trips.of(lambda: pg.search("items", Q[0], k=5)) == 2
    pg._catalog.cache.forget("items")
    assert trips.of(lambda: pg.count("items")) == 3
    assert trips.of(lambda: pg.count("items")) == 2


def test_another_connections_description_change_is_seen_by_the_next_read(pg_dsn, pg, trips,
                                                                         caplog):
    t = pg.table("items")
    before = t.search(Q[0], k=5)
    assert before.column_names == ["id", "n", "region", "score"]
    other = _other(pg_dsn, pg)
    try:
        # a new vector column: the cached description would refuse vector_column="w"
        other.add_columns("items", [pa.field("note", pa.string())],
                          vectors=[VectorColumn("w", 3, metric="l2")])
        other.write("items", pa.table({"id": ["i000", "i001"],
                                       "w": _vec(np.array([[0, 0, 1], [0, 0, 2]]))}),
                    mode="upsert")
        res = t.search([0, 0, 1], k=1, vector_column="w", columns=["id", "note"])
        assert res.column_names == ["id", "note", "distance"]
        assert res.column("id").to_pylist() == ["i000"]
        assert trips.of(lambda: t.search([0, 0, 1], k=1, vector_column="w")) == 2
        # a new column: the cached description would leave it out of the default columns
        other.add_columns("items", [pa.field("tier", pa.int64())])
        with trips.counting() as n:
            res = pg.search("items", Q[0], k=5, vector_column="v")
        assert n[0] <= 4  # the check that failed, then the description and the search
        assert res.column_names == ["id", "n", "region", "note", "tier", "score"]
        assert res.select(["id", "n", "region", "score"]).equals(before)
        # metadata: the handle and the store's reads see it
        other.set_metadata("items", {"owner": "crm"})
        assert t.metadata == {"owner": "crm"}
        assert pg.count("items", "region = 'EU'") == 40
        # a dropped column: the cached description's statement would fail on the server
        with caplog.at_level(logging.WARNING, logger="psycopg"):
            other.drop_columns("items", ["n"])
            res = pg.search("items", Q[0], k=5, vector_column="v")
            assert pg.count("items", "tier IS NULL") == N
            assert pg.lookup("items", pa.array(["i003"])).column_names == [
                "id", "region", "v", "note", "w", "tier"]
            assert pg.to_arrow("items", columns=["id"]).num_rows == N
        assert res.column_names == ["id", "region", "note", "tier", "score"]
        assert res.column("id").equals(before.column("id"))
        assert caplog.records == []  # no pipeline left in error behind
        # dropped and made again with another schema
        other.drop_table("items")
        with pytest.raises(vs.TableNotFound):
            pg.search("items", Q[0], k=5)
        with pytest.raises(vs.TableNotFound):
            pg.count("items")
        other.create_table("items", pa.schema([("id", pa.int64())]), key="id",
                           vectors=[VectorColumn("v", 2, metric="dot")])
        other.write("items", pa.table({"id": [1, 2], "v": _vec(np.array([[1, 0], [0, 1]]))}))
        res = pg.search("items", [0, 1], k=1)
        assert res.to_pylist() == [{"id": 2, "score": 1.0}]
        assert pg.count("items") == 2
        assert pg.lookup("items", pa.array([1])).column("id").to_pylist() == [1]
    finally:
        other.close()


def test_a_read_failing_with_a_current_description_raises_and_leaves_no_transaction(
        pg_dsn, pg, trips):
    pg.search("items", Q[0], k=5)  # cached
    with psycopg.connect(pg_dsn, autocommit=True) as conn:  # outside Kindred: no new row
        conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(pg.schema, "items")))
    for read in (lambda: pg.search("items", Q[0], k=5), lambda: pg.count("items"),
                 lambda: pg.lookup("items", pa.array(["i001"])), lambda: pg.to_arrow("items")):
        with pytest.raises(vs.TableNotFound):
            read()
        with pg._db.pool.connection() as conn:
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with pytest.raises(vs.InvalidOption):  # refused by the current description: no retry loop
        pg.search("items", Q[0], k=0)


def test_the_answers_are_the_earlier_paths(pg):
    pg.create_vector_index("items", "v", index_type="HNSW")
    keys = pa.array([f"i{i:03d}" for i in range(0, N, 7)] + ["absent", None])
    many = pa.array([f"k{i}" for i in range(9000)] + ["i004"])  # three statements of keys

    def answers() -> list[object]:
        return [
            pg.search("items", Q[0], k=5),
            pg.search("items", Q, k=7, filter="region = 'UK'", columns=["id", "n"]),
            pg.search("items", Q, k=N + 5, filter="n < 12"),  # short of k: topped up
            pg.search("items", Q[1], k=3, exact=True, params={"ef_search": 80}),
            pg.search("items", Q[0], k=4, columns=["id", "v"]),
            pg.search("items", Q[0], k=5, filter="n > 1000"),
            pg.count("items"), pg.count("items", "region = 'EU' AND n > 20"),
            pg.null_count("items", "region"), pg.null_count("items", "v"),
            pg.lookup("items", keys).sort_by("id"),
            pg.lookup("items", keys, columns=["n"], key="id").sort_by("id"),
            pg.lookup("items", many),
            pg.lookup("items", pa.array(["absent"])),
            pg.to_arrow("items", filter="n < 5").sort_by("id"),
            pg.to_arrow("items", filter="n > 1000"),
            pg.take("items", [3, 1]).num_rows,
        ]

    new = answers()
    pg._pipelined_reads = False
    old = answers()
    for a, b in zip(new, old, strict=True):
        if isinstance(a, pa.Table):
            assert a.schema == b.schema
            assert a.equals(b)
        else:
            assert a == b
    assert new[2].num_rows == 2 * 12
    for p in (True, False):
        pg._pipelined_reads = p
        with pytest.raises(vs.ColumnNotFound):
            pg.null_count("items", "nope")
    assert new[12].column("id").to_pylist() == ["i004"]


def test_a_table_made_again_with_other_types_under_prepared_statements(pg_dsn, pg):
    """psycopg prepares a statement run 5 times; a table dropped and made again by another
    connection with the same column names but other types would make the prepared statement
    fail ("cached plan must not change result type"): the read forgets them and is redone."""
    pg.drop_table("items")
    pg.create_table("items", pa.schema([("id", pa.string())]), key="id",
                    vectors=[VectorColumn("v", 2)])
    pg.write("items", pa.table({"id": ["a"], "v": _vec(np.array([[1, 0]]))}))
    for _ in range(7):
        pg.search("items", [1, 0], k=1)
        pg.lookup("items", pa.array(["a"]))
    other = _other(pg_dsn, pg)
    try:
        other.drop_table("items")
        other.create_table("items", pa.schema([("id", pa.int64())]), key="id",
                           vectors=[VectorColumn("v", 2)])
        other.write("items", pa.table({"id": [1], "v": _vec(np.array([[1, 0]]))}))
    finally:
        other.close()
    assert pg.search("items", [1, 0], k=1).to_pylist() == [{"id": 1, "score": 1.0}]
    assert pg.lookup("items", pa.array([1])).to_pylist() == [{"id": 1, "v": [1.0, 0.0]}]
