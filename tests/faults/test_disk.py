"""Writes the disk refuses: a full disk and a read-only one.

A step that cannot write fails with one ``Error:`` line (exit status 1, no traceback, no
Rust log lines) and leaves the store exactly as it was; once there is room again, the same
command succeeds. The real disks are small tmpfs mounts, which need root (or
CAP_SYS_ADMIN): without it those tests skip, and the disk filling at each commit boundary is
simulated with ``KINDRED_FAULT_ERROR=ENOSPC`` (:mod:`vectorstore.faults`), which always runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import kill_matrix as M
from vectorstore.faults import ENV, ERROR_ENV


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from services.facade import Kindred

    root = tmp_path_factory.mktemp("disk")
    a = _csv(root / "a.csv", "id,age,income,region",
             [f"c{i},{20 + i % 50},{1000 + 37 * i % 900},r{i % 5}" for i in range(600)])
    with Kindred(str(root / "plain"), create=True) as k:
        k.ingest(str(a), table="customers", id_column="id")
    changes = _csv(root / "b.csv", "id,age,income,region,tier",
                   [f"c{i},{70 + i % 9},{1000 + i},r{i % 5},gold" for i in range(0, 600, 7)]
                   + [f"n{i},{30 + i % 40},{500 + i},r1,bronze" for i in range(300)])
    return {"plain": root / "plain", "changes": changes}


COMMANDS = {
    "embed tabular": ["embed", "tabular"],
    "ingest": ["ingest", "customers", "{changes}", "--id-column", "id"],
}


def _args(name: str, bases: dict[str, Path]) -> list[str]:
    return [a.format(changes=bases["changes"]) for a in COMMANDS[name]]


def _one_clear_line(r: subprocess.CompletedProcess, reason: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    assert len(errors) == 1, r.stderr
    assert reason.lower() in errors[0].lower(), errors[0]
    assert "Traceback" not in r.stderr
    assert ".rs:" not in r.stderr, r.stderr  # no native log lines with Rust source paths


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs at a fresh directory (skips where mounting is not permitted)."""
    where = tmp_path / "disk"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)],
                       capture_output=True, text=True, check=False)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(disk: Path) -> Path:
    """Fill the disk to the last byte; the file to remove to make room again."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (65_536, 4_096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_full_disk_leaves_the_store_unchanged_with_one_clear_line(name, bases, small_disk):
    store = small_disk / "s"
    shutil.copytree(bases["plain"], store)
    before = M.snapshot(store)
    filler = _fill(small_disk)
    r = M.run(store, _args(name, bases))
    _one_clear_line(r, "No space left on device")
    assert M.differences(M.snapshot(store), before) == []
    filler.unlink()  # room again: the same command succeeds
    again = M.run(store, _args(name, bases))
    assert again.returncode == 0, again.stderr[-2000:]
    assert M.differences(M.snapshot(store), before) != []


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_read_only_store_is_left_unchanged_with_one_clear_line(name, bases, tmp_path):
    root_can_mount = os.geteuid() == 0
    store_dir = tmp_path / "ro"
    store_dir.mkdir()
    if root_can_mount:  # root writes through file modes: a read-only mount instead
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(store_dir)],
                           capture_output=True, text=True, check=False)
        root_can_mount = r.returncode == 0
    store = store_dir / "s"
    shutil.copytree(bases["plain"], store)
    before = M.snapshot(store)
    try:
        if root_can_mount:
            subprocess.run(["mount", "-o", "remount,ro", str(store_dir)], check=True)
        elif os.geteuid() == 0:
            pytest.skip("root without permission to mount: cannot make a read-only store")
        else:
            for p in [store, *store.rglob("*")]:
                p.chmod(0o555 if p.is_dir() else 0o444)
        r = M.run(store, _args(name, bases))
        _one_clear_line(r, "Read-only file system" if root_can_mount else "ermission denied")
        assert M.differences(M.snapshot(store), before) == []
    finally:
        if root_can_mount:
            subprocess.run(["umount", "-l", str(store_dir)], check=False)
        else:
            for p in [store, *store.rglob("*")]:
                p.chmod(0o755 if p.is_dir() else 0o644)


SIMULATED = [("embed tabular", "stage:customers"), ("embed tabular", "commit:_kindred_artifacts"),
             ("embed tabular", "commit:customers"), ("ingest", "commit:customers")]


@pytest.mark.parametrize(("name", "point"), SIMULATED, ids=[f"{n}@{p}" for n, p in SIMULATED])
def test_the_disk_filling_at_a_commit_boundary_leaves_the_store_unchanged(name, point, bases,
                                                                           tmp_path):
    """Without root: the disk fills at exactly that boundary (an ``OSError(ENOSPC)``)."""
    store = tmp_path / "s"
    shutil.copytree(bases["plain"], store)
    before = M.snapshot(store)
    r = M.run(store, _args(name, bases), **{ENV: point, ERROR_ENV: "ENOSPC"})
    _one_clear_line(r, "No space left on device")
    after = M.snapshot(store)
    assert after.tables == before.tables
    # at most an unreferenced, content-addressed artifact the commit would have named
    assert set(before.artifacts) <= set(after.artifacts)
