"""A load killed with SIGKILL leaves the table exactly as before the load or after it.

A child process ingests a large CSV (many batches, one commit) into a table that already holds
rows; the parent kills it at several points. Afterwards the table opens and holds either the
old rows only or the old rows plus every new row, never a part of the load.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import vectorstore
from ingest.mapping import Mapping
from ingest.pipeline import ingest

ROOT = Path(__file__).resolve().parents[2]
N_NEW = 200_000
N_OLD = 1_000
CHILD = """
import sys
import vectorstore
from ingest.mapping import Mapping
from ingest.pipeline import ingest
store = vectorstore.connect(sys.argv[1])
mapping = Mapping.from_options("customers", id_column="id", types=["age=int64"])
print("ready", flush=True)
ingest(store, sys.argv[2], mapping, batch_rows=5_000)
print("done", flush=True)
"""


def _write_csv(path: Path, start: int, n: int) -> None:
    with open(path, "w") as f:
        f.write("id,age,region,note\n")
        for lo in range(start, start + n, 50_000):
            hi = min(lo + 50_000, start + n)
            f.write("".join(f"c{i},{20 + i % 60},r{i % 9},note number {i}\n"
                            for i in range(lo, hi)))


@pytest.mark.slow
def test_sigkill_mid_load_leaves_before_or_after(tmp_path):
    big = tmp_path / "big.csv"
    _write_csv(big, N_OLD, N_NEW)
    old = tmp_path / "old.csv"
    _write_csv(old, 0, N_OLD)
    mapping = Mapping.from_options("customers", id_column="id", types=["age=int64"])
    outcomes = []
    for delay in (0.2, 0.8, 1.6, 3.0, 60.0):
        db = tmp_path / f"db_{delay}"
        with vectorstore.connect(str(db)) as store:
            ingest(store, old, mapping)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(big)],
                                 stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        t0 = time.monotonic()
        while child.poll() is None and time.monotonic() - t0 < delay:
            time.sleep(0.02)
        killed = child.poll() is None
        if killed:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
        with vectorstore.connect(str(db)) as store:
            n = store.count("customers")
            ids = store.to_arrow("customers", columns=["customer_id"]).column(0)
            assert n in (N_OLD, N_OLD + N_NEW), f"killed after {delay}s: {n} rows, a partial load"
            assert len(set(ids.to_pylist())) == n
            assert store.count("customers", "customer_id = 'c0'") == 1
            # the table stays usable: a new load after the crash completes
            if n == N_OLD:
                s = ingest(store, big, mapping)
                assert store.count("customers") == N_OLD + N_NEW
                assert s.written == N_NEW
        outcomes.append((delay, killed, n))
    assert any(k and n == N_OLD for _, k, n in outcomes), outcomes  # some kills hit mid-load
    assert outcomes[-1][2] == N_OLD + N_NEW  # the unkilled load completed
