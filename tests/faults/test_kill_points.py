"""Commands killed (SIGKILL) at each of their commit boundaries leave every table exactly as
it was before the command or as an uninterrupted run leaves it, and a re-run succeeds and
gives the uninterrupted result.

Each command runs as a ``kindred`` subprocess with ``KINDRED_FAULT_POINT`` naming the point
(see :mod:`vectorstore.faults`); the process kills itself there. Tables are compared row by
row with their schema, vector columns and metadata (timestamps left out, change stamps
compared as ranks; risk model ids too).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import vectorstore
from ingest import synthetic
from ingest.freshness import ROW_STAMP, STAMP_PREFIX

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("customers", "events", "products")
VOLATILE = {"at", "model_id", "artifact", "sha256"}
pytestmark = pytest.mark.slow


def kindred(store: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("KINDRED_FAULT_POINT", None)
    if fault:
        env["KINDRED_FAULT_POINT"] = fault
    cmd = [sys.executable, "-c", "from services.cli import main; main()", "--store", str(store),
           *args]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _plain(value: Any) -> Any:
    """Metadata without timestamps and model ids; NaN made comparable."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()
                if k not in VOLATILE and not k.endswith("_at")}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def _ranked_stamps(rows: pa.Table) -> pa.Table:
    """Change stamps (``row_stamp``, ``stamp_*``) as dense ranks: which rows one write
    stamped together, and in which order, without the clock time each run stamped them at."""
    for i, name in enumerate(rows.column_names):
        if name == ROW_STAMP or name.startswith(STAMP_PREFIX):
            col = rows.column(name)
            rank = pc.rank(col, sort_keys="ascending", tiebreaker="dense")
            rows = rows.set_column(i, name, pc.if_else(pc.is_null(col), None, rank))
    return rows


def snapshot(path: Path) -> dict[str, Any]:
    """Every table's rows (by key), schema, vector columns and metadata; the artifacts."""
    out: dict[str, Any] = {}
    with vectorstore.connect(str(path)) as store:
        for name in TABLES:
            if not store.has_table(name):
                out[name] = None
                continue
            info = store.table_info(name)
            rows = store.to_arrow(name).sort_by(info.key)
            if "risk_model" in rows.column_names:  # every row names the model the table records
                models = set(rows.column("risk_model").to_pylist())
                assert models == {info.metadata["risk"]["model_id"]}, models
                rows = rows.drop_columns(["risk_model"])
            out[name] = (_plain(_ranked_stamps(rows).to_pydict()), info.schema, info.key,
                         info.vectors,
                         _plain(info.metadata))
        out["artifacts"] = set(store.list_artifacts())
    return out


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Stores to start each command from, and the files they read."""
    root = tmp_path_factory.mktemp("kill")
    a = _csv(root / "a.csv", "id,age,income,region",
             [f"c{i},{20 + i % 50},{1000 + 37 * i % 900},r{i % 5}" for i in range(600)])
    a2 = _csv(root / "a2.csv", "id,age,income,region",
              [f"c{i},{20 + i % 50},{1000 + 37 * i % 900},r{i % 5}" for i in range(600, 800)])
    # changed rows, new rows and a new column, for the ingest of "day 2"
    _csv(root / "b.csv", "id,age,income,region,tier",
         [f"c{i},{70 + i % 9},{1000 + 37 * i % 900},r{i % 5},{'gold' if i % 2 else 'silver'}"
          for i in range(0, 800, 7)] + [f"n{i},{30 + i % 40},{500 + i},r{i % 5},bronze"
                                        for i in range(150)])
    plain = root / "plain"  # customers in two commits: two partitions on LanceDB
    for f in (a, a2):
        r = kindred(plain, "ingest", "customers", str(f), "--id-column", "id")
        assert r.returncode == 0, r.stderr
    embedded = root / "embedded"
    shutil.copytree(plain, embedded)
    r = kindred(embedded, "embed", "tabular")
    assert r.returncode == 0, r.stderr
    bank = root / "bank"
    files = synthetic.generate(root / "files", n_customers=500, events_per_customer=4, seed=3)
    with vectorstore.connect(str(bank)) as store:
        synthetic.load_into_store(store, files)
    return {"plain": plain, "embedded": embedded, "bank": bank, "changes": root / "b.csv",
            "root": root}


COMMANDS = {
    # name: (base store, arguments, points)
    "ingest": ("embedded", ["ingest", "customers", "{changes}", "--id-column", "id"],
               ["commit:customers", "committed:customers"]),
    "embed": ("plain", ["embed", "tabular"],
              ["stage:customers", "commit:_kindred_artifacts", "committed:_kindred_artifacts",
               "commit:customers", "committed:customers"]),
    "risk": ("embedded", ["risk", "score", "--detector", "iforest"],
             ["commit:_kindred_artifacts", "committed:_kindred_artifacts", "commit:customers",
              "committed:customers"]),
    "consolidate": ("bank", ["consolidate"], ["commit:customers", "committed:customers"]),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_killed_at_each_point_leaves_before_or_after_and_reruns_to_after(bases, command):
    base_name, args, points = COMMANDS[command]
    args = [a.format(**{k: str(v) for k, v in bases.items()}) for a in args]
    root: Path = bases["root"] / f"run-{command}"
    before = snapshot(bases[base_name])
    ref = root / "uninterrupted"
    shutil.copytree(bases[base_name], ref)

    def killed(point: str) -> tuple[str, Path, subprocess.CompletedProcess]:
        store = root / point.replace(":", "-")
        shutil.copytree(bases[base_name], store)
        return point, store, kindred(store, *args, fault=point)

    with ThreadPoolExecutor(2) as pool:
        done = pool.submit(kindred, ref, *args)
        runs = list(pool.map(killed, points))
        r = done.result()
    assert r.returncode == 0, r.stderr
    after = snapshot(ref)
    assert after != before
    for point, store, run in runs:
        assert run.returncode == -signal.SIGKILL, (point, run.returncode, run.stderr[-2000:])
        state = snapshot(store)
        # before the step's commit nothing of it is visible; after it, all of it
        want = after if point == "committed:customers" else before
        assert _tables(state) == _tables(want), point
        # at most the run's own artifact beside the old ones (written before the commit)
        assert before["artifacts"] <= state["artifacts"] <= after["artifacts"] | before[
            "artifacts"] | _new_names(state, before), point
        again = kindred(store, *args)
        assert again.returncode == 0, (point, again.stderr[-2000:])
        assert _tables(snapshot(store)) == _tables(after), point


def _tables(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k != "artifacts"}


def _new_names(state: dict[str, Any], before: dict[str, Any]) -> set[str]:
    """Artifacts a killed run may leave: its model or state, under the run's prefixes."""
    return {a for a in state["artifacts"] - before["artifacts"]
            if ".risk." in a or ".embedder." in a}


def test_a_second_process_committing_during_an_embed_keeps_its_rows(bases):
    """While ``embed tabular`` waits at its commit, another process ingests changed and new
    customers and finishes; the embed then commits: both writers' work is there."""
    store = bases["root"] / "two-writers"
    shutil.copytree(bases["plain"], store)
    go = bases["root"] / "two-writers.go"
    env = dict(os.environ, PYTHONPATH=str(ROOT), KINDRED_FAULT_POINT="commit:customers",
               KINDRED_FAULT_PAUSE=str(go))
    embed = subprocess.Popen(
        [sys.executable, "-c", "from services.cli import main; main()", "--store", str(store),
         "embed", "tabular"], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    assert embed.stderr is not None
    line = embed.stderr.readline()
    assert "fault point commit:customers reached" in line, line
    r = kindred(store, "ingest", "customers", str(bases["changes"]), "--id-column", "id")
    go.touch()  # the embed goes on and commits after the ingest did
    assert r.returncode == 0, r.stderr
    assert embed.wait(timeout=120) == 0, embed.stderr.read()
    with vectorstore.connect(str(store)) as s:
        rows = {r["customer_id"]: r for r in s.to_arrow("customers").to_pylist()}
        info = s.table_info("customers")
    assert len(rows) == 950
    assert "vec_tabular" in info.vectors
    assert "tier" in info.schema.names
    assert (rows["c7"]["age"], rows["c7"]["tier"]) == (70 + 7 % 9, "gold")  # the ingest's
    assert rows["c7"]["vec_tabular"] is not None  # the embed's vector for a row it saw
    assert rows["n3"]["vec_tabular"] is None  # a row the embed never saw: to embed next time
