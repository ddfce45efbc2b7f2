"""End-to-end tests of the ``kindred`` CLI: click's CliRunner and a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

import vectorstore
from services.cli import main
from vectorstore import VectorColumn

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, store: Path | str | None = None, ok: bool = True) -> tuple[int, str, str]:
    """Invoke the CLI in-process; returns (exit code, stdout, stderr)."""
    argv = [*(["--store", str(store)] if store is not None else []), *args]
    res = CliRunner().invoke(main, argv, catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, f"{argv}: {res.stdout}\n{res.stderr}"
    return res.exit_code, res.stdout, res.stderr


def run_json(*args: str, store: Path | str | None = None) -> object:
    _, out, _ = run("--json", *args, store=store)
    return json.loads(out)


def _toy_store(path: Path, n: int = 400, d: int = 8) -> np.ndarray:
    """A store with a customers table (key, attributes, holdings, one vector column) + artifact."""
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n, d)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with vectorstore.connect(str(path)) as s:
        s.create_table(
            "customers",
            pa.schema([("customer_id", pa.string()), ("age", pa.int64()),
                       ("region", pa.string()), ("holdings", pa.list_(pa.string()))]),
            key="customer_id", vectors=[VectorColumn("vec_tabular", d)],
            metadata={"embedders": {"vec_tabular": {"kind": "tabular", "model": "toy",
                                                    "dim": d}}},
        )
        s.write("customers", pa.table({
            "customer_id": [f"c{i:04d}" for i in range(n)],
            "age": rng.integers(18, 90, n),
            "region": rng.choice(["north", "south"], n),
            "holdings": [["savings"] if i % 3 == 0 else [] for i in range(n)],
            "vec_tabular": pa.FixedSizeListArray.from_arrays(pa.array(vecs.ravel()), d),
        }))
        s.write("customers", pa.table({"customer_id": ["c0000"], "age": [99]}), mode="upsert")
        s.put_artifact("customers.vec_tabular.embedder", b"state-bytes", {"kind": "tabular"})
    return vecs


@pytest.fixture
def toy(tmp_path: Path) -> tuple[Path, np.ndarray]:
    path = tmp_path / "store"
    return path, _toy_store(path)


# ---------------------------------------------------------------------- global behaviour
def test_version_and_help() -> None:
    _, out, _ = run("--version")
    assert "kindred" in out
    assert "0.1.0" in out
    _, out, _ = run("--help")
    for cmd in ("init", "generate", "ingest", "consolidate", "embed", "index", "match",
                "explain", "recommend", "risk", "evaluate", "tables", "stats", "versions",
                "restore", "optimize", "migrate", "report", "demo"):
        assert f"  {cmd}" in out, cmd


def test_missing_store_is_one_clean_error(tmp_path: Path) -> None:
    code, _, err = run("tables", store=tmp_path / "nope", ok=False)
    assert code == 1
    assert err.startswith("Error: no Kindred store at ")
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "nope").exists()  # a read command creates nothing


def test_verbose_shows_the_traceback(tmp_path: Path) -> None:
    code, _, err = run("-v", "tables", store=tmp_path / "nope", ok=False)
    assert code == 1
    assert "Traceback" in err
    assert "StoreMissing" in err


def test_wrong_backend_uri(tmp_path: Path) -> None:
    code, _, err = run("tables", store="mongodb://x/y", ok=False)
    assert code == 1
    assert "no backend for URI scheme 'mongodb'" in err
    code, _, err = run("tables", store="postgresql://alice:s3cret@127.0.0.1:1/db", ok=False)
    assert code == 1
    assert "s3cret" not in err
    assert err.startswith("Error: ")


def test_store_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KINDRED_STORE", str(tmp_path / "envstore"))
    out = run_json("init")
    assert out["store"].endswith("envstore")
    assert (tmp_path / "envstore").is_dir()


def test_usage_error_exits_2(tmp_path: Path) -> None:
    code, _, err = run("restore", "notanumber", store=tmp_path, ok=False)
    assert code == 2
    assert "Invalid value" in err


# ---------------------------------------------------------------------- store administration
def test_init_then_tables(tmp_path: Path) -> None:
    store = tmp_path / "s"
    _, out, _ = run("init", store=store)
    assert "Store ready at" in out
    assert run_json("tables", store=store) == []


def test_stats_json(toy: tuple[Path, np.ndarray]) -> None:
    store, vecs = toy
    st = run_json("stats", store=store)
    assert st["backend"] == "lance"
    assert st["versions_supported"] is True
    assert st["artifacts"] == ["customers.vec_tabular.embedder"]
    (t,) = st["tables"]
    assert t["name"] == "customers"
    assert t["rows"] == len(vecs)
    assert t["key"] == "customer_id"
    assert t["vectors"] == [{"name": "vec_tabular", "dim": 8, "metric": "cosine",
                             "embedder": "tabular", "model": "toy", "created_at": None}]
    assert t["version"] == t["n_versions"]
    assert t["n_versions"] >= 3
    assert t["disk_bytes"] > vecs.nbytes
    _, out, _ = run("stats", store=store)
    assert "vec_tabular[8] (tabular)" in out
    _, out, _ = run("tables", store=store)
    assert "customers" in out
    assert f"{len(vecs)} rows" in out


def test_versions_and_restore(toy: tuple[Path, np.ndarray]) -> None:
    store, _ = toy
    vs = run_json("versions", store=store)
    assert vs[-1]["current"] is True
    with vectorstore.connect(str(store)) as s:
        assert s.to_arrow("customers", filter="customer_id = 'c0000'")["age"][0].as_py() == 99
    # the version before the upsert
    before = vs[-2]["version"]
    out = run_json("restore", str(before), store=store)
    assert out["restored"] == before
    with vectorstore.connect(str(store)) as s:
        assert s.to_arrow("customers", filter="customer_id = 'c0000'")["age"][0].as_py() != 99
    code, _, err = run("restore", "9999", store=store, ok=False)
    assert code == 1
    assert "has no version 9999" in err


def test_optimize_and_index(toy: tuple[Path, np.ndarray]) -> None:
    store, _ = toy
    out = run_json("optimize", store=store)
    assert out["details"]["tables"] == ["customers"]
    out = run_json("index", store=store)  # 400 rows < default min rows: exact search only
    assert out["details"]["vector_indexes"] == []
    assert out["details"]["exact_only"] == ["vec_tabular"]
    out = run_json("index", "--min-rows", "100", "--index-type", "IVF_FLAT", store=store)
    assert out["details"]["vector_indexes"] == ["vec_tabular"]
    st = run_json("stats", store=store)
    kinds = {tuple(i["columns"]): i["vector"] for i in st["tables"][0]["indexes"]}
    assert kinds == {("customer_id",): False, ("vec_tabular",): True}
    code, _, err = run("index", "--column", "nope", store=store, ok=False)
    assert code == 1
    assert "no vector column 'nope'" in err


def test_migrate_refuses_existing_tables(toy: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    store, vecs = toy
    target = tmp_path / "copy"
    out = run_json("migrate", "--to", str(target), store=store)
    assert out["tables"] == {"customers": len(vecs)}
    code, _, err = run("migrate", "--to", str(target), store=store, ok=False)
    assert code == 1
    assert "already has table(s) customers" in err
    run("migrate", "--to", str(target), "--replace", store=store)


@pytest.mark.pgvector
def test_migrate_lance_to_postgres_gives_identical_search(toy: tuple[Path, np.ndarray],
                                                          pg_dsn: str) -> None:
    store, vecs = toy
    sep = "&" if "?" in pg_dsn else "?"
    target = f"{pg_dsn}{sep}schema=mig_{uuid.uuid4().hex[:10]}"
    out = run_json("migrate", "--to", target, store=store)
    assert out["tables"] == {"customers": len(vecs)}
    assert out["artifacts"] == ["customers.vec_tabular.embedder"]
    rng = np.random.default_rng(5)
    queries = rng.normal(size=(5, vecs.shape[1])).astype(np.float32)
    with vectorstore.connect(str(store)) as src, vectorstore.connect(target) as dst:
        si, di = src.table_info("customers"), dst.table_info("customers")
        assert di.key == si.key
        assert di.vectors == si.vectors
        assert di.metadata == si.metadata
        assert dst.get_artifact("customers.vec_tabular.embedder")[0] == b"state-bytes"
        for q in queries:
            for flt in (None, "region = 'north'"):
                a = src.search("customers", q, k=20, exact=True, filter=flt,
                               columns=["customer_id", "age"])
                b = dst.search("customers", q, k=20, exact=True, filter=flt,
                               columns=["customer_id", "age"])
                assert a["customer_id"].to_pylist() == b["customer_id"].to_pylist()
                assert a["age"].to_pylist() == b["age"].to_pylist()
                np.testing.assert_allclose(a["score"].to_numpy(), b["score"].to_numpy(),
                                           atol=1e-5)
        # the whole table made the trip, holdings lists included
        ta = src.to_arrow("customers").sort_by("customer_id")
        tb = dst.to_arrow("customers").sort_by("customer_id")
        assert ta.select(["customer_id", "age", "region", "holdings"]).equals(
            tb.select(["customer_id", "age", "region", "holdings"]))
    # stats works on the PostgreSQL store too, with the password-free location
    st = run_json("stats", store=target)
    assert st["backend"].startswith("postgres")
    assert st["tables"][0]["rows"] == len(vecs)
    assert st["versions_supported"] is False
    code, _, err = run("versions", store=target, ok=False)
    assert code == 1
    assert "versions" in err


# ---------------------------------------------------------------------- as a subprocess
def test_subprocess_entry_point(toy: tuple[Path, np.ndarray]) -> None:
    store, vecs = toy
    env = {**os.environ, "KINDRED_STORE": str(store)}
    exe = Path(sys.executable).with_name("kindred")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "services.cli"]
    res = subprocess.run([*cmd, "--json", "tables"], capture_output=True, text=True,
                         env=env, cwd=ROOT, check=False, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [{"table": "customers", "rows": len(vecs)}]
    assert res.stderr == ""  # quiet when not a terminal
    res = subprocess.run([*cmd, "--store", str(store / "missing"), "stats"],
                         capture_output=True, text=True, cwd=ROOT, check=False, timeout=120)
    assert res.returncode == 1
    assert res.stderr.startswith("Error: no Kindred store")
    assert "Traceback" not in res.stderr
