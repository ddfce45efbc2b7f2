"""The whole pipeline on the local runner and on Ray, on a directory and on S3 (moto): the
same answers.

ingest (customers in three loads, so the table has several fragments and Ray runs several
tasks; event logs validated batch by batch on the runner, replayed, and a log with bad rows
quarantined, de-duplicated against the stored events by the event id's index), consolidate,
embed tabular / behaviour / text, index, risk (and its top, merged from per-partition lists),
recommend, a propensity fit (scored per partition, its ladder from per-partition counts), then
a day's changes (changed incomes, new customers) and ``refresh`` (stale rows only). Everything but
the text vectors and the change stamps is compared exactly; text vectors within 1e-5 (the
encoder pads each batch to its longest note, and the batches differ between the runners);
change stamps (times of writes) as ranks: the same rows share a stamp, in the same order.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import synthetic_bank as synthetic
from ingest.freshness import ROW_STAMP, STAMP_PREFIX
from services.facade import Kindred

CUSTOMERS = 300
NEW = 10
"""New customers in the day's file (they have no events)."""
TEXT_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("scale-bank")
    b = synthetic.generate(out, CUSTOMERS, 8, 7)
    customers = pacsv.read_csv(b.customers)
    parts = []
    for i, (lo, hi) in enumerate(((0, 100), (100, 200), (200, CUSTOMERS))):
        p = out / f"customers_{i}.csv"
        pacsv.write_csv(customers.slice(lo, hi - lo), p)
        parts.append(p)
    day = customers.slice(0, 40)
    income = day.column("income").to_numpy() + 1_000
    day = day.set_column(day.schema.get_field_index("income"), "income", pa.array(income))
    new = customers.slice(40, NEW)
    new = new.set_column(0, "customer_id",
                         pa.array([f"NEW-{i}" for i in range(new.num_rows)], pa.string()))
    pacsv.write_csv(pa.concat_tables([day, new]), out / "customers_day.csv")
    # an event log partly replayed: 40 stored events, 20 new ones, 3 with a bad amount
    tx = pq.read_table(b.transactions).slice(0, 63)
    ids = tx.column("event_id").to_pylist()
    ids[40:] = [f"LOG-{i}" for i in range(23)]
    amounts = [str(a) for a in tx.column("amount").to_pylist()]
    amounts[60:] = ["n/a", "-", "12,5"]
    ts = pc.strftime(tx.column("ts").cast(pa.timestamp("s", tz="UTC")), "%Y-%m-%dT%H:%M:%SZ")
    tx = tx.set_column(0, "event_id", pa.array(ids)).set_column(
        tx.schema.get_field_index("ts"), "ts", ts).set_column(
        tx.schema.get_field_index("amount"), "amount", pa.array(amounts))
    pacsv.write_csv(tx, out / "events_log.csv")
    return {"parts": parts, "day": out / "customers_day.csv", "log": out / "events_log.csv",
            "transactions": Path(b.transactions),
            "web_events": Path(b.web_events), "products": Path(b.products)}


def _pipeline(k: Kindred, bank: dict[str, Path]) -> dict[str, Any]:
    loads = []
    for p in bank["parts"]:
        loads.append(k.ingest(str(p), table="customers", id_column="customer_id",
                              holdings_column="products", holdings_separator=";",
                              text_columns=["note"]))
    loads.append(k.ingest(str(bank["transactions"]), table="events"))
    loads.append(k.ingest(str(bank["web_events"]), table="events", rename=["page=category"],
                          timestamp_formats=["ts=%Y-%m-%dT%H:%M:%SZ"],
                          holdings_from_events=["purchase"]))
    again = k.ingest(str(bank["transactions"]), table="events")  # a replay writes nothing
    loads.append(k.ingest(str(bank["log"]), table="events", on_error="quarantine"))
    loads.append(k.ingest(str(bank["products"]), table="products", id_column="product_id"))
    events = k.store.to_arrow("events").sort_by("event_id")
    rejects = k.store.to_arrow("events_rejects").drop_columns(["rejected_at"]).sort_by("row")
    event_index = k.store.key_index("events", "event_id")  # type: ignore[attr-defined]
    k.consolidate()
    k.embed("tabular", exclude=["note"])
    k.embed("behavior")
    k.embed("text", text_column="note")
    k.index(columns=["vec_tabular"], min_rows=1)
    k.score_risk()
    k.recommend(top=3)
    held = pc.value_counts(pc.list_flatten(k.store.to_arrow(
        "customers", columns=["holdings"]).column("holdings"))).to_pylist()
    product = max(held, key=lambda v: (v["counts"], v["values"]))["values"]
    k.fit([product])  # propensity: fitted here, every partition scored on the runner
    k.ingest(str(bank["day"]), table="customers", id_column="customer_id",
             holdings_column="products", holdings_separator=";", text_columns=["note"])
    refreshed = k.refresh()
    ladder = k.store.table_info("customers").metadata["propensity"][product]["thresholds"]
    steps = [(s.step, s.target, s.action, s.rows) for s in refreshed.steps]
    store = k.store
    fragments = len(store.partitions("customers"))
    table = store.to_arrow("customers").sort_by("customer_id")
    query = np.asarray(table["vec_tabular"][0].as_py(), dtype=np.float32)
    hits = store.search("customers", query, k=10, vector_column="vec_tabular")
    return {"table": table, "fragments": fragments, "refresh": steps, "events": events,
            "rejects": rejects, "event_index": event_index, "ladder": ladder,
            "loads": [{f: v for f, v in r.model_dump().items() if f != "source"}
                      for r in loads],
            "replayed": {"written": again.written, "unchanged": again.unchanged},
            "top": k.risk_top(10).to_pylist(), "hits": hits["customer_id"].to_pylist()}


def _assert_same(local: dict[str, Any], ray: dict[str, Any]) -> None:
    a, b = local["table"], ray["table"]
    assert a.schema.names == b.schema.names
    assert a.num_rows == b.num_rows == CUSTOMERS + NEW
    for name in a.schema.names:
        if name == ROW_STAMP or name.startswith(STAMP_PREFIX):
            assert _ranks(a[name]) == _ranks(b[name]), name
        elif name == "vec_text":
            x = np.asarray(a[name].to_pylist(), dtype=np.float64)
            y = np.asarray(b[name].to_pylist(), dtype=np.float64)
            assert np.isfinite(x).all()
            assert np.abs(x - y).max() <= TEXT_TOLERANCE, name
        else:
            assert a[name].equals(b[name]), name
    assert local["refresh"] == ray["refresh"]
    assert local["top"] == ray["top"]
    assert local["hits"] == ray["hits"]
    assert local["replayed"] == ray["replayed"]
    assert local["loads"] == ray["loads"]
    assert local["ladder"] == ray["ladder"]
    assert local["events"].equals(ray["events"])
    assert local["rejects"].equals(ray["rejects"])


def _ranks(stamps: Any) -> list[int | None]:
    """Each row's dense rank among the column's distinct stamps (None stays None)."""
    values = stamps.to_pylist()
    order = {v: i for i, v in enumerate(sorted({v for v in values if v is not None}))}
    return [None if v is None else order[v] for v in values]


def _run(where: str, runner: str, bank: dict[str, Path], s3: Any) -> dict[str, Any]:
    uri = s3.store_uri(f"e2e-{uuid.uuid4().hex}") if s3 is not None else where
    with Kindred(uri, runner=runner, create=True) as k:
        assert k.runner.name == runner
        assert k.runner.distributed == (runner == "ray")
        return _pipeline(k, bank)


@pytest.mark.parametrize("location", ["dir", "s3"])
def test_pipeline_gives_the_same_answers_on_local_and_ray(location, bank, ray_cluster,
                                                          request, tmp_path):
    s3 = request.getfixturevalue("s3_server") if location == "s3" else None
    local = _run(str(tmp_path / "local"), "local", bank, s3)
    ray = _run(str(tmp_path / "ray"), "ray", bank, s3)
    assert local["fragments"] >= 3  # several Ray tasks per step
    table = local["table"]
    table = table.filter(pc.invert(pc.starts_with(table["customer_id"], "NEW-")))
    propensity = [c for c in table.column_names if c.startswith("propensity_")]
    assert len(propensity) == 1
    for col in ("vec_tabular", "vec_behavior", "vec_text", "risk_score", "rec_products",
                *propensity):
        assert table[col].null_count == 0, col
    assert len(local["ladder"]) == 7
    assert local["replayed"]["written"] == 0
    log = local["loads"][-2]
    assert (log["written"], log["unchanged"], log["quarantined"]) == (20, 40, 3)
    assert local["rejects"].num_rows == 3
    assert local["event_index"] is not None
    assert ray["event_index"] is not None
    done = {(step, target): rows for step, target, action, rows in local["refresh"]
            if action == "done"}
    # the day's 50 changed or new customers, not the 300
    assert 0 < done[("embed", "customers.vec_tabular")] < CUSTOMERS
    assert 0 < done[("risk", "customers")] < CUSTOMERS
    _assert_same(local, ray)


def _cli(store: Path, *args: str, env: dict[str, str] | None = None) -> str:
    import os
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", "from services.cli import main; main()",
                        "--store", str(store), *args], capture_output=True, text=True,
                       timeout=600, env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_cli_runner_option_and_environment_give_the_same_vectors(bank, tmp_path):
    import vectorstore as vs

    got = {}
    for name, extra, env in (("local", [], None), ("option", ["--runner", "ray"], None),
                             ("env", [], {"KINDRED_RUNNER": "ray"})):
        store = tmp_path / name
        for p in bank["parts"][:2]:
            _cli(store, "ingest", "customers", str(p), "--id-column", "customer_id")
        _cli(store, *extra, "embed", "tabular", "--exclude", "note", env=env)
        with vs.connect(str(store)) as s:
            got[name] = s.to_arrow("customers").sort_by("customer_id")["vec_tabular"]
    assert got["local"].null_count == 0
    assert got["local"].equals(got["option"])
    assert got["local"].equals(got["env"])


def test_cli_refuses_an_unknown_runner(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", "from services.cli import main; main()",
                        "--runner", "spark", "--store", str(tmp_path / "s"), "stats"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "'spark' is not one of 'local', 'ray'" in r.stderr
