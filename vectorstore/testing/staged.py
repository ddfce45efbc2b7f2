"""Conformance: write modes and staged steps, the same on every backend (the ``store`` fixture).

A staged step (``store.transaction``) becomes visible in one commit or not at all; another
writer's commit in the middle of it is never lost and never undone; metadata patches of two
writers both survive; partial upserts leave the columns they do not carry (vectors too).
"""

from __future__ import annotations

import datetime as dt
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import vectorstore as vs
from vectorstore import VectorColumn

from .marks import notimpl, requires


def vec(x: np.ndarray) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])


def by_id(t: pa.Table) -> pa.Table:
    return t.take(pc.sort_indices(t, [("id", "ascending")]))


def snapshot(store: vs.VectorStore, name: str) -> tuple:
    info = store.table_info(name)
    return (by_id(store.to_arrow(name)).to_pydict(), info.schema, info.key, info.vectors,
            info.metadata, store.list_artifacts())


def people(store: vs.VectorStore, n: int = 6, chunks: int = 3) -> None:
    """A keyed table written in several commits (several Lance fragments)."""
    store.create_table("p", pa.schema([("id", pa.string()), ("age", pa.int64()),
                                       ("city", pa.string())]), key="id")
    ids = [f"c{i}" for i in range(n)]
    for part in np.array_split(np.arange(n), chunks):
        store.write("p", pa.table({"id": [ids[i] for i in part], "age": [20 + int(i) for i in part],
                                   "city": [f"t{int(i) % 2}" for i in part]}))


def embed_all(tx: vs.Transaction, column: str = "v") -> None:
    """Stage a vector per row, partition by partition: (age, 1, 0)."""
    for part in tx.partitions():
        rows = pa.concat_tables(pa.Table.from_batches([b])
                                for b in tx.scan(part, columns=["id", "age"]))
        x = np.c_[rows.column("age").to_numpy(), np.ones(rows.num_rows), np.zeros(rows.num_rows)]
        tx.stage(part, pa.table({"id": rows.column("id"), column: vec(x)}))


# ------------------------------------------------------------------ write modes


def test_partial_upsert_sets_only_given_columns_and_counts_unchanged(store):
    people(store)
    r = store.write("p", pa.table({"id": ["c1", "c2", "new"], "age": [21, 99, 50]}), mode="upsert")
    assert (r.inserted, r.updated, r.unchanged) == (1, 1, 1)
    got = by_id(store.to_arrow("p")).to_pydict()
    assert got["age"] == [20, 21, 99, 23, 24, 25, 50]
    assert got["city"] == ["t0", "t1", "t0", "t1", "t0", "t1", None]  # kept; new row null
    again = store.write("p", pa.table({"id": ["c1", "c2", "new"], "age": [21, 99, 50]}),
                        mode="upsert")
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3)


def test_insert_missing_inserts_new_keys_and_leaves_existing_ones(store):
    people(store)
    r = store.write("p", pa.table({"id": ["c0", "c9"], "age": [70, 71], "city": ["x", "y"]}),
                    mode="insert_missing")
    assert (r.inserted, r.updated, r.unchanged) == (1, 0, 1)
    got = by_id(store.to_arrow("p", filter="id IN ('c0', 'c9')")).to_pydict()
    assert got == {"id": ["c0", "c9"], "age": [20, 71], "city": ["t0", "y"]}
    assert store.write("p", pa.table({"id": ["c9"], "age": [1]}),
                       mode="insert_missing").unchanged == 1


def test_upsert_new_and_changed_rows_without_the_vector_column(store):
    people(store)
    with store.transaction("p") as tx:
        tx.add_columns([], vectors=[VectorColumn("v", 3)])
        embed_all(tx)
    before = by_id(store.to_arrow("p", columns=["id", "v"])).column("v").to_pylist()
    r = store.write("p", pa.table({"id": ["c0", "n1", "n2"], "age": [40, 41, 42]}), mode="upsert")
    assert (r.inserted, r.updated) == (2, 1)
    got = by_id(store.to_arrow("p", columns=["id", "age", "v"])).to_pydict()
    assert got["id"] == ["c0", "c1", "c2", "c3", "c4", "c5", "n1", "n2"]
    assert got["age"][0] == 40
    assert got["v"][:6] == before  # the changed row keeps its vector
    assert got["v"][6:] == [None, None]
    assert store.null_count("p", "v") == 2
    # the new rows can be embedded later, by key; searches skip rows without a vector
    store.update("p", pa.table({"id": ["n1", "n2"], "v": vec(np.eye(3)[:2])}))
    assert store.null_count("p", "v") == 0
    hit = store.search("p", [1, 0, 0], k=1, columns=["id"], exact=True)
    assert hit.column("id").to_pylist() == ["n1"]


def test_partitions_scan_in_a_stable_order_and_stage_some_rows(store):
    people(store, n=9)
    parts = store.partitions("p")
    assert sum(p.rows for p in parts) == 9
    if store.capabilities.partitions:
        assert len(parts) == 3
    with store.transaction("p") as tx:
        tx.add_columns([pa.field("score", pa.float64())])
        for part in tx.partitions():
            rows = pa.concat_tables(pa.Table.from_batches([b])
                                    for b in tx.scan(part, columns=["id", "age", "city"]))
            keep = np.flatnonzero(rows.column("age").to_numpy() % 2 == 0)  # even ages only
            tx.stage(part, pa.table({"id": rows.column("id").take(pa.array(keep)),
                                     "score": rows.column("age").take(pa.array(keep)).cast(
                                         pa.float64())}), rows=keep)
            tx.stage(part, pa.table({"id": rows.column("id"),
                                     "city": pc.utf8_upper(rows.column("city"))}))
    got = by_id(store.to_arrow("p")).to_pydict()
    assert got["score"] == [20.0, None, 22.0, None, 24.0, None, 26.0, None, 28.0]
    assert got["city"] == ["T0", "T1"] * 4 + ["T0"]


def test_a_staged_step_that_raises_leaves_the_table_exactly_as_it_was(store):
    people(store)
    store.set_metadata("p", {"owner": "crm"})
    before = snapshot(store, "p")
    version = store.version("p") if store.capabilities.versions else None

    def step() -> None:
        with store.transaction("p") as tx:
            tx.add_columns([pa.field("note", pa.string())], vectors=[VectorColumn("v", 3)])
            embed_all(tx)
            tx.write(pa.table({"id": ["zz", "c1"], "age": [1, 2], "note": ["a", "b"]}),
                     mode="upsert")
            tx.set_metadata({"owner": "risk", ("embedders", "v"): {"kind": "x"}})
            raise RuntimeError("stop half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        step()
    assert snapshot(store, "p") == before
    if version is not None:
        assert store.version("p") == version  # not even a version was added
    # a failing write inside the step is the same

    def bad_write() -> None:
        with store.transaction("p") as tx:
            tx.add_columns([pa.field("note", pa.string())])
            tx.write(pa.table({"id": ["zz"], "age": ["not a number"]}), mode="upsert")

    with pytest.raises(vs.SchemaMismatch):
        bad_write()
    assert snapshot(store, "p") == before


def test_a_step_with_columns_rows_and_metadata_is_one_commit(store):
    people(store)
    version = store.version("p") if store.capabilities.versions else None
    with store.transaction("p") as tx:
        tx.add_columns([pa.field("note", pa.string())], vectors=[VectorColumn("v", 3)])
        embed_all(tx)
        new = tx.write(pa.table({"id": ["zz", "c1"], "age": [1, 21], "note": ["a", "b"]}),
                       mode="upsert")
        tx.set_metadata({("embedders", "v"): {"kind": "x"}})
    assert (new.result.inserted, new.result.updated) == (1, 1)  # c1: only its note changed
    if version is not None:
        assert store.version("p") == version + 1 == tx.version
    info = store.table_info("p")
    assert "v" in info.vectors
    assert info.metadata == {"embedders": {"v": {"kind": "x"}}}
    got = by_id(store.to_arrow("p")).to_pydict()
    assert got["note"] == [None, "b", None, None, None, None, "a"]
    assert got["v"][1] == [21.0, 1.0, 0.0]
    assert got["v"][6] is None


# ------------------------------------------------------------------ two writers


def test_metadata_patches_of_two_writers_both_survive(store):
    people(store)
    store.set_metadata("p", {"embedders": {"a": {"kind": "old"}}})
    with store.transaction("p") as tx:
        tx.set_metadata({("embedders", "b"): {"kind": "mine"}})
        # another writer patches another entry and a top-level key meanwhile
        other = second_connection(store)
        other.set_metadata("p", {("embedders", "a"): {"kind": "theirs"}, "owner": "crm"})
    meta = store.table_info("p").metadata
    assert meta == {"embedders": {"a": {"kind": "theirs"}, "b": {"kind": "mine"}},
                    "owner": "crm"}


def test_another_writers_commit_during_a_step_is_kept(store):
    people(store)
    with store.transaction("p") as tx:
        tx.add_columns([], vectors=[VectorColumn("v", 3)])
        embed_all(tx)
        tx.update(pa.table({"id": ["c0"], "city": ["mine"]}))
        # a second writer, in another thread, commits while this step is staged
        done = []

        def other() -> None:
            store.write("p", pa.table({"id": ["c5", "x1"], "age": [55, 60]}), mode="upsert")
            store.update("p", pa.table({"id": ["c1"], "city": ["theirs"]}))
            done.append(True)

        th = threading.Thread(target=other)
        th.start()
        th.join()
        assert done
    got = by_id(store.to_arrow("p")).to_pydict()
    assert got["id"] == ["c0", "c1", "c2", "c3", "c4", "c5", "x1"]
    assert got["age"][5:] == [55, 60]  # their upsert, not undone
    assert got["city"][:2] == ["mine", "theirs"]  # both updates of the same column
    assert got["v"][0] == [20.0, 1.0, 0.0]
    assert got["v"][6] is None
    assert "v" in store.table_info("p").vectors


def test_the_same_new_column_added_by_two_writers_fails_clearly(store):
    people(store)

    def step() -> None:
        with store.transaction("p") as tx:
            tx.add_columns([], vectors=[VectorColumn("v", 3)])
            embed_all(tx)
            store.add_columns("p", [], vectors=[VectorColumn("v", 3)])  # the other writer wins

    with pytest.raises(vs.ConcurrentWriteError, match="'v'"):
        step()
    assert store.null_count("p", "v") == 6  # theirs, empty, untouched


@requires("partitions", "keyed backends apply staged partitions by key: last writer wins per row")
def test_a_positional_rewrite_of_a_column_another_writer_rewrote_fails(store):
    people(store)
    seen: list[dict] = []

    def step() -> None:
        with store.transaction("p") as tx:
            for part in tx.partitions():
                rows = pa.concat_tables(pa.Table.from_batches([b])
                                        for b in tx.scan(part, columns=["id", "age"]))
                tx.stage(part, pa.table({"age": pc.add(rows.column("age"), 100)}))
            store.update("p", pa.table({"id": ["c2"], "age": [0]}))
            seen.append(by_id(store.to_arrow("p")).to_pydict())

    with pytest.raises(vs.ConcurrentWriteError):
        step()
    assert by_id(store.to_arrow("p")).to_pydict() == seen[0]  # theirs kept, nothing of ours


def test_keyed_rows_are_matched_again_after_a_concurrent_compaction(store):
    people(store, n=30, chunks=6)
    with store.transaction("p") as tx:
        tx.update(pa.table({"id": ["c3", "c17"], "age": [-3, -17]}))
        store.delete("p", "id = 'c4'")
        store.optimize("p")  # LanceDB: fragments compacted into new ones
    got = by_id(store.to_arrow("p")).to_pydict()
    assert len(got["id"]) == 29
    assert "c4" not in got["id"]
    ages = dict(zip(got["id"], got["age"], strict=True))
    assert (ages["c3"], ages["c17"], ages["c5"]) == (-3, -17, 25)


def second_connection(store: vs.VectorStore) -> vs.VectorStore:
    """Another connection to the same tables (an object store: with the same storage
    options), or the store itself where a second connection would not see them."""
    uri = getattr(store, "uri", None)
    if uri is None or str(uri).startswith("memory://"):
        return store
    if store.capabilities.partitions:
        handle = store.worker_handle()
        return vs.connect(handle.uri, **handle.options)
    return vs.connect(str(uri))


# ------------------------------------------------------------------ artifacts


def test_content_addressed_artifacts_are_idempotent_and_swept_when_unreferenced(store):
    people(store)
    a = store.save_artifact("p.model", b"fitted state", {"kind": "x"})
    assert a.startswith("p.model.")
    assert store.save_artifact("p.model", b"fitted state") == a
    b = store.save_artifact("p.model", b"other state")
    store.put_artifact("p.cache", b"cache")  # named artifacts are never swept
    store.set_metadata("p", {"model": {"artifact": a}})
    assert store.get_artifact(a) == (b"fitted state", {"kind": "x", "sha256": store.get_artifact(
        a)[1]["sha256"]})
    assert store.sweep_artifacts() == []  # within the grace period
    assert store.sweep_artifacts(grace=dt.timedelta(0)) == [b]
    assert store.list_artifacts() == sorted(["p.cache", a])


@notimpl("versions", raises=vs.UnsupportedOperation)
def test_data_version_changes_with_rows_and_columns_only(store):
    people(store)
    v0 = store.data_version("p")
    store.set_metadata("p", {"owner": "crm"})  # a new table version, the same data
    assert store.data_version("p") == v0
    assert store.write("p", pa.table({"id": ["c1"], "age": [21]}), mode="upsert").unchanged == 1
    assert store.data_version("p") == v0
    store.update("p", pa.table({"id": ["c1"], "age": [5]}))
    v1 = store.data_version("p")
    assert v1 != v0
    store.add_columns("p", [pa.field("note", pa.string())])
    assert store.data_version("p") != v1


@notimpl("partitions", raises=vs.UnsupportedOperation)
def test_a_partition_staged_elsewhere_is_attached_to_the_one_commit(store):
    import pickle

    people(store)
    with store.transaction("p") as tx:
        tx.add_columns([pa.field("twice", pa.int64())])
        parts = pickle.loads(pickle.dumps(tx.partitions()))  # noqa: S301 (as a worker receives them)
        info = pickle.loads(pickle.dumps(tx.info))  # noqa: S301
        for part in parts:
            # a worker: scan its partition, compute, stage; only the small result comes back
            rows = pa.concat_tables(pa.Table.from_batches([b])
                                    for b in store.scan_partition(part, columns=["age"]))
            staged = store.stage_partition(part, pa.table({"twice": pc.multiply(
                rows.column("age"), 2)}), info=info)
            tx.attach(pickle.loads(pickle.dumps(staged)))  # noqa: S301
        assert store.table_info("p").schema.names == ["id", "age", "city"]  # not yet visible
    got = by_id(store.to_arrow("p")).to_pydict()
    assert got["twice"] == [2 * a for a in got["age"]]


def test_rows_without_their_vectors_can_be_appended_and_upserted(store):
    store.create_table("t", pa.schema([("id", pa.string())]), key="id",
                       vectors=[VectorColumn("v", 3)])
    store.write("t", pa.table({"id": ["a"], "v": vec(np.ones((1, 3)))}))
    store.write("t", pa.table({"id": ["b", "c"]}))  # append: the vectors are null
    nulls = pa.nulls(2, pa.list_(pa.float32(), 3))  # explicit nulls, without value slots
    assert store.write("t", pa.table({"id": ["d", "a"], "v": nulls}), mode="upsert") == \
        vs.WriteResult(inserted=1, updated=1)
    assert store.null_count("t", "v") == 4
    assert by_id(store.to_arrow("t")).column("v").to_pylist() == [None] * 4


def test_rows_whose_list_columns_are_all_null_are_written(store):
    """A new customer after ``recommend``: its list columns are null (no element at all)."""
    store.create_table("t", pa.schema([("id", pa.string()), ("recs", pa.list_(pa.string())),
                                       ("scores", pa.list_(pa.float32()))]), key="id")
    store.write("t", pa.table({"id": ["a"], "recs": [["p1"]], "scores": [[0.5]]}))
    store.write("t", pa.table({"id": ["b", "c"]}))  # append: both list columns null
    store.write("t", pa.table({"id": ["d"], "scores": pa.array([None], pa.list_(pa.float32()))}),
                mode="upsert")
    got = by_id(store.to_arrow("t")).to_pydict()
    assert got["scores"] == [[0.5], None, None, None]


# ------------------------------------------------------------------ touched columns


def _with_stamp(store: vs.VectorStore) -> None:
    people(store)
    store.add_columns("p", [pa.field("stamp", pa.int64()), pa.field("seen", pa.int64())])
    store.update("p", pa.table({"id": [f"c{i}" for i in range(6)], "stamp": [1] * 6,
                                "seen": [1] * 6}))


def test_touch_sets_columns_on_inserted_and_changed_rows_only(store):
    _with_stamp(store)
    r = store.write("p", pa.table({"id": ["c0", "c1", "new"], "age": [20, 99, 5]}),
                    mode="upsert", touch={"stamp": 7, "seen": None})
    assert (r.inserted, r.updated, r.unchanged) == (1, 1, 1)
    got = by_id(store.to_arrow("p", columns=["id", "stamp", "seen"])).to_pydict()
    assert got["stamp"] == [1, 7, 1, 1, 1, 1, 7]  # c0 unchanged: not touched
    assert got["seen"] == [1, None, 1, 1, 1, 1, None]
    store.update("p", pa.table({"id": ["c2", "c3"], "age": [22, 0]}), touch={"stamp": 8})
    got = by_id(store.to_arrow("p", columns=["id", "stamp"])).to_pydict()
    assert got["stamp"] == [1, 7, 1, 8, 1, 1, 7]  # c2 already 22
    r = store.write("p", pa.table({"id": ["c2", "n2"], "age": [1, 2]}), mode="insert_missing",
                    touch={"stamp": 9})
    assert (r.inserted, r.unchanged) == (1, 1)
    got = by_id(store.to_arrow("p", columns=["id", "stamp"])).to_pydict()
    assert got["stamp"] == [1, 7, 1, 8, 1, 1, 9, 7]


def test_touch_in_a_step_and_refused_misuse(store):
    _with_stamp(store)
    with store.transaction("p") as tx:
        tx.add_columns([pa.field("flag", pa.bool_())])
        tx.write(pa.table({"id": ["c4"], "city": ["elsewhere"]}), mode="upsert",
                 touch={"stamp": 3, "flag": True})
    got = by_id(store.to_arrow("p", columns=["id", "stamp", "flag"])).to_pydict()
    assert got["stamp"] == [1, 1, 1, 1, 3, 1]
    assert got["flag"] == [None] * 4 + [True, None]
    with pytest.raises(vs.StoreError, match="no column 'nope'"):
        store.write("p", pa.table({"id": ["c1"], "age": [1]}), mode="upsert", touch={"nope": 1})
    with pytest.raises(vs.StoreError, match="both in the data and touched"):
        store.write("p", pa.table({"id": ["c1"], "stamp": [5]}), mode="upsert",
                    touch={"stamp": 1})
    with pytest.raises(vs.StoreError, match="does not fit"):
        store.write("p", pa.table({"id": ["c1"], "age": [1]}), mode="upsert",
                    touch={"stamp": "x"})
    assert by_id(store.to_arrow("p", columns=["id", "stamp"])).column("stamp").to_pylist() \
        == [1, 1, 1, 1, 3, 1]


def test_a_partition_scan_can_read_some_rows_only(store):
    people(store, n=9, chunks=3)
    for part in store.partitions("p"):
        whole = pa.concat_tables(pa.Table.from_batches([b]) for b in
                                 store.scan_partition(part, columns=["id", "age"]))
        pos = np.array([part.rows - 1, 0]) if part.rows > 1 else np.array([0])
        some = pa.concat_tables(pa.Table.from_batches([b]) for b in store.scan_partition(
            part, columns=["id", "age"], rows=pos, batch_size=1))
        assert some.to_pydict() == whole.take(pa.array(np.sort(pos))).to_pydict()
        with pytest.raises(vs.StoreError, match="out of range"):
            list(store.scan_partition(part, columns=["id"], rows=[part.rows]))
    with store.transaction("p") as tx:
        part = tx.partitions()[0]
        got = pa.concat_tables(pa.Table.from_batches([b]) for b in
                               tx.scan(part, columns=["age"], rows=[0]))
        assert got.num_rows == 1
