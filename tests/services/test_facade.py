"""The facade other applications embed: typed results, no printing, shared across threads."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import vectorstore
from ingest.errors import MappingError, SourceError
from services.errors import EvaluationError, ServiceError, StoreMissing, UnknownProduct
from services.facade import Kindred
from services.models import IngestResult, StoreStats
from tests.services._bank import N_CUSTOMERS, copy_store


def test_open_by_uri_or_borrow_an_open_store(tmp_path: Path) -> None:
    with pytest.raises(StoreMissing, match="no Kindred store at"):
        Kindred(str(tmp_path / "missing"))
    with pytest.raises(ServiceError, match="store URI or an open VectorStore"):
        Kindred(42)  # type: ignore[arg-type]
    store = vectorstore.connect(str(tmp_path / "s"))
    with Kindred(store) as k:
        assert k.store is store
        assert k.tables() == []
    store.list_tables()  # a borrowed store is left open


def test_locations_never_show_passwords() -> None:
    from services.admin import redact

    assert redact("cannot reach postgresql://bob:pa55@db:5432/x?schema=k") == \
        "cannot reach postgresql://bob:***@db:5432/x?schema=k"
    assert redact("host=db password=pa55 user=bob") == "host=db password=*** user=bob"
    assert redact("/data/kindred") == "/data/kindred"


def test_stats_are_typed_and_match_the_store(kindred: Kindred) -> None:
    st = kindred.stats()
    assert isinstance(st, StoreStats)
    by = {t.name: t for t in st.tables}
    assert set(by) == {"customers", "events", "products"}
    assert by["customers"].rows == N_CUSTOMERS == kindred.store.count("customers")
    assert by["events"].rows == kindred.store.count("events")
    vecs = {v.name: v for v in by["customers"].vectors}
    assert vecs["vec_tabular"].embedder == "tabular"
    assert vecs["vec_behavior"].embedder == "behavior"
    assert vecs["vec_behavior"].dim == 16
    state = kindred.store.table_info("customers").metadata["embedders"]["vec_tabular"]
    assert state["state_artifact"] in st.artifacts  # named after its content
    assert st.disk_bytes == sum(t.disk_bytes for t in st.tables)
    json.loads(st.model_dump_json())  # JSON-ready


def test_ingest_options_json_array_and_generated_ids(tmp_path: Path) -> None:
    csv = tmp_path / "clients.csv"
    csv.write_text("name,age,y,notes\nann,34,yes,likes savings\nbob,51,no,\ncid,28,yes,x\n")
    products = tmp_path / "products.json"
    products.write_text(json.dumps([{"product_id": "term_deposit", "name": "Term deposit"}]))
    with Kindred(str(tmp_path / "s"), create=True) as k:
        r = k.ingest(csv, table="customers", holdings=["term_deposit=y:yes"],
                     text_columns=["notes"])
        assert isinstance(r, IngestResult)
        assert (r.rows_read, r.written) == (3, 3)
        t = k.store.to_arrow("customers").sort_by("age")
        ids = t.column("customer_id").to_pylist()
        assert len(set(ids)) == 3
        assert all(isinstance(i, str) and len(i) >= 16 for i in ids)  # stable hashed ids
        assert t.column("holdings").to_pylist() == [["term_deposit"], ["term_deposit"], []]
        assert "y" not in t.column_names
        again = k.ingest(csv, table="customers", holdings=["term_deposit=y:yes"],
                         text_columns=["notes"])
        assert again.written == 0  # same rows, same ids: upserted, not duplicated
        assert k.store.count("customers") == 3
        p = k.ingest(products, table="products", id_column="product_id")
        assert p.written == 1
        bad = tmp_path / "bad.json"
        bad.write_text('[{"product_id": "x"}, 3]')
        with pytest.raises(SourceError, match="expected a JSON array of objects"):
            k.ingest(bad, table="products", id_column="product_id")
        with pytest.raises(MappingError):
            k.ingest(csv, table="customers", holdings=["term_deposit"])
        with pytest.raises(ServiceError, match="a table and a source"):
            k.ingest(csv)


def test_match_explain_and_evaluate(kindred: Kindred) -> None:
    r = kindred.match("term_deposit", top=25, where="age >= 30", attributes=["age"])
    assert r.prospects.num_rows == 25
    assert min(r.prospects.column("age").to_pylist()) >= 30
    assert r.summary.column == "vec_tabular"  # preferred over vec_behavior
    held = kindred.store.to_arrow(
        "customers", columns=["customer_id", "holdings"],
        filter="has(holdings, 'term_deposit')").column("customer_id").to_pylist()
    assert not set(r.prospects.column("customer_id").to_pylist()) & set(held)
    assert set(r.consumers.column("customer_id").to_pylist()) <= set(held)
    scores = r.prospects.column("score").to_numpy()
    assert (np.diff(scores) <= 1e-9).all()
    e = kindred.explain(r.prospects.column("customer_id")[0].as_py(), "term_deposit", top=3)
    assert len(e.neighbours) == 3
    assert {n.customer_id for n in e.neighbours} <= set(held)
    rep = kindred.evaluate_matching("term_deposit", methods=("centroid",),
                                    vector_columns=["vec_tabular"])
    best = rep.best()
    assert best.roc_auc > 0.65  # well above the random row's 0.5
    with pytest.raises(UnknownProduct):
        kindred.match("space_travel")
    with pytest.raises(vectorstore.StoreError, match="unknown column 'agee'"):
        kindred.match("term_deposit", where="agee >= 30")
    with pytest.raises(vectorstore.InvalidFilter):
        kindred.match("term_deposit", where="age >>= 30")
    with pytest.raises(EvaluationError, match="exactly one"):
        kindred.evaluate_matching()


def test_concurrent_reads_share_one_instance(kindred: Kindred) -> None:
    def job(i: int) -> list[str]:
        product = ["term_deposit", "mortgage", "savings"][i % 3]
        return kindred.match(product, top=10).prospects.column("customer_id").to_pylist()

    serial = [job(i) for i in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        parallel = list(pool.map(job, range(6)))
    assert parallel == serial
    assert serial[0] != serial[1]


def test_risk_results_are_written_back(kindred: Kindred) -> None:
    top = kindred.risk_top(10, attributes=["customer_id", "is_anomaly"])
    assert top.column("risk_rank").to_pylist() == list(range(1, 11))
    assert (np.diff(top.column("risk_score").to_numpy()) <= 0).all()
    e = kindred.explain_risk(top.column("customer_id")[0].as_py())
    assert e.risk_rank == 1
    assert e.percentile == pytest.approx(100.0)
    t = kindred.store.to_arrow("customers", columns=["risk_score", "is_anomaly"])
    auc = roc_auc_score(t.column("is_anomaly").to_numpy(zero_copy_only=False),
                        t.column("risk_score").to_numpy())
    assert auc > 0.5


def test_recommend_and_report(bank: tuple[Path, Path], tmp_path: Path,
                              tmp_path_factory: pytest.TempPathFactory) -> None:
    store = copy_store(tmp_path_factory, tmp_path / "store")
    with Kindred(str(store)) as k:
        calls: list[tuple[str, int, int | None]] = []
        r = k.recommend(top=2, column="vec_behavior", progress=lambda *a: calls.append(a))
        assert r.customers == N_CUSTOMERS
        assert calls[-1] == ("recommend", N_CUSTOMERS, N_CUSTOMERS)
        rec = k.store.to_arrow("customers", columns=["holdings", "rec_products"])
        for held, recs in zip(rec.column("holdings").to_pylist(),
                              rec.column("rec_products").to_pylist(), strict=True):
            assert len(recs) == min(2, 8 - len(set(held or [])))
            assert not set(recs) & set(held or [])
        assert k.popular_products(2) == k.popular_products(3)[:2]
        rep = k.report(tmp_path / "rep", products=["term_deposit"], methods=("centroid",),
                       label="is_anomaly")
    assert rep.sections == ["gain", "distributions", "risk", "map"]
    page = Path(rep.html).read_text()
    assert "holdout ROC-AUC term_deposit / centroid" in page
    assert "risk ROC-AUC on is_anomaly" in page


def test_migrate_to_another_store(kindred: Kindred, tmp_path: Path) -> None:
    r = kindred.migrate(str(tmp_path / "copy"), tables=["products", "customers"])
    assert r.tables == {"products": 8, "customers": N_CUSTOMERS}
    with vectorstore.connect(str(tmp_path / "copy")) as dst:
        q = np.ones(16, dtype=np.float32)
        a = kindred.store.search("customers", q, k=5, vector_column="vec_behavior",
                                 exact=True)
        b = dst.search("customers", q, k=5, vector_column="vec_behavior", exact=True)
        assert a.column("customer_id").equals(b.column("customer_id"))
        assert dst.table_info("customers").metadata == kindred.store.table_info(
            "customers").metadata
        assert sorted(dst.list_artifacts()) == sorted(kindred.store.list_artifacts())


def test_long_steps_report_progress(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    store = copy_store(tmp_path_factory, tmp_path / "store")
    calls: list[tuple[str, int, int | None]] = []
    with Kindred(str(store)) as k:
        k.embed("tabular", column="vec_progress", progress=lambda *a: calls.append(a))
        k.score_risk(column="vec_progress", progress=lambda *a: calls.append(a))
        k.evaluate_matching("term_deposit", columns=["vec_progress"],
                            methods=("centroid",), repeats=1,
                            progress=lambda *a: calls.append(a))
    assert {step for step, _, _ in calls} == {"embed tabular", "risk score", "evaluate matching"}
    ingested: list[tuple[str, int, int | None]] = []
    with Kindred(str(tmp_path / "fresh"), create=True) as k:
        src = tmp_path / "people.csv"
        src.write_text("client,age\n" + "".join(f"c{i},{20 + i % 50}\n" for i in range(3000)))
        k.ingest(str(src), table="customers", id_column="client",
                 progress=lambda *a: ingested.append(a))
    assert ingested
    assert ingested[-1] == ("ingest", 3000, None)
    assert [d for _, d, _ in ingested] == sorted(d for _, d, _ in ingested)
    for step in ("embed tabular", "risk score", "evaluate matching"):
        done = [(d, t) for s, d, t in calls if s == step]
        assert [d for d, _ in done] == sorted(d for d, _ in done), step
        assert done[-1] == (N_CUSTOMERS, N_CUSTOMERS), step
