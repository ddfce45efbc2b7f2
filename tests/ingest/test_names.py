"""Column names as files have them: made safe by a documented rule, refused together with
strict names, kept in metadata, and accepted wherever a column is named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import vectorstore
from ingest.errors import MappingError
from ingest.mapping import Mapping
from ingest.names import (
    SOURCE_NAMES_KEY,
    resolve_column,
    resolve_filter_names,
    safe_name,
)
from ingest.pipeline import ingest


@pytest.mark.parametrize(("raw", "safe"), [
    ("customerID", "customerID"),            # already plain: kept, case included
    ("_private", "_private"),
    ("ZIP Code", "ZIP_Code"),
    ("CheckingAccountStatus.lt.0", "CheckingAccountStatus_lt_0"),
    ("credit-score", "credit_score"),
    ("Monthly Charges ($)", "Monthly_Charges"),
    ("(total)", "total"),
    ("% change", "change"),
    ("2019 sales", "c_2019_sales"),
    ("\ufeffid", "id"),
    ("  age ", "age"),
    ("é-mail", "e_mail"),
    ("Größe", "Grosse"),
    ("a__b c", "a__b_c"),
    ("名前", "column_4"),
    ("x" * 70 + " y", "x" * 63),
])
def test_the_rule(raw, safe):
    assert safe_name(raw, 4) == safe
    assert vectorstore.check_name(safe)


def _messy_csv(path: Path) -> Path:
    path.write_text("\ufeffCustomer ID,ZIP Code,% change,2019 sales,e-mail,Has Card,Notes (free)\n"
                    "a1,01234,1.5,100,x@y,Yes,likes travel\n"
                    "a2,54321,-2,200,z@y,No,\n", encoding="utf-8")
    return path


def test_messy_names_are_made_safe_and_kept_in_metadata(store, tmp_path):
    m = Mapping.from_options("customers", id_column="Customer ID",
                             holdings=["card=Has Card:yes"], keep_flag_columns=True,
                             types=["ZIP Code=string"], drop=["e-mail"],
                             text_columns=["Notes (free)"])
    s = ingest(store, _messy_csv(tmp_path / "messy.csv"), m)
    assert s.written == 2
    assert s.renamed_columns == {"ZIP Code": "ZIP_Code", "% change": "change",
                                 "2019 sales": "c_2019_sales", "Has Card": "Has_Card",
                                 "Notes (free)": "Notes_free"}
    info = store.table_info("customers")
    assert info.schema.names == ["customer_id", "ZIP_Code", "change", "c_2019_sales",
                                 "Has_Card", "Notes_free", "holdings", "row_stamp"]
    assert info.schema.field("ZIP_Code").type == pa.string()  # --type by the source name
    assert info.schema.field("Notes_free").type == pa.string()
    rows = store.to_arrow("customers").sort_by("customer_id").to_pylist()
    assert rows[0]["ZIP_Code"] == "01234"  # leading zero kept: typed as text
    assert [r["holdings"] for r in rows] == [["card"], []]
    assert [r["Has_Card"] for r in rows] == ["Yes", "No"]  # the flag column kept too
    assert info.metadata[SOURCE_NAMES_KEY]["ZIP_Code"] == "ZIP Code"
    # a second load by the safe names, with one more messy column: metadata merged
    more = tmp_path / "more.csv"
    more.write_text("Customer ID,ZIP_Code,Phone No.\na3,999,555\n")
    s = ingest(store, more, Mapping.from_options("customers", id_column="Customer_ID",
                                                 types=["ZIP_Code=string"]))
    assert s.new_columns == ["Phone_No"]
    names = store.table_info("customers").metadata[SOURCE_NAMES_KEY]
    assert names["Phone_No"] == "Phone No."
    assert names["ZIP_Code"] == "ZIP Code"


def test_strict_names_lists_every_bad_name_in_one_error(store, tmp_path):
    m = Mapping.from_options("customers", id_column="Customer ID", strict_names=True)
    with pytest.raises(MappingError) as err:
        ingest(store, _messy_csv(tmp_path / "messy.csv"), m)
    msg = str(err.value)
    assert "6 column name(s) are not plain identifiers" in msg
    for name in ("'ZIP Code' (normalised: ZIP_Code)", "'% change'", "'2019 sales'", "'e-mail'",
                 "'Has Card'", "'Notes (free)'"):
        assert name in msg
    assert "Customer ID" not in msg  # the id column is not stored under its name
    assert not store.has_table("customers")
    ok = Mapping.from_options("customers", id_column="Customer ID", strict_names=True,
                              rename=["ZIP Code=zip", "% change=pct", "2019 sales=sales_2019",
                                      "Notes (free)=notes"], drop=["e-mail", "Has Card"])
    assert ingest(store, tmp_path / "messy.csv", ok).written == 2


def test_collisions_are_refused_together(store, tmp_path):
    p = tmp_path / "clash.csv"
    p.write_text("id,a b,a_b,a.b,x-y,x y,ok\n1,1,2,3,4,5,6\n")
    with pytest.raises(MappingError, match=r"'a b' and 'a_b' and 'a\.b' all become 'a_b'; "
                                           r"'x-y' and 'x y' both become 'x_y'"):
        ingest(store, p, Mapping.from_options("customers", id_column="id"))
    assert not store.has_table("customers")
    fixed = Mapping.from_options("customers", id_column="id", rename=["a.b=a_dot_b"],
                                 drop=["a b", "x y"])
    assert ingest(store, p, fixed).written == 1
    assert store.table_info("customers").schema.names == ["customer_id", "a_b", "a_dot_b",
                                                          "x_y", "ok", "row_stamp"]


def test_a_header_that_normalises_to_the_key_is_the_id(store, tmp_path):
    p = tmp_path / "c.csv"
    p.write_text("customer id,age\nk1,30\nk2,40\n")
    from services.facade import Kindred

    r = Kindred(store, create=True).ingest(str(p), table="customers")
    assert r.written == 2
    assert sorted(store.to_arrow("customers").column("customer_id").to_pylist()) == ["k1", "k2"]


def test_names_in_jsonl_and_parquet(store, tmp_path):
    j = tmp_path / "e.jsonl"
    j.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(r) for r in [
        {"Customer Id": "c1", "Event Time": "2024-01-01T10:00:00", "Amount (EUR)": 5.5},
        {"Customer Id": "c2", "Event Time": "2024-01-02T10:00:00", "Amount (EUR)": 7},
    ]).encode() + b"\n")
    m = Mapping.from_options("events", rename=["Customer Id=customer_id", "Event Time=ts"])
    s = ingest(store, j, m)
    assert s.renamed_columns == {"Amount (EUR)": "Amount_EUR"}
    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": ["a"], "Net Worth.2024": [1.5]}), p)
    ingest(store, p, Mapping.from_options("customers", id_column="id"))
    assert "Net_Worth_2024" in store.table_info("customers").schema.names


def test_original_names_resolve_to_table_columns():
    meta = {SOURCE_NAMES_KEY: {"ZIP_Code": "ZIP Code", "pct": "% change"}}
    cols = ["customer_id", "ZIP_Code", "pct", "Phone_No"]
    assert resolve_column(cols, meta, "ZIP Code") == "ZIP_Code"
    assert resolve_column(cols, meta, "% change") == "pct"
    assert resolve_column(cols, meta, "Phone No.") == "Phone_No"  # by the rule
    assert resolve_column(cols, meta, "nope") == "nope"
    text = "\"ZIP Code\" = 'a \"b\" ''c' and \"% change\" > 1 and \"nope\" = 2"
    assert resolve_filter_names(text, cols, meta) == \
        "ZIP_Code = 'a \"b\" ''c' and pct > 1 and \"nope\" = 2"


def _dotted_csv(path: Path, n: int = 200) -> tuple[Path, list[str]]:
    """A credit file shaped like the public German credit data: ~50 dotted dummy names."""
    groups = {"CheckingAccountStatus": ["lt.0", "0.to.200", "gt.200", "none"],
              "CreditHistory": ["NoCredit.AllPaid", "ThisBank.AllPaid", "PaidDuly", "Delay",
                                "Critical"],
              "Purpose": ["NewCar", "UsedCar", "Furniture.Equipment", "Radio.Television",
                          "DomesticAppliance", "Repairs", "Education", "Vacation",
                          "Retraining", "Business", "Other"],
              "SavingsAccountBonds": ["lt.100", "100.to.500", "500.to.1000", "gt.1000",
                                      "Unknown"],
              "EmploymentDuration": ["lt.1", "1.to.4", "4.to.7", "gt.7", "Unemployed"],
              "Personal": ["Male.Divorced.Seperated", "Female.NotSingle", "Male.Single",
                           "Male.Married.Widowed", "Female.Single"],
              "OtherDebtorsGuarantors": ["None", "CoApplicant", "Guarantor"],
              "Property": ["RealEstate", "Insurance", "CarOther", "Unknown"],
              "OtherInstallmentPlans": ["Bank", "Stores", "None"],
              "Housing": ["Rent", "Own", "ForFree"],
              "Job": ["UnemployedUnskilled", "UnskilledResident", "SkilledEmployee",
                      "Management.SelfEmp.HighlyQualified"]}
    dotted = [f"{g}.{v}" for g, vs in groups.items() for v in vs]
    names = ["Duration", "Amount", "Age", "Class", *dotted]
    rng = np.random.default_rng(0)
    lines = [",".join(names)]
    for _ in range(n):
        lines.append(",".join([str(rng.integers(4, 72)), str(rng.integers(250, 18000)),
                               str(rng.integers(19, 75)), str(rng.choice(["Good", "Bad"]))]
                              + [str(int(rng.random() < 0.3)) for _ in dotted]))
    path.write_text("\n".join(lines) + "\n")
    return path, dotted


def test_a_file_with_fifty_dotted_names(store, tmp_path):
    path, dotted = _dotted_csv(tmp_path / "german.csv")
    assert len(dotted) >= 50
    s = ingest(store, path, Mapping.from_options("customers", generate_id=True))
    assert s.written == 200
    assert len(s.renamed_columns) == len(dotted)
    info = store.table_info("customers")
    assert "CheckingAccountStatus_lt_0" in info.schema.names
    assert "Job_Management_SelfEmp_HighlyQualified" in info.schema.names
    assert len(info.metadata[SOURCE_NAMES_KEY]) == len(dotted)
    n = store.count("customers", "CheckingAccountStatus_lt_0 = 1")
    col = store.to_arrow("customers", columns=["CheckingAccountStatus_lt_0"]).column(0)
    assert n == sum(v == 1 for v in col.to_pylist())
    again = ingest(store, path, Mapping.from_options("customers", generate_id=True))
    # stable ids, same columns, same values: nothing is rewritten
    assert (again.written, again.updated, again.unchanged) == (0, 0, 200)
    with pytest.raises(MappingError, match=f"{len(dotted)} column name"):
        ingest(store, path, Mapping.from_options("customers", generate_id=True,
                                                 strict_names=True))


@pytest.mark.datasets
def test_public_files_load_with_their_names(datasets_dir, tmp_path):
    telco = datasets_dir / "telco_churn" / "WA_Fn-UseC_-Telco-Customer-Churn.csv"
    credit = datasets_dir / "credit_data" / "credit_data.csv"
    for p in (telco, credit):
        if not p.exists():
            pytest.skip(f"{p} not found")
    store = vectorstore.connect(str(tmp_path / "db"))
    m = Mapping.from_options("customers", id_column="customerID",
                             holdings=["streaming_tv=StreamingTV:yes"], keep_flag_columns=True)
    s = ingest(store, telco, m)
    assert (s.written, s.renamed_columns) == (7043, {})
    names = store.table_info("customers").schema.names
    assert {"StreamingTV", "MonthlyCharges"} <= set(names)
    held = store.count("customers", "has(holdings, 'streaming_tv')")
    assert held == store.count("customers", "StreamingTV = 'Yes'") > 0
    # credit_data has no id and two applicants with identical rows: both are kept
    other = vectorstore.connect(str(tmp_path / "credit"))
    s = ingest(other, credit, Mapping.from_options("customers", generate_id=True))
    assert s.written == 4454
    again = ingest(other, credit, Mapping.from_options("customers", generate_id=True))
    assert (again.written, again.updated, again.unchanged) == (0, 0, 4454)
