"""The one result type of a load: the pipeline, the facade and the CLI's --json share it."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from ingest.pipeline import ingest
from ingest.result import IngestResult, RowError
from services.facade import Kindred
from services.models import IngestResult as ServicesIngestResult


def _bad_csv(tmp_path: Path) -> Path:
    p = tmp_path / "clients.csv"
    p.write_text("client_id,age,y\na,34,yes\nb,notanumber,no\nc,28,yes\nd,1,yes,extra\n")
    return p


def test_pipeline_and_facade_return_the_same_type(tmp_path: Path) -> None:
    assert ServicesIngestResult is IngestResult
    k = Kindred(str(tmp_path / "s"), create=True)
    r = k.ingest(str(_bad_csv(tmp_path)), table="customers", id_column="client_id",
                 types=["age=int64"], on_error="skip")
    assert type(r) is IngestResult
    assert (r.rows_read, r.written, r.skipped, r.created_table) == (4, 2, 2, True)
    assert all(isinstance(e, RowError) for e in r.errors)
    dumped = r.model_dump(mode="json")["errors"]
    assert [set(e) for e in dumped] == [{"source", "row", "line", "column", "value",
                                        "expected"}] * 2
    assert {(e["line"], e["column"]) for e in dumped} == {(5, None), (3, "age")}
    s = ingest(k.store, str(_bad_csv(tmp_path)),
               {"table": "customers", "id_column": "client_id", "types": {"age": "int64"}},
               on_error="skip")
    assert (s.written, s.unchanged, s.skipped) == (0, 2, 2)
    assert str(s).endswith("read 4, written 0, updated 0, unchanged 2, skipped 2, "
                           "quarantined 0")
    assert s.to_dict()["errors"] == [str(e) for e in s.errors]
    with pytest.raises(Exception, match="frozen"):
        s.written = 1  # type: ignore[misc]


def test_old_names_still_work_with_a_warning(tmp_path: Path) -> None:
    import ingest as ingest_pkg

    with pytest.warns(DeprecationWarning, match="IngestSummary is deprecated"):
        assert ingest_pkg.IngestSummary is IngestResult
    e = RowError("f.csv", 1, 2, "age", "x", "an integer")
    with pytest.warns(DeprecationWarning, match="deprecated: use .column"):
        assert e["column"] == "age"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(KeyError):
            e["nope"]
