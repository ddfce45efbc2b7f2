"""The CLI on files as they come: a second generated day, names with spaces and dots, a
purchase log to consolidate."""

from __future__ import annotations

from pathlib import Path

import vectorstore
from tests.services._cli import run, run_json


def test_generate_a_second_day(tmp_path: Path) -> None:
    bank = tmp_path / "bank"
    run("generate", "--customers", "300", "--events-per-customer", "5", "--out", str(bank))
    out = run_json("generate", "--out", str(bank), "--day", "2")
    assert out["details"]["day"] == 2
    assert out["details"]["new_customers"] == 6
    assert Path(out["files"]["customers"]) == (bank / "day2" / "customers.csv").resolve()
    _, text, _ = run("generate", "--out", str(bank), "--day", "3")
    assert "Generated day 3 of the bank" in text
    code, _, err = run("generate", "--out", str(bank), "--day", "2", "--seed", "9", ok=False)
    assert code == 1
    assert "generated with seed 0, not 9" in err
    code, _, err = run("generate", "--out", str(tmp_path / "none"), "--day", "2", ok=False)
    assert code == 1
    assert "write day 1 first" in err
    assert len(err.strip().splitlines()) == 1


def test_ingest_names_as_files_have_them(tmp_path: Path) -> None:
    csv = tmp_path / "clients.csv"
    csv.write_text("\ufeffClient ID,ZIP Code,Monthly Charges ($),Has Card,Churn Flag\n"
                   + "".join(f"k{i},0{1000 + i},{20 + i % 7}.5,{'Yes' if i % 3 else 'No'},"
                             f"{'Yes' if i % 4 == 0 else 'No'}\n" for i in range(40)),
                   encoding="utf-8")
    store = tmp_path / "s"
    code, _, err = run("ingest", "customers", str(csv), "--id-column", "Client ID",
                       "--strict-names", store=store, ok=False)
    assert code == 1
    assert len(err.strip().splitlines()) == 1
    assert "4 column name(s)" in err
    assert "'Monthly Charges ($)' (normalised: Monthly_Charges)" in err
    _, out, _ = run("ingest", "customers", str(csv), "--id-column", "Client ID",
                    "--type", "ZIP Code=string", "--holding", "card=Has Card:yes",
                    "--holding", "churned=Churn Flag:yes", "--keep-flag-columns", store=store)
    assert "names made safe for 4 column(s): 'ZIP Code' -> ZIP_Code" in out
    _, out, _ = run("stats", store=store)
    assert "ZIP_Code <- 'ZIP Code'" in out
    st = run_json("stats", store=store)
    assert st["tables"][0]["source_names"]["Churn_Flag"] == "Churn Flag"
    with vectorstore.connect(str(store)) as s:
        row = s.to_arrow("customers", filter="customer_id = 'k4'").to_pylist()[0]
    assert row["ZIP_Code"] == "01004"
    assert row["Churn_Flag"] == "Yes"  # a holding and an attribute
    assert row["holdings"] == ["card", "churned"]
    # later commands take the source names too
    r = run_json("embed", "tabular", "--exclude", "Churn Flag", "--exclude", "ZIP Code",
                 store=store)
    assert r["details"]["rows_embedded"] == 40
    with vectorstore.connect(str(store)) as s:
        params = s.table_info("customers").metadata["embedders"]["vec_tabular"]["params"]
    assert params["exclude"] == ["Churn_Flag", "ZIP_Code"]
    r = run_json("match", "card", "--where", '"Monthly Charges ($)" >= 22', "--min-consumers",
                 "5", "--prospects", store=store)
    assert r["summary"]["filter"] == "Monthly_Charges >= 22"


def test_consolidate_a_purchase_log(tmp_path: Path) -> None:
    log = tmp_path / "purchases.csv"
    rows = [f"{1000 + i % 9},{1 + i % 28:02d}-03-2015,{['whole milk', 'soda', 'rolls/buns'][i % 3]}"
            for i in range(90)]
    rows += rows[:12]  # bought again the same day
    log.write_text("Member_number,Date,itemDescription\n" + "\n".join(rows) + "\n")
    store = tmp_path / "s"
    args = ("ingest", "events", str(log), "--rename", "Member_number=customer_id",
            "--rename", "Date=ts", "--timestamp-format", "Date=%d-%m-%Y",
            "--rename", "itemDescription=item")
    r = run_json(*args, store=store)
    assert (r["written"], r["unchanged"]) == (102, 0)
    assert run_json(*args, store=store)["written"] == 0
    assert run_json(*args, "--dedupe", store=store)["unchanged"] == 102
    _, out, _ = run("consolidate", "--category", "itemDescription", store=store)
    assert "9 inserted" in out
    assert "created the customers table" in out
    assert "skipped: monetary and spend features (no 'amount' column)" in out
    with vectorstore.connect(str(store)) as s:
        c = s.to_arrow("customers").to_pandas().set_index("customer_id")
    assert int(c["n_events"].sum()) == 102
    assert int(c["count_whole_milk"].sum() + c["count_soda"].sum()
               + c["count_rolls_buns"].sum()) == 102
    code, _, err = run("consolidate", "--amount", "price", store=store, ok=False)
    assert code == 1
    assert "amount column(s) 'price' not in table 'events'" in err
