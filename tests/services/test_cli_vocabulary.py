"""The CLI's one vocabulary: ``--top``, ``--column``, ``--attribute``, ``--text-column``; the
old spellings still work for one release with one ``Warning:`` line; a read command on a path
that holds no store fails cleanly while ``kindred ingest`` on a new path creates one."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from services.cli import main


def run(*args: str, store: Path, ok: bool = True) -> tuple[int, str, str]:
    argv = ["--store", str(store), *args]
    res = CliRunner().invoke(main, argv, catch_exceptions=False)
    if ok:
        assert res.exit_code == 0, f"{argv}: {res.stdout}\n{res.stderr}"
    return res.exit_code, res.stdout, res.stderr


def test_old_spellings_warn_once_and_give_the_same_output(bank: tuple[Path, Path]) -> None:
    store = bank[1]
    _, new, err = run("--json", "risk", "top", "--top", "4", "--attribute", "age", store=store)
    assert "is deprecated" not in err
    _, old, err = run("--json", "risk", "top", "-n", "4", "--attr", "age", store=store)
    assert json.loads(old) == json.loads(new)
    assert len(json.loads(new)) == 4
    assert "Warning: -n is deprecated: use --top" in err
    assert "Warning: --attr is deprecated: use --attribute" in err

    _, new, _ = run("--json", "match", "term_deposit", "--top", "5", "--attribute", "age",
                    store=store)
    _, old, err = run("--json", "match", "term_deposit", "--top", "5", "--attr", "age",
                      store=store)
    assert json.loads(old)["prospects"] == json.loads(new)["prospects"]
    assert "age" in json.loads(new)["prospects"][0]
    assert err.count("Warning: --attr is deprecated") == 1

    cid = json.loads(new)["prospects"][0]["customer_id"]
    _, new, _ = run("--json", "explain", cid, "--product", "term_deposit", "--top", "2",
                    store=store)
    _, old, err = run("--json", "explain", cid, "--product", "term_deposit", "-k", "2",
                      store=store)
    assert json.loads(old) == json.loads(new)
    assert len(json.loads(new)["neighbours"]) == 2
    assert "Warning: -k is deprecated: use --top" in err

    code, _, err = run("risk", "top", "--top", "3", "-n", "4", store=store, ok=False)
    assert code == 2
    assert "give --top or the deprecated -n, not both" in err


def test_recommendations_top_and_the_old_top_n(bank: tuple[Path, Path]) -> None:
    store = bank[1]
    _, new, err = run("--json", "recommendations", "C00000042", "--top", "2", store=store)
    assert "is deprecated" not in err
    _, old, err = run("--json", "recommendations", "C00000042", "--top-n", "2", store=store)
    assert json.loads(old)["recommendations"] == json.loads(new)["recommendations"]
    assert len(json.loads(new)["recommendations"]) <= 2
    assert "Warning: --top-n is deprecated: use --top" in err


def test_a_read_on_a_folder_without_a_store_fails_and_ingest_creates_one(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    csv = data / "c.csv"
    csv.write_text("customer_id,age\nc1,30\nc2,41\n")
    code, _, err = run("stats", store=data, ok=False)  # --store pointed at the data folder
    assert code == 1
    assert err.startswith("Error: no Kindred store at ")
    assert "holds no Kindred store" in err
    assert sorted(p.name for p in data.iterdir()) == ["c.csv"]  # nothing written there

    new = tmp_path / "new-store"
    run("ingest", "customers", str(csv), store=new)  # ingest may create the store
    _, out, _ = run("--json", "tables", store=new)
    assert json.loads(out) == [{"table": "customers", "rows": 2}]


def test_embed_column_names_the_vector_column_written(tmp_path: Path) -> None:
    csv = tmp_path / "c.csv"
    csv.write_text("customer_id,age,income\n" + "".join(
        f"c{i},{20 + i},{1000 * (i % 5)}\n" for i in range(30)))
    store = tmp_path / "s"
    run("ingest", "customers", str(csv), store=store)
    _, out, err = run("--json", "embed", "tabular", "--column", "vec_mine", "--no-raw",
                      store=store)
    assert "is deprecated" not in err
    assert json.loads(out)["details"]["column"] == "vec_mine"
    _, out, err = run("--json", "embed", "tabular", "--output", "vec_old", "--no-raw",
                      store=store)
    assert json.loads(out)["details"]["column"] == "vec_old"
    assert "Warning: --output is deprecated: use --column" in err
    _, out, _ = run("--json", "stats", store=store)
    names = {v["name"] for t in json.loads(out)["tables"] for v in t["vectors"]}
    assert {"vec_mine", "vec_old"} <= names
