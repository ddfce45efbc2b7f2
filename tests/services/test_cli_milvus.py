"""The ``kindred`` path on a ``milvus://`` store: a generated bank ingested, consolidated,
embedded, matched and risk-scored through the CLI gives the answers a LanceDB store gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")


def _run(store: str, *args: str) -> str:
    res = CliRunner().invoke(main, ["--store", store, *args], catch_exceptions=False)
    assert res.exit_code == 0, f"{args}: {res.stdout}\n{res.stderr}"
    return res.stdout


def _pipeline(store: str, bank: Path) -> dict:
    _run(store, "ingest", "customers", str(bank / "customers.csv"), "--id-column",
         "customer_id", "--holdings-column", "products", "--holdings-separator", ";",
         "--text-column", "note")
    _run(store, "ingest", "events", str(bank / "transactions.parquet"))
    _run(store, "ingest", "customers", str(bank / "truth.parquet"), "--id-column",
         "customer_id", "--attribute", "is_anomaly")
    _run(store, "consolidate")
    _run(store, "embed", "tabular", "--exclude", "note", "--exclude", "is_anomaly")
    match = json.loads(_run(store, "--json", "match", "term_deposit", "--top", "10",
                            "--where", "age >= 30"))
    _run(store, "risk", "score")
    top = json.loads(_run(store, "--json", "risk", "top", "--top", "10"))
    return {
        "prospects": [(p["customer_id"], p["score"]) for p in match["prospects"]],
        "consumers": [(p["customer_id"], p["score"]) for p in match["consumers"]],
        "risk": [(r["customer_id"], r["risk_score"]) for r in top],
    }


def test_the_cli_on_a_milvus_store_answers_as_on_lancedb(tmp_path: Path) -> None:
    bank = tmp_path / "bank"
    _run(str(tmp_path / "unused"), "generate", "--customers", "400", "--out", str(bank),
         "--events-per-customer", "8", "--seed", "3")
    milvus = _pipeline(f"milvus://{tmp_path / 'm' / 'store.db'}", bank)
    lance = _pipeline(str(tmp_path / "lance"), bank)
    assert len(milvus["prospects"]) == len(milvus["risk"]) == 10
    for part in ("prospects", "consumers", "risk"):  # the same customers, in the same order
        assert [c for c, _ in milvus[part]] == [c for c, _ in lance[part]], part
        assert [v for _, v in milvus[part]] == pytest.approx([v for _, v in lance[part]],
                                                             abs=1e-5), part
    stats = json.loads(_run(f"milvus://{tmp_path / 'm' / 'store.db'}", "--json", "stats"))
    assert stats["backend"] == "milvus"
    assert stats["versions_supported"] is False
