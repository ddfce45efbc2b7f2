"""The ingest pipeline end to end: adapters, on-error modes, idempotency, schema evolution."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

import vectorstore
from ingest.errors import SchemaEvolutionError, SourceError, ValidationError
from ingest.mapping import Mapping
from ingest.pipeline import ingest, rejects_table

ROOT = Path(__file__).resolve().parents[2]
CUSTOMERS = Mapping.from_options("customers", id_column="client_id",
                                 holdings=["term_deposit=y:yes"], text_columns=["notes"])


def _csv(path: Path, rows: list[str], header: str = "client_id,age,income,y,notes") -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def _sorted(store, table, columns=None):
    t = store.to_arrow(table, columns=columns)
    return t.sort_by(store.table_info(table).key or t.column_names[0]).to_pylist()


@pytest.fixture
def good_csv(tmp_path):
    return _csv(tmp_path / "clients.csv", ["c1,34,52000.5,yes,likes travel",
                                           "c2,51,31000,no,", "c3,28,,yes,\"new, in town\""])


def test_customers_from_csv(store, good_csv):
    s = ingest(store, good_csv, CUSTOMERS)
    assert (s.rows_read, s.written, s.updated, s.skipped, s.quarantined) == (3, 3, 0, 0, 0)
    assert s.created_table
    rows = _sorted(store, "customers")
    assert [r["customer_id"] for r in rows] == ["c1", "c2", "c3"]
    assert [r["holdings"] for r in rows] == [["term_deposit"], [], ["term_deposit"]]
    assert rows[0]["age"] == 34
    assert rows[2]["income"] is None
    assert rows[2]["notes"] == "new, in town"
    info = store.table_info("customers")
    assert info.key == "customer_id"
    assert info.schema.field("income").type == pa.float64()
    assert "y" not in info.schema.names


def test_reingest_is_idempotent(store, good_csv):
    ingest(store, good_csv, CUSTOMERS)
    before = _sorted(store, "customers")
    version = store.version("customers") if store.capabilities.versions else None
    s = ingest(store, good_csv, CUSTOMERS)
    assert (s.written, s.updated, s.unchanged) == (0, 0, 3)  # identical rows are unchanged
    assert _sorted(store, "customers") == before
    if version is not None:
        assert store.version("customers") == version  # and nothing was committed


def test_upsert_updates_and_keeps_columns_the_load_lacks(store, tmp_path, good_csv):
    ingest(store, good_csv, CUSTOMERS)
    store.add_columns("customers", [], vectors=[vectorstore.VectorColumn("vec", 2)])
    store.update("customers", pa.table({"customer_id": ["c1", "c2", "c3"],
                                        "vec": pa.array([[1, 0], [0, 1], [1, 1]],
                                                        pa.list_(pa.float32(), 2))}))
    change = _csv(tmp_path / "change.csv", ["c2,52,32000,yes,moved", "c9,40,1,no,"])
    s = ingest(store, change, CUSTOMERS)
    assert (s.written, s.updated) == (1, 1)
    rows = {r["customer_id"]: r for r in _sorted(store, "customers")}
    assert rows["c2"]["age"] == 52
    assert rows["c2"]["holdings"] == ["term_deposit"]
    assert rows["c2"]["vec"] == [0.0, 1.0]  # embeddings survive a re-load of the attributes
    assert rows["c1"]["vec"] == [1.0, 0.0]
    assert rows["c9"]["vec"] is None


# ---------------------------------------------------------------- on_error
@pytest.fixture
def bad_csv(tmp_path):
    return _csv(tmp_path / "bad.csv", ["c4,40,100,no,ok", "c5,forty,100,no,bad age",
                                       ",30,1,no,no id", "c4,41,1,yes,duplicate id",
                                       "c6,1,2", "c7,22,3.5,yes,fine"])


def test_fail_writes_nothing(store, good_csv, tmp_path):
    bad_csv = _csv(tmp_path / "bad.csv", ["c4,40,100,no,ok", "c5,forty,100,no,bad age"])
    ingest(store, good_csv, CUSTOMERS)
    before = _sorted(store, "customers")
    version = store.version("customers") if store.capabilities.versions else None
    with pytest.raises(ValidationError, match=r"bad\.csv:3 \(row 2\), column 'age': value "
                                              r"'forty'; expected an integer"):
        ingest(store, bad_csv, CUSTOMERS)
    assert _sorted(store, "customers") == before
    if store.capabilities.versions:
        assert store.version("customers") == version
    assert not store.has_table(rejects_table("customers"))


def test_fail_on_malformed_row_names_the_line(store, tmp_path):
    p = _csv(tmp_path / "m.csv", ["c1,1,1,no,x", "c2,2"])
    with pytest.raises(SourceError, match=r"m\.csv:3: malformed CSV row"):
        ingest(store, p, CUSTOMERS)
    assert not store.has_table("customers")


def test_skip_counts_and_drops(store, good_csv, bad_csv):
    ingest(store, good_csv, CUSTOMERS)
    s = ingest(store, bad_csv, CUSTOMERS, on_error="skip")
    assert (s.rows_read, s.written, s.skipped, s.quarantined) == (6, 2, 4, 0)
    ids = sorted(r["customer_id"] for r in _sorted(store, "customers"))
    assert ids == ["c1", "c2", "c3", "c4", "c7"]
    assert {e.line for e in s.errors} == {3, 4, 5, 6}
    assert not store.has_table(rejects_table("customers"))


def test_quarantine_writes_rejects(store, good_csv, bad_csv):
    ingest(store, good_csv, CUSTOMERS)  # age is int64 from now on
    s = ingest(store, bad_csv, CUSTOMERS, on_error="quarantine")
    assert (s.rows_read, s.written, s.skipped, s.quarantined) == (6, 2, 0, 4)
    rej = store.to_arrow(rejects_table("customers")).sort_by("line").to_pylist()
    assert [r["line"] for r in rej] == [3, 4, 5, 6]
    assert rej[0]["column"] == "age"
    assert rej[0]["value"] == "forty"
    assert "integer" in rej[0]["reason"]
    assert json.loads(rej[0]["row_json"])["notes"] == "bad age"
    assert rej[1]["column"] == "client_id"
    assert "non-empty id" in rej[1]["reason"]
    assert "not already used" in rej[2]["reason"]
    assert rej[3]["column"] is None
    assert "5 fields" in rej[3]["reason"]
    assert rej[3]["value"] == "c6,1,2"
    assert all(r["source"].endswith("bad.csv") for r in rej)
    # the good c4 (first occurrence) is stored, its duplicate is not
    assert {r["customer_id"]: r["age"] for r in _sorted(store, "customers")}["c4"] == 40


# ---------------------------------------------------------------- events
def _events(path: Path, n: int, start: int = 0) -> Path:
    rows = [f"c{i % 7},2024-01-{1 + i % 28:02d} 10:{i % 60:02d}:00,transaction,"
            f"{'groceries' if i % 2 else 'travel'},{i * 1.25},card" for i in range(start, n)]
    return _csv(path, rows, header="customer_id,ts,kind,category,amount,channel")


def test_events_are_deduplicated_by_content_hash(store, tmp_path):
    p = _events(tmp_path / "ev.csv", 300)
    m = Mapping.from_options("events")
    s = ingest(store, p, m, batch_rows=64)
    assert (s.written, s.unchanged) == (300, 0)
    info = store.table_info("events")
    assert info.key == "event_id"
    assert info.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert info.schema.field("amount").type == pa.float64()
    s = ingest(store, p, m, batch_rows=64)
    assert (s.written, s.unchanged) == (0, 300)
    more = _events(tmp_path / "ev2.csv", 350, start=250)  # 50 old, 50 new
    s = ingest(store, more, m)
    assert (s.written, s.unchanged) == (50, 50)
    assert store.count("events") == 350


def test_events_with_id_and_timestamp_format(store, tmp_path):
    p = _csv(tmp_path / "e.csv", ["e1,c1,02/01/2024 10:30,9.5", "e2,c1,31/02/2024 10:00,1",
                                  "e1,c1,02/01/2024 10:30,9.5"],
             header="txn,client,when,amount")
    m = Mapping.from_options("events", id_column="txn", rename=["client=customer_id", "when=ts"],
                             timestamp_formats=["when=%d/%m/%Y %H:%M"])
    s = ingest(store, p, m, on_error="skip")
    assert (s.written, s.skipped, s.unchanged) == (1, 1, 1)
    assert "format '%d/%m/%Y %H:%M'" in str(s.errors[0])
    row = store.to_arrow("events").to_pylist()[0]
    assert row["event_id"] == "e1"
    assert row["ts"].isoformat() == "2024-01-02T10:30:00+00:00"


# ---------------------------------------------------------------- schema evolution
def test_new_column_is_added(store, good_csv, tmp_path):
    ingest(store, good_csv, CUSTOMERS)
    p = _csv(tmp_path / "more.csv", ["c8,30,10,no,x,north"],
             header="client_id,age,income,y,notes,region")
    s = ingest(store, p, CUSTOMERS)
    assert s.new_columns == ["region"]
    rows = {r["customer_id"]: r for r in _sorted(store, "customers")}
    assert rows["c8"]["region"] == "north"
    assert rows["c1"]["region"] is None


def test_lossy_type_change_is_refused(store, good_csv, tmp_path):
    ingest(store, good_csv, CUSTOMERS)
    before = _sorted(store, "customers")
    p = tmp_path / "float_age.parquet"
    pq.write_table(pa.table({"client_id": ["c1"], "age": [34.5], "y": ["no"], "notes": ["n"]}), p)
    with pytest.raises(SchemaEvolutionError, match=r"'age' is int64.*could lose data"):
        ingest(store, p, CUSTOMERS)
    assert _sorted(store, "customers") == before


# ---------------------------------------------------------------- every adapter
def _frame():
    return pa.table({"client_id": ["a", "b", "c"], "age": pa.array([30, 40, 50], pa.int32()),
                     "y": ["yes", "no", "no"], "notes": ["x", None, "z"],
                     "emb": pa.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])})


def _write_sqlite(tmp_path):
    db = tmp_path / "crm.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE clients (client_id TEXT, age INTEGER, y TEXT, notes TEXT)")
    con.executemany("INSERT INTO clients VALUES (?,?,?,?)",
                    [("a", 30, "yes", "x"), ("b", 40, "no", None), ("c", 50, "no", "z")])
    con.commit()
    con.close()
    return f"sqlite:///{db}"


@pytest.mark.parametrize("kind", ["parquet", "jsonl", "feather", "sqlite", "pandas", "polars",
                                  "arrow"])
def test_every_adapter(store, tmp_path, kind):
    t = _frame()
    vec = Mapping.from_options("customers", id_column="client_id", types=["emb=vector[2]"],
                               holdings=["term_deposit=y:yes"], text_columns=["notes"])
    source: object
    if kind == "parquet":
        source = tmp_path / "c.parquet"
        pq.write_table(t, source)
    elif kind == "jsonl":
        source = tmp_path / "c.jsonl"
        source.write_text("\n".join(json.dumps(r) for r in t.to_pylist()) + "\n")
    elif kind == "feather":
        source = tmp_path / "c.feather"
        feather.write_feather(t, source)
    elif kind == "sqlite":
        source = _write_sqlite(tmp_path)
        vec = Mapping.from_options("customers", id_column="client_id",
                                   holdings=["term_deposit=y:yes"],
                                   source={"table": "clients"})
    elif kind == "pandas":
        source = t.drop_columns(["emb"]).to_pandas()
        vec = CUSTOMERS.model_copy(update={"text_columns": []})
    elif kind == "polars":
        import polars as pl

        source = pl.from_arrow(t)
    else:
        source = t
    s = ingest(store, source, vec)
    assert (s.written, s.skipped) == (3, 0)
    rows = _sorted(store, "customers")
    assert [r["customer_id"] for r in rows] == ["a", "b", "c"]
    assert [r["age"] for r in rows] == [30, 40, 50]
    assert [r["holdings"] for r in rows] == [["term_deposit"], [], []]
    if "emb" in store.table_info("customers").schema.names:
        assert store.table_info("customers").vectors["emb"].dim == 2
        np.testing.assert_allclose(rows[1]["emb"], [0.3, 0.4], rtol=1e-6)


def test_vector_errors_are_rows(store):
    t = pa.table({"client_id": ["a", "b", "c"],
                  "emb": pa.array([[0.1, 0.2], [0.3], [float("nan"), 1.0]])})
    m = Mapping.from_options("customers", id_column="client_id", types=["emb=vector[2]"])
    with pytest.raises(ValidationError, match=r"row 2\), column 'emb'.*vector of 2 finite"):
        ingest(store, t, m)
    s = ingest(store, t, m, on_error="skip")
    assert (s.written, s.skipped) == (1, 2)


def test_mapping_from_toml_with_relative_source(store, tmp_path, good_csv):
    toml = tmp_path / "m.toml"
    toml.write_text('table = "customers"\nid_column = "client_id"\n[source]\npath = "clients.csv"\n'
                    '[holdings.flags]\nterm_deposit = "y:yes"\n')
    s = ingest(store, None, toml)
    assert s.written == 3


# ---------------------------------------------------------------- real data
@pytest.mark.datasets
def test_bank_marketing_mapping(datasets_dir, tmp_path):
    path = datasets_dir / "bank_marketing" / "bank-full.csv"
    if not path.exists():
        pytest.skip(f"{path} not found")
    m = Mapping.load(ROOT / "examples" / "bank_marketing.toml")
    store = vectorstore.connect(str(tmp_path / "db"))
    s = ingest(store, path, m)
    assert (s.rows_read, s.written, s.skipped) == (45_211, 45_211, 0)
    assert store.count("customers") == 45_211
    assert store.count("customers", "has(holdings, 'term_deposit')") == 5_289
    housing = store.count("customers", "has(holdings, 'housing_loan')")
    loan = store.count("customers", "has(holdings, 'personal_loan')")
    assert 0 < loan < housing < 45_211
    again = ingest(store, path, m)
    # stable generated ids: the same rows again are all unchanged
    assert (again.written, again.updated, again.unchanged) == (0, 0, 45_211)


# ---------------------------------------------------------------- fast path, exact errors
def _big_csv(path: Path, n: int, extra: dict[int, str] | None = None) -> Path:
    """client_id,age,income,y,notes rows; ``extra`` replaces data row i (0-based)."""
    extra = extra or {}
    rows = [extra.get(i, f"k{i},{20 + i % 60},{i * 1.5},{'yes' if i % 3 else 'no'},n{i}")
            for i in range(n)]
    return _csv(path, rows)


def _small_blocks(path: Path):
    from ingest.sources import CsvSource

    src = CsvSource(path)
    src.options.block_size = 1 << 13
    return src


def test_bad_value_in_a_typed_block_names_its_line(store, tmp_path):
    p = _big_csv(tmp_path / "typed.csv", 4000, {3500: "k3500,4x,1,no,late typo"})
    with pytest.raises(ValidationError, match=r"typed\.csv:3502 \(row 3501\), column 'age': "
                                              r"value '4x'; expected an integer"):
        ingest(store, _small_blocks(p), CUSTOMERS, batch_rows=256)
    assert not store.has_table("customers")
    s = ingest(store, _small_blocks(p), CUSTOMERS, on_error="quarantine", batch_rows=256)
    assert (s.written, s.quarantined) == (3999, 1)
    rej = store.to_arrow(rejects_table("customers")).to_pylist()
    assert [(r["line"], r["column"], r["value"]) for r in rej] == [(3502, "age", "4x")]
    ages = {r["customer_id"]: r["age"] for r in _sorted(store, "customers",
                                                        ["customer_id", "age"])}
    assert ages["k3999"] == 20 + 3999 % 60
    assert "k3500" not in ages


def test_duplicate_id_across_batches(store, tmp_path):
    p = _big_csv(tmp_path / "dup.csv", 3000, {2800: "k7,33,1,no,again"})
    with pytest.raises(ValidationError, match=r"dup\.csv:2802 \(row 2801\), column "
                                              r"'client_id': value 'k7'; expected an id not "
                                              r"already used earlier in this load \(row 8"):
        ingest(store, _small_blocks(p), CUSTOMERS, batch_rows=256)
    assert not store.has_table("customers")
    s = ingest(store, _small_blocks(p), CUSTOMERS, on_error="skip", batch_rows=256)
    assert (s.written, s.skipped) == (2999, 1)
    row = [r for r in _sorted(store, "customers", ["customer_id", "age"])
           if r["customer_id"] == "k7"]
    assert row == [{"customer_id": "k7", "age": 27}]  # the first occurrence wins


# ---------------------------------------------------------------- a failed load undoes itself
def test_failed_first_load_leaves_no_table(store, tmp_path):
    p = _big_csv(tmp_path / "late.csv", 3000, {2990: "k2990,old,1,no,x"})
    with pytest.raises(ValidationError, match=r"late\.csv:2992"):
        ingest(store, _small_blocks(p), CUSTOMERS, batch_rows=256)
    assert "customers" not in store.list_tables()
    assert not store.has_table("customers")


def test_failed_load_leaves_the_schema_as_it_was(store, good_csv, tmp_path):
    ingest(store, good_csv, CUSTOMERS)
    before_schema = store.table_info("customers").schema
    before = _sorted(store, "customers")
    p = _csv(tmp_path / "more.csv", ["c8,30,10,no,x,north,1.5", "c9,31,11,no,y,south,abc"],
             header="client_id,age,income,y,notes,region,score")
    with pytest.raises(ValidationError, match=r"more\.csv:3 \(row 2\), column 'score'"):
        ingest(store, p, Mapping.from_options(
            "customers", id_column="client_id", holdings=["term_deposit=y:yes"],
            text_columns=["notes"], types=["score=float64"]))
    assert store.table_info("customers").schema == before_schema
    assert _sorted(store, "customers") == before
    # and the next load adds the columns as usual
    p.write_text("client_id,age,income,y,notes,region,score\nc8,30,10,no,x,north,1.5\n")
    s = ingest(store, p, CUSTOMERS)
    assert s.new_columns == ["region", "score"]


# ---------------------------------------------------------------- holdings from events
def test_holdings_from_events_reach_customers(store, good_csv, tmp_path):
    from ingest.consolidate import consolidate

    ingest(store, good_csv, CUSTOMERS)
    ev = tmp_path / "ev.csv"
    ev.write_text("event_id,customer_id,ts,kind,product_id,amount,category,channel\n"
                  "e1,c2,2024-03-01T10:00:00,subscription,insurance,12,cover,app\n"
                  "e2,c2,2024-03-02T10:00:00,page_view,mortgage,0,home,web\n"
                  "e3,c3,2024-03-03T10:00:00,subscription,savings,5,saving,app\n")
    plain = Mapping.from_options("events")
    ingest(store, ev, plain)
    consolidate(store)
    held = {r["customer_id"]: r["holdings"] for r in _sorted(store, "customers",
                                                            ["customer_id", "holdings"])}
    assert "insurance" not in held["c2"]  # 'subscription' is not a holding kind by default
    declared = Mapping.from_options("events", holdings_from_events=["subscription"])
    s = ingest(store, ev, declared)
    assert s.written == 0  # the same events: nothing new, but the kinds are recorded
    assert store.table_info("events").metadata["holding_kinds"] == ["subscription"]
    consolidate(store, full=True)
    held = {r["customer_id"]: r["holdings"] for r in _sorted(store, "customers",
                                                            ["customer_id", "holdings"])}
    assert held["c2"] == ["insurance"]
    assert held["c3"] == ["savings", "term_deposit"]
    assert held["c1"] == ["term_deposit"]
