"""LanceDB sparse writes: a step that sets existing columns on a few rows of a fragment moves
those rows (deleted from the fragment, appended whole to a new one) instead of rewriting the
columns for every row; the other fragments and the fragment's own files are left as they were,
the table reads as the full rewrite would leave it, and other writers' work is kept."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import vectorstore as vs
from vectorstore import VectorColumn
from vectorstore.lance import sparse as lance_sparse

N = 400  # rows per fragment: 3% of it (12 rows) or fewer is sparse
FEW = [3, 50, 51, 200, 399]  # scan positions in the first fragment


@pytest.fixture
def lance(store):
    if not store.capabilities.partitions:
        pytest.skip("LanceDB fragments only")
    return store


def by_id(t: pa.Table) -> pa.Table:
    return t.take(pc.sort_indices(t, [("id", "ascending")]))


def table(store: vs.VectorStore) -> None:
    """Two fragments of N rows, with a vector column and a score for every row."""
    store.create_table("p", pa.schema([("id", pa.string()), ("age", pa.int64()),
                                       ("score", pa.float64())]), key="id",
                       vectors=[VectorColumn("v", 2)])
    for f in range(2):
        ids = np.arange(f * N, (f + 1) * N)
        x = np.c_[ids, -ids].astype(np.float32)
        store.write("p", pa.table({
            "id": [f"c{i:04d}" for i in ids], "age": ids, "score": ids / 2,
            "v": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 2)}))


def fragments(store: vs.VectorStore) -> list[dict]:
    ds = store._dataset("p")
    return [f.metadata.to_json() for f in ds.get_fragments()]


def stage_few(tx: vs.Transaction, positions: list[int], add: float = 1000.0) -> None:
    part = tx.partitions()[0]
    rows = pa.concat_tables(pa.Table.from_batches([b]) for b in tx.scan(
        part, columns=["id", "score"], rows=positions))
    x = np.full((len(positions), 2), add, dtype=np.float32)
    tx.stage(part, pa.table({"id": rows.column("id"),
                             "score": pc.add(rows.column("score"), add),
                             "v": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 2)}),
             rows=positions)


def expected(changed: dict[str, dict]) -> dict[str, list]:
    ids = np.arange(2 * N)
    out = {"id": [f"c{i:04d}" for i in ids], "age": ids.tolist(), "score": (ids / 2).tolist(),
           "v": [[float(i), float(-i)] for i in ids]}
    for k, cols in changed.items():
        i = int(k[1:])
        for c, value in cols.items():
            out[c][i] = value
    return out


def test_a_few_staged_rows_move_and_leave_the_fragments_files_as_they_were(lance):
    table(lance)
    before = fragments(lance)
    with lance.transaction("p") as tx:
        stage_few(tx, FEW)
    after = fragments(lance)
    assert after[1] == before[1]  # the untouched fragment: same files, same rows
    assert [f["path"] for f in after[0]["files"]] == [f["path"] for f in before[0]["files"]]
    assert after[0]["deletion_file"]["num_deleted_rows"] == len(FEW)
    assert len(after) == 3
    assert after[2]["physical_rows"] == len(FEW)  # the moved rows
    got = by_id(lance.to_arrow("p")).to_pydict()
    assert got == expected({f"c{i:04d}": {"score": i / 2 + 1000, "v": [1000.0, 1000.0]}
                            for i in FEW})


def test_a_sparse_write_reads_as_the_full_rewrite_would_leave_it(lance, monkeypatch):
    table(lance)
    with lance.transaction("p") as tx:
        stage_few(tx, FEW)
    lance.update("p", pa.table({"id": ["c0007", "c0410"], "age": [-7, -410]}))  # keyed: moved
    sparse = by_id(lance.to_arrow("p"))
    assert len(fragments(lance)) == 4  # one new fragment per step
    lance.drop_table("p")
    monkeypatch.setattr(lance_sparse, "SPARSE_SHARE", 0.0)  # every write rewrites its columns
    table(lance)
    with lance.transaction("p") as tx:
        stage_few(tx, FEW)
    lance.update("p", pa.table({"id": ["c0007", "c0410"], "age": [-7, -410]}))
    assert len(fragments(lance)) == 2
    assert by_id(lance.to_arrow("p")).equals(sparse)


def test_many_rows_still_rewrite_the_columns(lance):
    table(lance)
    many = list(range(0, N, 4))  # 25%
    with lance.transaction("p") as tx:
        stage_few(tx, many)
    after = fragments(lance)
    assert len(after) == 2
    assert after[0]["deletion_file"] is None
    assert by_id(lance.to_arrow("p")).to_pydict() == expected(
        {f"c{i:04d}": {"score": i / 2 + 1000, "v": [1000.0, 1000.0]} for i in many})


def concurrently(fn) -> None:
    th = threading.Thread(target=fn)
    th.start()
    th.join()


def test_rows_another_writer_moved_meanwhile_get_this_steps_values(lance):
    """Our sparse step and theirs on the same rows, other columns: both kept."""
    table(lance)
    with lance.transaction("p") as tx:
        stage_few(tx, FEW)
        concurrently(lambda: lance.update("p", pa.table({"id": ["c0003", "c0200"],
                                                          "age": [-3, -200]})))
    got = by_id(lance.to_arrow("p")).to_pydict()
    want = {f"c{i:04d}": {"score": i / 2 + 1000, "v": [1000.0, 1000.0]} for i in FEW}
    want["c0003"]["age"], want["c0200"]["age"] = -3, -200
    assert got == expected(want)


def test_a_full_rewrite_follows_rows_another_writer_moved_meanwhile(lance):
    """Our step rewrites a column for every row; theirs moved a few rows meanwhile: their
    copies get our values (read back from our staged files)."""
    table(lance)
    with lance.transaction("p") as tx:
        for part in tx.partitions():
            rows = pa.concat_tables(pa.Table.from_batches([b]) for b in tx.scan(
                part, columns=["id", "score"]))
            tx.stage(part, pa.table({"id": rows.column("id"),
                                     "score": pc.multiply(rows.column("score"), -1.0)}))
        concurrently(lambda: lance.update("p", pa.table({"id": ["c0005", "c0600"],
                                                          "age": [-5, -600]})))
    got = by_id(lance.to_arrow("p")).to_pydict()
    want = {f"c{i:04d}": {"score": -i / 2} for i in range(2 * N)}
    want["c0005"]["age"], want["c0600"]["age"] = -5, -600
    assert got == expected(want)


def test_rows_deleted_meanwhile_stay_deleted(lance):
    table(lance)
    with lance.transaction("p") as tx:
        stage_few(tx, FEW)
        concurrently(lambda: lance.delete("p", "id = 'c0050'"))
    got = by_id(lance.to_arrow("p")).to_pydict()
    assert "c0050" not in got["id"]
    assert len(got["id"]) == 2 * N - 1
    assert dict(zip(got["id"], got["score"], strict=True))["c0051"] == 51 / 2 + 1000


def test_a_rewrite_of_some_rows_leaves_moved_rows_it_did_not_set_as_their_writer_left_them(
        lance):
    table(lance)
    many = list(range(0, N, 4))  # 25%: a rewrite of the column, not a move
    with lance.transaction("p") as tx:
        stage_few(tx, many)
        # theirs: a row we set (another column) and one we did not (our column), both moved
        concurrently(lambda: (
            lance.update("p", pa.table({"id": ["c0008"], "age": [-8]})),
            lance.update("p", pa.table({"id": ["c0009"], "age": [-9], "score": [-0.5]}))))
    got = by_id(lance.to_arrow("p")).to_pydict()
    want = {f"c{i:04d}": {"score": i / 2 + 1000, "v": [1000.0, 1000.0]} for i in many}
    want["c0008"]["age"] = -8
    want["c0009"] = {"age": -9, "score": -0.5}
    assert got == expected(want)
