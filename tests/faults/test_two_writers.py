"""Two writers on one LanceDB store, as two ``kindred`` processes (and, for the bounded
retries, two store handles in one process).

A step waits at its commit boundary (``KINDRED_FAULT_POINT`` + ``KINDRED_FAULT_PAUSE``) while
the other writer commits; then it goes on and commits, fails (``KINDRED_FAULT_ERROR``: the
disk fills at that moment) or meets a conflict it cannot rebase. In every case the other
writer's rows are all there (nothing lost, nothing undone) and a failing step wrote nothing
and said so in one line.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

import vectorstore
from tests.faults import kill_matrix as M
from vectorstore import lance_txn
from vectorstore.faults import ENV, ERROR_ENV, PAUSE_ENV

CHANGED = range(0, 800, 7)  # customers the second writer changes (115)
NEW = 150  # and adds


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``plain``: 800 customers in two commits; ``embedded``: with ``vec_tabular``;
    ``changes``: a file changing 115 of them, adding 150 and a new column."""
    from services.facade import Kindred

    root = tmp_path_factory.mktemp("two-writers")
    files = [_csv(root / f"{n}.csv", "id,age,income,region",
                  [f"c{i},{20 + i % 50},{1000 + 37 * i % 900},r{i % 5}" for i in rng])
             for n, rng in (("a", range(600)), ("a2", range(600, 800)))]
    with Kindred(str(root / "plain"), create=True) as k:
        for f in files:
            k.ingest(str(f), table="customers", id_column="id")
    shutil.copytree(root / "plain", root / "embedded")
    with Kindred(str(root / "embedded"), create=True) as k:
        k.embed("tabular")
    changes = _csv(root / "b.csv", "id,age,income,region,tier",
                   [f"c{i},{70 + i % 9},{1000 + 37 * i % 900},r{i % 5},"
                    f"{'gold' if i % 2 else 'silver'}" for i in CHANGED]
                   + [f"n{i},{30 + i % 40},{500 + i},r{i % 5},bronze" for i in range(NEW)])
    return {"plain": root / "plain", "embedded": root / "embedded", "changes": changes,
            "root": root}


@contextmanager
def paused(store: Path, args: list[str], point: str, go: Path,
           **env: str) -> Iterator[subprocess.Popen]:
    """``kindred ARGS`` started and held at ``point`` until ``go`` exists."""
    proc = subprocess.Popen(M.command(store, args),
                            env=M.environment(**{ENV: point, PAUSE_ENV: str(go)}, **env),
                            cwd=M.ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        while line and "fault point" not in line and line.startswith(("Warning", " ")):
            line = proc.stderr.readline()  # warnings printed before the point
        assert f"fault point {point} reached" in line, line + proc.stderr.read()[-2000:]
        yield proc
    finally:
        go.touch()
        if proc.poll() is None:
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()


def ingest_changes(store: Path, bases: dict[str, Path]) -> None:
    r = M.run(store, ["ingest", "customers", str(bases["changes"]), "--id-column", "id"])
    assert r.returncode == 0, r.stderr


def rows_of(store: Path) -> tuple[dict[str, dict[str, Any]], vectorstore.TableInfo]:
    with vectorstore.connect(str(store)) as s:
        return ({r["customer_id"]: r for r in s.to_arrow("customers").to_pylist()},
                s.table_info("customers"))


def lost_rows(rows: dict[str, dict[str, Any]]) -> list[str]:
    """The second writer's changes that are not in the table."""
    lost = [f"c{i}" for i in CHANGED if (rows.get(f"c{i}") or {}).get("age") != 70 + i % 9
            or rows[f"c{i}"]["tier"] != ("gold" if i % 2 else "silver")]
    lost += [f"n{i}" for i in range(NEW) if (rows.get(f"n{i}") or {}).get("tier") != "bronze"]
    return lost


def test_an_embed_waiting_at_its_commit_keeps_a_concurrent_ingest(bases, tmp_path):
    """While ``embed tabular`` waits at its commit, another process ingests changed and new
    customers and finishes; the embed then commits: both writers' work is there."""
    store = tmp_path / "s"
    shutil.copytree(bases["plain"], store)
    with paused(store, ["embed", "tabular"], "commit:customers", tmp_path / "go") as embed:
        ingest_changes(store, bases)
        (tmp_path / "go").touch()
        assert embed.wait(timeout=300) == 0, embed.stderr.read() if embed.stderr else ""
    rows, info = rows_of(store)
    assert len(rows) == 800 + NEW
    assert lost_rows(rows) == []
    assert "vec_tabular" in info.vectors
    assert rows["c7"]["vec_tabular"] is not None  # the embed's vector for a row it saw
    assert rows["n3"]["vec_tabular"] is None  # a row the embed never saw: to embed next time


FAILING = {  # a step that fails at its commit (the disk fills then), and its base store
    "embed tabular": ("plain", ["embed", "tabular"], "vec_tabular"),
    "risk score": ("embedded", ["risk", "score", "--detector", "iforest"], "risk_score"),
}


@pytest.mark.parametrize("name", list(FAILING))
def test_a_failing_writer_beside_a_succeeding_one_loses_nothing(name, bases, tmp_path):
    """The step waits at its commit, an ingest commits 265 changed and new customers, then
    the step fails: the ingest's rows are all there and the step left nothing."""
    base, args, column = FAILING[name]
    store = tmp_path / "s"
    shutil.copytree(bases[base], store)
    before = M.snapshot(store)
    with paused(store, args, "commit:customers", tmp_path / "go",
                **{ERROR_ENV: "ENOSPC"}) as step:
        ingest_changes(store, bases)
        after_ingest = M.snapshot(store)
        (tmp_path / "go").touch()
        assert step.wait(timeout=300) == 1
        err = step.stderr.read() if step.stderr else ""
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err
    assert "No space left on device" in errors[0]
    assert "Traceback" not in err
    rows, info = rows_of(store)
    assert lost_rows(rows) == []
    assert column not in info.schema.names
    assert after_ingest != before
    # exactly the ingest's state: the failed step neither wrote nor undid anything
    assert M.differences(M.snapshot(store), after_ingest) == []


def test_a_step_that_cannot_be_rebased_fails_clearly_and_keeps_the_other_writers_work(
        bases, tmp_path):
    """Two ``embed tabular`` at once: the one that commits second finds the column the
    first added and fails with one line; the first one's vectors stay."""
    store = tmp_path / "s"
    shutil.copytree(bases["plain"], store)
    with paused(store, ["embed", "tabular"], "commit:customers", tmp_path / "go") as second:
        first = M.run(store, ["embed", "tabular"])
        assert first.returncode == 0, first.stderr
        after_first = M.snapshot(store)
        (tmp_path / "go").touch()
        assert second.wait(timeout=300) == 1
        err = second.stderr.read() if second.stderr else ""
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, err
    assert "vec_tabular" in errors[0]
    assert "nothing was written" in errors[0]
    assert M.differences(M.snapshot(store), after_first) == []


# ------------------------------------------------------------------ bounded retries
def _people(path: Path) -> vectorstore.VectorStore:
    store = vectorstore.connect(str(path))
    store.create_table("p", pa.schema([("id", pa.string()), ("age", pa.int64())]), key="id")
    store.write("p", pa.table({"id": [f"c{i}" for i in range(6)], "age": list(range(6))}))
    return store


def _embed(store: vectorstore.VectorStore) -> None:
    with store.transaction("p") as tx:
        tx.add_columns([pa.field("score", pa.float64())])
        for part in tx.partitions():
            rows = pa.concat_tables(pa.Table.from_batches([b])
                                    for b in tx.scan(part, columns=["id", "age"]))
            tx.stage(part, pa.table({"id": rows.column("id"),
                                     "score": np.asarray(rows.column("age"), float) / 2}))


def _rival_at_commit(monkeypatch: pytest.MonkeyPatch, other: vectorstore.VectorStore,
                     times: int) -> list[str]:
    """Make ``other`` commit a new row just before each of the step's first ``times``
    commit attempts (a writer that keeps winning the race)."""
    written: list[str] = []
    busy: list[bool] = []

    def hook(point: str, table: str | None = None) -> None:
        if point == "commit" and table == "p" and len(written) < times and not busy:
            busy.append(True)  # the rival's own commit passes here too
            key = f"x{len(written)}"
            other.write("p", pa.table({"id": [key], "age": [100 + len(written)]}),
                        mode="upsert")
            written.append(key)
            busy.clear()

    monkeypatch.setattr(lance_txn, "fault_point", hook)
    return written


def test_commit_conflicts_are_retried_then_a_clear_error_and_nothing_written(
        tmp_path, monkeypatch):
    store = _people(tmp_path / "s")
    other = vectorstore.connect(str(tmp_path / "s"))
    written = _rival_at_commit(monkeypatch, other, times=1000)
    with pytest.raises(vectorstore.ConcurrentWriteError, match=r"attempts.*run it again"):
        _embed(store)
    assert len(written) == lance_txn.COMMIT_ATTEMPTS  # bounded: one rival commit per attempt
    got = other.to_arrow("p")
    assert "score" not in got.column_names  # the step wrote nothing
    assert sorted(got.column("id").to_pylist()) == sorted(
        [f"c{i}" for i in range(6)] + written)  # every rival commit kept
    store.close()
    other.close()


def test_a_conflict_that_clears_within_the_retries_commits_both(tmp_path, monkeypatch):
    store = _people(tmp_path / "s")
    other = vectorstore.connect(str(tmp_path / "s"))
    written = _rival_at_commit(monkeypatch, other, times=3)
    _embed(store)
    got = {r["id"]: r for r in other.to_arrow("p").to_pylist()}
    assert written == ["x0", "x1", "x2"]
    assert sorted(got) == sorted([f"c{i}" for i in range(6)] + written)
    assert [got[f"c{i}"]["score"] for i in range(6)] == [i / 2 for i in range(6)]
    assert all(got[k]["score"] is None for k in written)  # rows the step never saw
    store.close()
    other.close()
