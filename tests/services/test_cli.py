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

import vectorstore
from tests.services._cli import ROOT, run, run_json
from vectorstore import VectorColumn


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


# ---------------------------------------------------------------------- the pipeline commands
@pytest.fixture
def bank_copy(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.services._bank import copy_store

    return copy_store(tmp_path_factory, tmp_path / "store")


def test_generate_ingest_consolidate_embed(tmp_path: Path) -> None:
    out = run_json("generate", "--customers", "300", "--events-per-customer", "5",
                   "--out", str(tmp_path / "bank"))
    assert out["customers"] == 300
    files = out["files"]
    for path in files.values():
        assert Path(path).is_file()
    store = tmp_path / "store"
    r = run_json("ingest", "customers", files["customers"], "--id-column", "customer_id",
                 "--holdings-column", "products", "--holdings-separator", ";",
                 "--text-column", "note", store=store)
    assert (r["table"], r["rows_read"], r["written"]) == ("customers", 300, 300)
    assert r["created_table"] is True
    r = run_json("ingest", "events", files["transactions"], store=store)
    assert r["written"] == r["rows_read"] > 0
    r = run_json("ingest", "events", files["transactions"], store=store)
    assert r["written"] == 0  # idempotent
    assert r["unchanged"] == r["rows_read"]
    r = run_json("ingest", "events", files["web_events"], "--rename", "page=category",
                 "--timestamp-format", "ts=%Y-%m-%dT%H:%M:%SZ", "--holdings-from-events",
                 "purchase", store=store)
    assert r["written"] > 0
    r = run_json("ingest", "products", files["products"], "--id-column", "product_id",
                 store=store)
    assert r["written"] == 8
    r = run_json("consolidate", store=store)
    with vectorstore.connect(str(store)) as s:
        active = len(set(s.to_arrow("events", columns=["customer_id"])
                         .column("customer_id").to_pylist()))
    assert r["details"]["customers"] == active  # every customer with events, once
    assert 250 < active <= 300
    assert any(c.startswith("spend_") for c in r["details"]["feature_columns"])
    r = run_json("embed", "tabular", "--exclude", "note", store=store)
    assert r["details"]["rows_embedded"] == 300
    assert r["details"]["raw_column"] == "vec_tabular_raw"  # the companion risk scores
    r = run_json("embed", "behavior", "--dim", "8", store=store)
    assert r["details"]["dim"] == 8
    r = run_json("embed", "combined", "--source", "vec_tabular", "--source", "vec_behavior",
                 store=store)
    assert r["details"]["rows_embedded"] == 300
    _, out, _ = run("embed", "tabular", "--exclude", "note", store=store)
    assert "customers.vec_tabular" in out
    st = run_json("stats", store=store)
    by = {t["name"]: t for t in st["tables"]}
    vecs = {v["name"]: v for v in by["customers"]["vectors"]}
    assert set(vecs) == {"vec_tabular", "vec_tabular_raw", "vec_behavior", "vec_combined"}
    assert (vecs["vec_tabular"]["metric"], vecs["vec_tabular_raw"]["metric"]) == ("cosine", "l2")
    # the products table got the behaviour vectors too (one shared space)
    assert [v["name"] for v in by["products"]["vectors"]] == ["vec_behavior"]


def test_embed_text_with_the_packaged_model(tmp_path: Path) -> None:
    csv = tmp_path / "c.csv"
    csv.write_text("customer_id,age,note\n" + "".join(
        f"c{i},{20 + i},{'likes travel' if i % 2 else 'saves for a house'}\n"
        for i in range(12)))
    store = tmp_path / "s"
    run("ingest", "customers", str(csv), "--text-column", "note", store=store)
    r = run_json("embed", "text", "--text-column", "note", store=store)
    assert r["details"]["dim"] == 384
    assert r["details"]["rows_embedded"] == 12
    again = run_json("embed", "text", "--text-column", "note", store=store)
    assert again["details"]["rows_embedded"] == 0  # unchanged text is not re-embedded
    code, _, err = run("embed", "text", store=store, ok=False)
    assert code == 1
    assert "exactly one of a text column" in err


def test_ingest_errors(tmp_path: Path) -> None:
    csv = tmp_path / "clients.csv"
    csv.write_text("client_id,age,y\na,34,yes\nb,notanumber,no\nc,28,yes\n")
    store = tmp_path / "s"
    code, _, err = run("ingest", "--mapping", str(tmp_path / "missing.toml"), store=store,
                       ok=False)
    assert code == 1
    assert "no such mapping file" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('table = "customers"\nid_column = "client_id"\ncolour = "red"\n')
    code, _, err = run("ingest", "--mapping", str(bad), str(csv), store=store, ok=False)
    assert code == 1
    assert "colour" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run("ingest", "customers", str(csv), "--holding", "no-equals-sign",
                       store=store, ok=False)
    assert code == 1
    assert "expected NAME=VALUE" in err
    code, _, err = run("ingest", "clients", str(csv), store=store, ok=False)
    assert code == 2
    code, _, err = run("ingest", "customers", str(csv), "--id-column", "client_id",
                       "--type", "age=int64", store=store, ok=False)
    assert code == 1
    assert "notanumber" in err
    # fail mode wrote no row
    assert all(t["rows"] == 0 for t in run_json("tables", store=store))
    r = run_json("ingest", "customers", str(csv), "--id-column", "client_id", "--type",
                 "age=int64", "--holding", "term_deposit=y:yes", "--on-error", "quarantine",
                 store=store)
    assert (r["written"], r["quarantined"]) == (2, 1)
    tables = {t["table"]: t["rows"] for t in run_json("tables", store=store)}
    assert tables == {"customers": 2, "customers_rejects": 1}
    r = run_json("ingest", "customers", str(csv), "--id-column", "client_id", "--type",
                 "age=int64", "--on-error", "skip", store=store)
    assert r["skipped"] == 1


def test_ingest_with_a_mapping_file(tmp_path: Path) -> None:
    csv = tmp_path / "clients.csv"
    csv.write_text("client_id;age;y\na;34;yes\nb;51;no\n")
    m = tmp_path / "m.toml"
    m.write_text('table = "customers"\nid_column = "client_id"\n[source]\npath = "clients.csv"\n'
                 'delimiter = ";"\n[holdings.flags]\nterm_deposit = "y:yes"\n')
    r = run_json("ingest", "--mapping", str(m), store=tmp_path / "s")
    assert (r["rows_read"], r["written"]) == (2, 2)
    with vectorstore.connect(str(tmp_path / "s")) as s:
        t = s.to_arrow("customers").sort_by("customer_id")
        assert t.column("customer_id").to_pylist() == ["a", "b"]
        assert t.column("holdings").to_pylist() == [["term_deposit"], []]


def test_match_and_explain(bank: tuple[Path, Path]) -> None:
    store = bank[1]
    r = run_json("match", "term_deposit", "--top", "15", "--where", "age >= 40",
                 "--attribute", "age", store=store)
    s = r["summary"]
    assert s["product"] == "term_deposit"
    assert s["vector_column"] == "vec_tabular"
    assert len(r["prospects"]) == 15
    assert all(p["age"] >= 40 for p in r["prospects"] + r["consumers"])
    assert [p["rank"] for p in r["prospects"]] == list(range(1, 16))
    consumers = {c["customer_id"] for c in r["consumers"]}
    assert not consumers & {p["customer_id"] for p in r["prospects"]}
    only = run_json("match", "term_deposit", "--prospects", "--audience-pct", "1",
                    "--column", "vec_behavior", store=store)
    assert "consumers" not in only
    assert only["summary"]["consumers_returned"] == 0  # the list was not searched at all
    assert len(only["prospects"]) == -(-only["summary"]["eligible_prospects"] // 100)
    only = run_json("match", "term_deposit", "--consumers", "--top", "3", store=store)
    assert "prospects" not in only
    assert only["summary"]["prospects_returned"] == 0
    assert len(only["consumers"]) == 3
    banded = run_json("match", "term_deposit", "--top", "40", "--bands", "0.3", "0.1",
                      store=store)
    for row in banded["prospects"]:
        want = "high" if row["score"] >= 0.3 else "medium" if row["score"] >= 0.1 else "low"
        assert row["band"] == want
    edges = [b["min_edge"] for b in banded["summary"]["bands"]["prospects"]]
    assert edges == [0.3, 0.1, None]
    code, _, err = run("match", "term_deposit", "--bands", "0.1", "0.3", store=store, ok=False)
    assert code == 1
    assert "highest first" in err
    _, out, _ = run("match", "term_deposit", "--top", "3", store=store)
    assert "Customers consuming term_deposit:" in out
    assert "Top potential customers for term_deposit:" in out
    assert "[high]" in out
    e = run_json("explain", r["prospects"][0]["customer_id"], "--product", "term_deposit",
                 "--top", "4", store=store)
    assert e["holds_product"] is False
    assert len(e["neighbours"]) == 4
    _, out, _ = run("explain", r["prospects"][0]["customer_id"], "--product", "term_deposit",
                    store=store)
    assert "nearest consumers" in out


def test_match_errors(bank: tuple[Path, Path]) -> None:
    store = bank[1]
    code, _, err = run("match", "space_travel", store=store, ok=False)
    assert code == 1
    assert "space_travel" in err
    assert "Traceback" not in err
    code, _, err = run("match", "term_deposit", "--where", "agee > 3", store=store, ok=False)
    assert code == 1
    assert "agee" in err
    code, _, err = run("match", "term_deposit", "--where", "age >>= 3", store=store, ok=False)
    assert code == 1
    assert err.startswith("Error: ")
    code, _, err = run("match", "term_deposit", "--column", "vec_nope", store=store, ok=False)
    assert code == 1
    assert "vec_nope" in err
    code, _, _ = run("match", "term_deposit", "--top", "0", store=store, ok=False)
    assert code == 2


def test_risk_commands(bank_copy: Path) -> None:
    r = run_json("risk", "score", "--detector", "iforest", "--column", "vec_tabular",
                 store=bank_copy)
    assert r["detector"] == "iforest"
    assert r["n_rows"] == 2000
    assert 0 < r["n_flagged"] < 2000
    top = run_json("risk", "top", "--top", "5", "--attribute", "is_anomaly", store=bank_copy)
    assert [t["risk_rank"] for t in top] == [1, 2, 3, 4, 5]
    assert all(t["risk_model"] == r["model_id"] for t in top)
    e = run_json("risk", "explain", top[0]["customer_id"], store=bank_copy)
    assert e["risk_rank"] == 1
    _, out, _ = run("risk", "top", "--top", "3", store=bank_copy)
    assert out.startswith("Anomalies detected")
    code, _, err = run("risk", "score", "--detector", "nosuch", store=bank_copy, ok=False)
    assert code == 1
    assert "unknown detector" in err
    code, _, err = run("risk", "explain", "C99999999", store=bank_copy, ok=False)
    assert code == 1


def test_evaluate_commands(bank: tuple[Path, Path]) -> None:
    store = bank[1]
    rep = run_json("evaluate", "matching", "--product", "term_deposit", "--method", "centroid",
                   "--column", "vec_tabular", store=store)
    by = {r["method"]: r for r in rep["rows"]}
    assert set(by) == {"random", "popularity", "centroid"}
    assert by["centroid"]["roc_auc"] > by["random"]["roc_auc"] + 0.1
    rep = run_json("evaluate", "risk", "--label", "is_anomaly", "--detector", "hbos",
                   "--column", "vec_tabular", store=store)
    (row,) = rep["rows"]
    assert row["detector"] == "hbos"
    assert row["n_anomalies"] > 0
    assert 0 <= row["roc_auc"] <= 1
    code, _, err = run("evaluate", "matching", store=store, ok=False)
    assert code == 2
    assert "exactly one of --product or --label" in err
    code, _, err = run("evaluate", "risk", "--label", "nope", store=store, ok=False)
    assert code == 1
    assert "nope" in err


def test_recommend_and_report(bank_copy: Path, tmp_path: Path) -> None:
    r = run_json("recommend", "--top", "2", "--method", "vector", "--column", "vec_behavior",
                 store=bank_copy)
    assert (r["customers"], r["top_n"]) == (2000, 2)
    out = run_json("report", "--out", str(tmp_path / "rep"), "--product", "term_deposit",
                   "--label", "is_anomaly", "--method", "centroid", store=bank_copy)
    assert Path(out["html"]).is_file()
    assert out["sections"] == ["gain", "distributions", "risk", "map"]
    assert all(Path(p).is_file() for p in out["images"])


def test_demo_command(tmp_path: Path) -> None:
    summary = run_json("demo", "--customers", "400", "--no-text", "--out", str(tmp_path))
    assert summary["skipped"] == {}
    assert Path(summary["report"]).is_file()
    assert summary["match"]["summary"]["product"] == "term_deposit"
    assert summary["matching_quality"]["roc_auc"] > 0.6
    assert 0 <= summary["risk_quality"]["roc_auc"] <= 1
    tables = {t["name"]: t["rows"] for t in summary["stats"]["tables"]}
    assert tables["customers"] == 400
