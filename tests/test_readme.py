"""The README's command-line quick start and application example run exactly as written."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

import vectorstore

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _block(heading: str, lang: str) -> str:
    text = README.read_text(encoding="utf-8")
    assert heading in text, f"README has no section {heading!r}"
    section = text.split(heading, 1)[1]
    match = re.search(rf"```{lang}\n(.*?)```", section, re.S)
    assert match, f"README has no {lang} block under {heading!r}"
    return match.group(1)


def _run_bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KINDRED_STORE"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(["bash", "-c", "set -euo pipefail\n" + script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=1800, check=False)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    cwd = tmp_path_factory.mktemp("readme")
    res = _run_bash(_block("### Quick start on a synthetic bank", "bash"), cwd)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return cwd, res.stdout


@pytest.mark.slow
def test_cli_quick_start_on_the_synthetic_bank(quickstart: tuple[Path, str]) -> None:
    cwd, out = quickstart
    assert "Customers consuming term_deposit:" in out
    assert "Top potential customers for term_deposit:" in out
    assert "Anomalies detected" in out
    audience = json.loads((cwd / "audience.json").read_text())
    eligible = audience["summary"]["eligible_prospects"]
    assert len(audience["prospects"]) == -(-eligible * 5 // 100)
    assert "consumers" not in audience
    risk_eval = json.loads(out[out.index('{\n  "label": "is_anomaly"'):].split("\n}\n")[0]
                           + "\n}")
    assert {r["detector"] for r in risk_eval["rows"]} == {"default", "iforest"}
    assert risk_eval["column"] == "vec_tabular_raw"  # risk picks the magnitude column
    assert all(0 < r["roc_auc"] <= 1 for r in risk_eval["rows"])
    assert (cwd / "report" / "report.html").is_file()
    with vectorstore.connect(str(cwd / "kindred-data")) as s:
        info = s.table_info("customers")
        assert {"vec_tabular", "vec_behavior", "vec_text"} <= set(info.vectors)
        assert s.count("customers") == 1000
        assert "risk_score" in info.schema.names
        assert "rec_products" in info.schema.names


@pytest.mark.slow
def test_application_example(quickstart: tuple[Path, str],
                             monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    from wsgiref.util import setup_testing_defaults

    cwd, _ = quickstart
    script = cwd / "app_example.py"
    script.write_text(_block("## Embedding Kindred in an application", "python"))
    monkeypatch.chdir(cwd)
    ns = runpy.run_path(str(script), run_name="app_example")
    assert "customers flagged; top:" in capsys.readouterr().out
    assert (cwd / "term_deposit_audience.parquet").is_file()
    environ: dict[str, object] = {"PATH_INFO": "/match/term_deposit", "QUERY_STRING": "top=4"}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(ns["app"](environ, lambda s, _h: status.append(s)))
    assert status == ["200 OK"]
    rows = json.loads(body)
    assert len(rows) == 4
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    assert {"customer_id", "score", "age", "region"} <= set(rows[0])
    ns["kindred"].close()


@pytest.mark.slow
@pytest.mark.datasets
def test_cli_on_uci_bank_marketing(datasets_dir: Path, tmp_path: Path) -> None:
    csv = datasets_dir / "bank_marketing" / "bank-full.csv"
    if not csv.is_file():
        pytest.skip(f"{csv} is missing")
    script = _block("### The same on real data: UCI Bank Marketing", "bash")
    assert "../shared/datasets/" in script
    res = _run_bash(script.replace("../shared/datasets", str(datasets_dir)), tmp_path)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    auc = re.search(r"vec_tabular\s+centroid\s+([0-9.]+)", res.stdout)
    assert auc, res.stdout
    assert float(auc.group(1)) > 0.6
    assert "Top potential customers for term_deposit:" in res.stdout
    with vectorstore.connect(str(tmp_path / "bank-marketing")) as s:
        assert s.count("customers") == 45_211
        assert s.count("customers", "has(holdings, 'term_deposit')") == 5_289


@pytest.mark.slow
def test_the_next_day(quickstart: tuple[Path, str]) -> None:
    """The README's second day, loaded on top of the quick start's store (runs last: it
    changes the store the tests above read)."""
    cwd, _ = quickstart
    res = _run_bash(_block("### The next day", "bash"), cwd)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    day = json.loads((cwd / "bank" / "day2" / "bank.json").read_text())
    assert day["n_new_customers"] == 20
    assert re.search(r"<- bank/day2/transactions\.parquet: read [\d,]+, written 0,", res.stdout)
    assert re.search(r"consolidate +customers +done", res.stdout)
    for column in ("vec_tabular", "vec_tabular_raw", "vec_behavior", "vec_text"):
        assert re.search(rf"embed +customers\.{column} +done .*\(stale\)", res.stdout), column
    assert re.search(r"risk +customers +done .*\(stale\)", res.stdout)
    assert re.search(r"recommend +rec_products +done", res.stdout)
    assert "refresh: everything up to date" in res.stdout.rstrip().splitlines()[-1]
    with vectorstore.connect(str(cwd / "kindred-data")) as s:
        assert s.count("customers") == 1000 + day["n_new_customers"]
        day1 = json.loads((cwd / "bank" / "bank.json").read_text())
        assert s.count("events") == sum(d["n_transactions"] + d["n_web_events"]
                                        for d in (day1, day))
        newest = s.to_arrow("customers", filter=f"customer_id = '{day['first_new_customer']}'")
        assert newest.num_rows == 1
        for column in ("vec_tabular", "vec_behavior", "risk_score", "rec_products"):
            assert s.null_count("customers", column) == 0, column  # new customers too
