"""The facade's one vocabulary (``top``, ``column``, ``where``, ``attributes``), the old
keyword names accepted with a DeprecationWarning, ids given as ints, ``Kindred(uri)`` opening
only an existing store, and ``match`` leaving the store as it found it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from services.errors import ServiceError, StoreMissing
from services.facade import Kindred
from tests.services._bank import copy_store


# ---------------------------------------------------------------------- opening a store
def test_a_uri_opens_an_existing_store_and_refuses_one_that_holds_none(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    with pytest.raises(StoreMissing, match=r"does not exist.*create=True"):
        Kindred(str(missing))
    assert not missing.exists()  # nothing was created where the typo points
    data = tmp_path / "bank"
    data.mkdir()
    (data / "customers.csv").write_text("customer_id,age\nc1,30\n")
    with pytest.raises(StoreMissing, match="holds no Kindred store"):
        Kindred(str(data))
    assert sorted(p.name for p in data.iterdir()) == ["customers.csv"]
    with pytest.raises(StoreMissing, match="is not a directory"):
        Kindred(str(data / "customers.csv"))

    new = tmp_path / "new"
    with Kindred(str(new), create=True) as k:
        k.ingest(str(data / "customers.csv"), table="customers")
    with Kindred(str(new)) as k:  # now it holds one: opened without create
        assert k.tables() == ["customers"]
    (tmp_path / "empty").mkdir()  # what `kindred init` leaves: an empty store
    with Kindred(str(tmp_path / "empty")) as k:
        assert k.tables() == []


def test_must_exist_still_works_with_a_deprecation_warning(tmp_path: Path) -> None:
    with pytest.warns(DeprecationWarning, match=r"must_exist=.*create="), \
            pytest.raises(StoreMissing):
        Kindred(str(tmp_path / "nope"), must_exist=True)
    with pytest.warns(DeprecationWarning, match="must_exist"), \
            Kindred(str(tmp_path / "made"), must_exist=False) as k:
        assert k.tables() == []


# ---------------------------------------------------------------------- old keyword names
def test_old_match_keywords_warn_and_give_the_same_answer(kindred: Kindred) -> None:
    new = kindred.match("term_deposit", column="vec_tabular", top=7, where="age >= 30",
                        attributes=["age"])
    with pytest.warns(DeprecationWarning, match="is deprecated") as seen:
        old = kindred.match("term_deposit", vector_column="vec_tabular", top_k=7,
                            filter="age >= 30", columns=["age"])
    said = " ".join(str(w.message) for w in seen)
    for old_name, new_name in [("vector_column", "column"), ("top_k", "top"),
                               ("filter", "where"), ("columns", "attributes")]:
        assert f"match({old_name}=...) is deprecated: use {new_name}=" in said
    assert old.prospects.to_pylist() == new.prospects.to_pylist()
    assert "age" in new.prospects.column_names
    assert all(a >= 30 for a in new.prospects.column("age").to_pylist())
    with pytest.raises(ServiceError, match="give column= or the deprecated vector_column="):
        kindred.match("term_deposit", column="vec_tabular", vector_column="vec_behavior")
    with pytest.raises(TypeError, match="unexpected keyword argument 'colums'"):
        kindred.match("term_deposit", colums=["age"])


def test_old_names_of_explain_risk_top_and_recommendations(kindred: Kindred) -> None:
    cid = kindred.match("term_deposit", top=1).prospects.column("customer_id")[0].as_py()
    with pytest.warns(DeprecationWarning, match=r"explain\(k=\.\.\.\) is deprecated"):
        old = kindred.explain(cid, "term_deposit", k=3, vector_column="vec_tabular")
    new = kindred.explain(cid, "term_deposit", top=3, column="vec_tabular")
    assert len(new.neighbours) == 3
    assert [n.customer_id for n in old.neighbours] == [n.customer_id for n in new.neighbours]

    with pytest.warns(DeprecationWarning, match=r"risk_top\(n=\.\.\.\)"):
        old_top = kindred.risk_top(n=4, columns=["customer_id", "age"])
    new_top = kindred.risk_top(top=4, attributes=["customer_id", "age"])
    assert old_top.to_pylist() == new_top.to_pylist()
    assert new_top.num_rows == 4
    assert "age" in new_top.column_names

    with pytest.warns(DeprecationWarning, match=r"recommendations\(top_n=\.\.\.\)"):
        old_recs = kindred.recommendations(cid, top_n=2)
    assert len(old_recs.recommendations) == len(
        kindred.recommendations(cid, top=2).recommendations) <= 2


def test_the_new_names_raise_no_warning(kindred: Kindred) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        kindred.match("term_deposit", column="vec_tabular", top=3, attributes=["age"])
        kindred.risk_top(3, attributes=["age"])


# ---------------------------------------------------------------------- ids given as ints
def test_int_ids_are_taken_as_the_string_ids_they_spell(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = ["customer_id,age,income,term_deposit"]
    for i in range(1, 121):
        rows.append(f"{400 + i},{int(rng.integers(20, 70))},{int(rng.integers(1, 9)) * 1000},"
                    f"{'yes' if i % 3 == 0 else 'no'}")
    csv = tmp_path / "c.csv"
    csv.write_text("\n".join(rows) + "\n")
    with Kindred(str(tmp_path / "s"), create=True) as k:
        k.ingest(str(csv), table="customers", id_column="customer_id",
                 holdings=["term_deposit=term_deposit:yes"])
        k.embed("tabular")
        k.score_risk(detector="hbos")
        by_int = k.explain(413, "term_deposit", top=3)  # 413: the id "413"
        assert by_int.customer_id == "413"
        assert by_int.model_dump() == k.explain("413", "term_deposit", top=3).model_dump()
        assert k.explain_risk(413).model_dump() == k.explain_risk("413").model_dump()
        with pytest.raises(ServiceError, match=r"a customer id is a string \(or an int\), got "
                                               r"float 413.0"):
            k.explain(413.0, "term_deposit")  # type: ignore[arg-type]
        with pytest.raises(ServiceError, match="got bool"):
            k.explain_risk(True)


# ---------------------------------------------------------------------- match only reads
def test_match_leaves_every_table_version_and_artifact_as_it_was(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import services.facade.matching as facade_matching

    store = copy_store(tmp_path_factory, tmp_path / "store")
    with Kindred(str(store)) as k:
        before = {t: k.store.version(t) for t in k.tables()}
        artifacts = sorted(k.store.list_artifacts())
        metadata = {t: k.store.table_info(t).metadata for t in k.tables()}
        for method in ("centroid", "learned", "product", "propensity"):
            column = "vec_behavior" if method == "product" else None
            r = k.match("term_deposit", method=method, column=column, top=5)
            assert r.prospects.num_rows == 5
        assert {t: k.store.version(t) for t in k.tables()} == before
        assert sorted(k.store.list_artifacts()) == artifacts
        assert {t: k.store.table_info(t).metadata for t in k.tables()} == metadata
        assert not k.store.list_indexes("customers") or all(
            not ix.vector for ix in k.store.list_indexes("customers"))

        # no index on a table big enough to want one: a hint, still no write
        small = k.match("term_deposit", top=5)
        assert not any("no ANN index" in w for w in small.summary.warnings)  # 2,000 rows
        monkeypatch.setattr(facade_matching, "INDEX_MIN_ROWS", 1_000)
        hinted = k.match("term_deposit", top=5)
        assert any("no ANN index on vec_tabular" in w and "kindred index" in w
                   for w in hinted.summary.warnings)
        exact = k.match("term_deposit", top=5, exact=True)  # asked for exact: no hint
        assert not any("no ANN index" in w for w in exact.summary.warnings)
        assert {t: k.store.version(t) for t in k.tables()} == before
