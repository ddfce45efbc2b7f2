"""A later embed touches only new and changed rows, with the state the column was made with.

Rows are written the way ingest writes them (``touch=source_touch(...)``: a new row stamp,
derived stamps nulled), on every backend. After the incremental run: unchanged rows kept
their vectors bit for bit, new and changed rows hold what the fitted state gives them (as a
from-scratch transform of the same data would), the column mean follows, and a second run
writes nothing at all.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingest import synthetic
from ingest.embedders import embed, embed_columns, load_embedder
from ingest.embedders.base import from_vector_array
from ingest.embedders.behavior import BehaviorEmbedder, embed_behavior
from ingest.embedders.errors import EmbeddingError
from ingest.embedders.tabular import embed_tabular
from ingest.freshness import ROW_STAMP, source_touch, stale_count, stale_mask, stamp_column
from vectorstore import ConcurrentWriteError, connect

from .conftest import customers_table


def _stamped(store, t: pa.Table) -> None:
    store.create_table("customers", t.schema.append(pa.field(ROW_STAMP, pa.int64())),
                       key="customer_id")
    write(store, t)


def write(store, t: pa.Table) -> None:
    """An upsert as ingest makes it."""
    with store.transaction("customers") as tx:
        tx.write(t, mode="upsert", touch=source_touch(tx.info))


def by_key(store, columns):
    t = store.to_arrow("customers", columns=["customer_id", *columns])
    return t.take(pc.sort_indices(t, [("customer_id", "ascending")]))


def vec(t: pa.Table, column: str) -> np.ndarray:
    return from_vector_array(t.column(column), t.schema.field(column).type.list_size)


def version(store):
    return store.data_version("customers") if store.capabilities.versions else None


def test_tabular_refresh_touches_only_stale_rows(store):
    base = customers_table(300)
    _stamped(store, base)
    embed_tabular(store, "customers", exclude=["note"], batch_size=64)
    before = by_key(store, ["vec_tabular", "vec_tabular_raw"])
    assert stale_count(store, "customers", "vec_tabular") == 0
    changed = base.slice(10, 5).set_column(1, "age", pa.array([99] * 5))
    write(store, pa.concat_tables([changed, customers_table(20, start=300)]))
    assert stale_count(store, "customers", "vec_tabular") == 25
    assert stale_count(store, "customers", "vec_tabular_raw") == 25
    fitted = [(load_embedder(store, "customers", c), c)
              for c in ("vec_tabular", "vec_tabular_raw")]
    main, raw = embed_columns(store, "customers", fitted, fit=False, batch_size=64)
    assert raw.rows_embedded == 25
    assert (main.mode, main.rows_embedded, main.rows_skipped) == ("stale", 25, 295)
    after = by_key(store, ["vec_tabular", "vec_tabular_raw"])
    ids = after.column("customer_id").to_pylist()
    touched = {f"c{i:05d}" for i in [*range(10, 15), *range(300, 320)]}
    kept = np.array([i not in touched for i in ids])
    for col in ("vec_tabular", "vec_tabular_raw"):  # unchanged rows: the same bits
        np.testing.assert_array_equal(vec(after, col)[kept], vec(before, col)[kept[:300]])
    # new and changed rows: exactly what the stored state makes of the current rows
    rows = store.to_arrow("customers").sort_by("customer_id")
    for emb, col in fitted:
        direct = from_vector_array(emb.transform(rows.combine_chunks().to_batches()[0]),
                                   emb.dim_)
        np.testing.assert_allclose(vec(after, col), direct, atol=1e-6)
        meta = store.table_info("customers").metadata["embedders"][col]
        np.testing.assert_allclose(meta["mean"], vec(after, col).mean(axis=0), atol=1e-6)
        assert meta["vectors"] == 320
    assert stale_count(store, "customers", "vec_tabular") == 0
    v = version(store)
    again = embed_columns(store, "customers", fitted, fit=False)
    assert again[0].rows_embedded == 0
    assert "nothing written" in again[0].message
    assert version(store) == v


def test_a_new_state_or_a_table_without_stamps_computes_every_row(store):
    t = customers_table(120)
    store.create_table("customers", t.schema, key="customer_id")
    store.write("customers", t)  # raw writes: no stamps, changes cannot be told apart
    embed(store, "customers", load_or_fit(store), "vec_tabular")
    store.write("customers", customers_table(10, start=120))
    r = embed(store, "customers", load_embedder(store, "customers", "vec_tabular"), fit=False)
    assert (r.mode, r.rows_embedded) == ("all", 130)
    with pytest.raises(EmbeddingError, match="no change stamps"):
        embed(store, "customers", load_embedder(store, "customers", "vec_tabular"), fit=False,
              stale_only=True)


def load_or_fit(store):
    from ingest.embedders import TabularEmbedder

    return TabularEmbedder(exclude=["note"])


def test_behaviour_refresh_folds_in_changed_customers(tmp_path):
    b = synthetic.generate(tmp_path / "files", n_customers=600, events_per_customer=10, seed=5)
    s = connect(str(tmp_path / "db"))
    synthetic.load_into_store(s, b)
    with s.transaction("customers") as tx:  # give the loaded rows stamps, as ingest would
        tx.add_columns([pa.field(ROW_STAMP, pa.int64())])
    ids = s.to_arrow("customers", columns=["customer_id"]).column("customer_id")
    s.update("customers", pa.table({"customer_id": ids, ROW_STAMP: pa.array(
        np.arange(len(ids), dtype=np.int64) + 1)}))
    embed_behavior(s, BehaviorEmbedder(dim=8))
    before = by_key(s, ["vec_behavior"])
    # a customer opens a product, another buys online (a new event), one is new
    write(s, pa.table({"customer_id": ["C00000003"], "holdings": [["mortgage", "savings"]]}))
    ev = s.to_arrow("events").slice(0, 1).to_pylist()[0]
    ev.update(event_id="E-new", customer_id="C00000007", product_id="credit_card",
              category="travel")
    s.write("events", pa.Table.from_pylist([ev], schema=s.table_info("events").schema))
    write(s, pa.table({"customer_id": ["C00000007"], "region": ["elsewhere"]}))
    write(s, pa.table({"customer_id": ["NEW1"], "holdings": [["savings"]]}))
    emb = load_embedder(s, "customers", "vec_behavior")
    r = embed(s, "customers", emb, "vec_behavior", fit=False)
    assert (r.mode, r.rows_embedded) == ("stale", 3)
    after = by_key(s, ["vec_behavior"])
    changed = np.isin(after.column("customer_id").to_numpy(zero_copy_only=False),
                      ["C00000003", "C00000007", "NEW1"])
    was = ~np.isin(before.column("customer_id").to_numpy(zero_copy_only=False),
                   ["C00000003", "C00000007"])
    np.testing.assert_array_equal(vec(after, "vec_behavior")[~changed],
                                  vec(before, "vec_behavior")[was])
    # the same as embedding every row from scratch with the state
    s2 = connect(str(tmp_path / "db2"))
    from ingest.freshness import is_derived

    for name in ("customers", "events"):
        info = s.table_info(name)
        cols = [c for c in info.schema.names if not is_derived(c) and c not in info.vectors]
        s2.create_table(name, info.schema.empty_table().select(cols).schema, key=info.key)
        s2.write(name, s.to_arrow(name, columns=cols))
    embed(s2, "customers", load_embedder(s, "customers", "vec_behavior"), "vec_behavior",
          fit=False)
    scratch = by_key(s2, ["vec_behavior"])
    np.testing.assert_allclose(vec(after, "vec_behavior"), vec(scratch, "vec_behavior"),
                               atol=1e-5)
    assert vec(after, "vec_behavior")[changed].any(axis=1).all()


def test_a_row_changed_while_the_refresh_runs_stays_stale(store):
    base = customers_table(200)
    _stamped(store, base)
    embed_tabular(store, "customers", exclude=["note"], raw=False)
    write(store, base.slice(0, 3).set_column(1, "age", pa.array([70, 71, 72])))
    fitted = load_embedder(store, "customers", "vec_tabular")
    hit = []

    def meanwhile(done, total):  # after the plan, before the commit: another writer
        if not hit:
            hit.append(1)
            write(store, base.slice(1, 1).set_column(1, "age", pa.array([5])))

    try:
        embed(store, "customers", fitted, "vec_tabular", fit=False, progress=meanwhile)
    except ConcurrentWriteError:  # LanceDB: the same stamp column of the same fragment
        assert stale_count(store, "customers", "vec_tabular") == 3
        return
    row = store.to_arrow("customers", filter="customer_id = 'c00001'")
    assert stale_mask(row, stamp_column("vec_tabular")).all()  # never marked fresh
    r = embed(store, "customers", fitted, "vec_tabular", fit=False)
    assert r.rows_embedded == 1
    direct = from_vector_array(fitted.transform(
        store.to_arrow("customers", filter="customer_id = 'c00001'").to_batches()[0]), fitted.dim_)
    got = store.to_arrow("customers", columns=["vec_tabular"], filter="customer_id = 'c00001'")
    np.testing.assert_allclose(vec(got, "vec_tabular"), direct, atol=1e-6)
