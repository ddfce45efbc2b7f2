"""A month of days through ``Kindred.refresh``, on LanceDB and PostgreSQL + pgvector.

Day 1 loads a synthetic bank and builds everything (consolidation, tabular and behaviour
embeddings, an ANN index, risk scores, a propensity model, behaviour recommendations). Days
2-5 each bring new customers, changed CRM records and the day's events
(``Kindred.generate(day=N)``), are ingested as the README shows, and are followed by one
refresh. After every refresh:

- the consolidated features and every transform-only vector column equal a from-scratch build
  on the same files (every day's files ingested into an empty store, consolidated once,
  embedded with the same fitted states);
- risk and propensity scores equal the persisted models applied to every row now;
- rows the day did not touch kept their vectors, scores and recommendations bit for bit;
- nothing is stale any more, and a second refresh writes nothing (every step skipped; on
  LanceDB every table's version unchanged).
"""

from __future__ import annotations

import uuid
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import vectorstore
from ingest.embedders import embed_columns, load_embedder
from ingest.embedders.base import from_vector_array
from ingest.freshness import ROW_STAMP, StaleColumnWarning, is_derived, stale_count
from services.facade import Kindred
from tests.conftest import STORE_FACTORIES

N_CUSTOMERS = 260
DAYS = 5
TRANSFORM_ONLY = ("vec_tabular", "vec_tabular_raw", "vec_behavior")
KEY = "customer_id"


@pytest.fixture(params=["lance-dir", "pgvector"])
def month_store(request: pytest.FixtureRequest, tmp_path: Path):
    s = STORE_FACTORIES[request.param](request, tmp_path)
    try:
        yield s
    finally:
        s.close()


def load_files(k: Kindred, files: dict[str, str], *, first: bool) -> None:
    """One day's files, loaded as the README's quick start and "next day" load them."""
    k.ingest(files["customers"], table="customers", id_column=KEY,
             holdings_column="products", holdings_separator=";", text_columns=["note"])
    k.ingest(files["truth"], table="customers", id_column=KEY, attributes=["is_anomaly"])
    k.ingest(files["transactions"], table="events")
    k.ingest(files["web_events"], table="events", rename=["page=category"],
             timestamp_formats=["ts=%Y-%m-%dT%H:%M:%SZ"], holdings_from_events=["purchase"])
    if first:
        k.ingest(files["products"], table="products", id_column="product_id")


def by_key(store: vectorstore.VectorStore, columns: list[str] | None = None) -> pa.Table:
    t = store.to_arrow("customers", columns=None if columns is None else [KEY, *columns])
    return t.take(pc.sort_indices(t, [(KEY, "ascending")]))


def vectors(t: pa.Table, column: str) -> np.ndarray:
    return from_vector_array(t.column(column), t.schema.field(column).type.list_size)


def versions(store: vectorstore.VectorStore) -> dict[str, int] | None:
    if not store.capabilities.versions:
        return None
    return {n: store.version(n) for n in store.list_tables()}


def scratch_build(store: vectorstore.VectorStore, days: list[dict[str, str]]) -> pa.Table:
    """Every day's files into an empty store, consolidated once, embedded with the refreshed
    store's fitted states: what the refreshed table must equal."""
    with Kindred(f"memory://{uuid.uuid4().hex}") as fresh:
        for i, files in enumerate(days):
            load_files(fresh, files, first=i == 0)
        fresh.consolidate()
        fitted = [(load_embedder(store, "customers", c), c) for c in TRANSFORM_ONLY[:2]]
        embed_columns(fresh.store, "customers", fitted, fit=False)
        embed_columns(fresh.store, "customers",
                      [(load_embedder(store, "customers", "vec_behavior"), "vec_behavior")],
                      fit=False)
        return by_key(fresh.store)


def check_equals_scratch(store: vectorstore.VectorStore, days: list[dict[str, str]]) -> None:
    got, want = by_key(store), scratch_build(store, days)
    assert got.column(KEY).to_pylist() == want.column(KEY).to_pylist()
    features = [c for c in want.column_names if c != KEY and not is_derived(c)
                and c not in TRANSFORM_ONLY]
    for c in features:
        a, b = got.column(c), want.column(c)
        if pa.types.is_floating(b.type):
            np.testing.assert_allclose(pc.fill_null(a, -1.0).to_numpy(),
                                       pc.fill_null(b, -1.0).to_numpy(), rtol=1e-9,
                                       err_msg=c)
        else:
            assert a.to_pylist() == b.to_pylist(), c
    for c in TRANSFORM_ONLY:
        np.testing.assert_allclose(vectors(got, c), vectors(want, c), atol=1e-5, err_msg=c)


def check_scores(k: Kindred) -> None:
    """Risk and propensity columns are what the persisted models give every row now."""
    from services.matching.scores import load_stored_model, stored_entry
    from services.risk.persistence import load_model

    store = k.store
    rows = by_key(store)
    det, source, _ = load_model(store, "customers")
    batch = rows.combine_chunks().to_batches()[0]
    want = det.to_risk_scale(det.score_checked(source.matrix(batch, "customers", KEY)))
    np.testing.assert_allclose(rows.column("risk_score").to_numpy(), want, rtol=1e-6,
                               atol=1e-9)
    entry = stored_entry(store.table_info("customers"), "term_deposit")
    p = load_stored_model(store, entry).score_rows(batch)
    np.testing.assert_allclose(rows.column(entry["column"]).to_numpy(), p, atol=1e-9)


def test_a_month_of_refreshes_equals_a_build_from_scratch(month_store, tmp_path):
    k = Kindred(month_store)
    bank = Kindred.generate(tmp_path / "bank", customers=N_CUSTOMERS, events_per_customer=6,
                            seed=3)
    days = [bank.files]
    load_files(k, bank.files, first=True)
    k.consolidate()
    k.embed("tabular", exclude=["note", "is_anomaly"])
    k.embed("behavior", dim=8)
    indexed = month_store.capabilities.ann_index
    if indexed:
        k.index(columns=["vec_tabular"])
    k.score_risk(detector="hbos")
    k.fit(["term_deposit"], exclude=["is_anomaly"])
    k.recommend(top=3)
    first = k.refresh()  # nothing new since day 1's build
    assert not first.wrote, [s for s in first.steps if s.rows]

    for day in range(2, DAYS + 1):
        files = Kindred.generate(tmp_path / "bank", day=day).files
        days.append(files)
        before = by_key(month_store)
        load_files(k, files, first=False)
        with pytest.warns(StaleColumnWarning, match="vec_tabular.*kindred refresh"):
            k.match("term_deposit", column="vec_tabular", top=5)

        r = k.refresh()
        done = {(s.step, s.target): s for s in r.steps}
        assert done[("consolidate", "customers")].action == "done"
        for c in TRANSFORM_ONLY:
            step = done[("embed", f"customers.{c}")]
            assert step.action == "done", step
            assert step.details["mode"] == "stale", step
            assert 0 < step.rows < month_store.count("customers") / 4
        assert done[("risk", "customers")].details["mode"] == "stale"
        assert done[("propensity", "propensity_term_deposit")].rows > 0
        assert done[("recommend", "rec_products")].rows > 0
        if indexed:
            assert done[("index", "customers.vec_tabular")].reason.startswith("index ")
        for output in (*TRANSFORM_ONLY, "risk", "propensity_term_deposit", "rec"):
            assert stale_count(month_store, "customers", output) == 0, output
        with warnings.catch_warnings():
            warnings.simplefilter("error", StaleColumnWarning)
            k.match("term_deposit", column="vec_tabular", top=5)

        # rows the day did not touch kept every derived value, bit for bit
        after = by_key(month_store)
        old = dict(zip(before.column(KEY).to_pylist(), before.column(ROW_STAMP).to_pylist(),
                       strict=True))
        ids = after.column(KEY).to_pylist()
        kept = np.array([old.get(i) == s for i, s in
                         zip(ids, after.column(ROW_STAMP).to_pylist(), strict=True)])
        assert 0 < (~kept).sum() < len(ids) / 4
        pos = {c: i for i, c in enumerate(before.column(KEY).to_pylist())}
        take = pa.array([pos[i] for i, keep in zip(ids, kept, strict=True) if keep])
        mine = after.filter(pa.array(kept))
        theirs = before.take(take)
        for c in (*TRANSFORM_ONLY, "risk_score", "propensity_term_deposit", "rec_products"):
            assert mine.column(c).equals(theirs.column(c)), c

        check_equals_scratch(month_store, days)
        check_scores(k)

        v = versions(month_store)
        again = k.refresh()
        assert not again.wrote
        assert {s.action for s in again.steps} == {"skipped"}, \
            [s for s in again.steps if s.action != "skipped"]
        assert versions(month_store) == v
    assert month_store.count("customers") > N_CUSTOMERS
