"""The runners' progress callback, and a write that fails part-way leaving the tables as before."""

from __future__ import annotations

import pyarrow as pa
import pytest

import synthetic_bank as synthetic
from ingest.embedders import TabularEmbedder, embed
from ingest.embedders.base import artifact_name
from ingest.embedders.behavior import BehaviorEmbedder, embed_behavior
from ingest.embedders.combined import embed_combined
from vectorstore import connect


class Stop(Exception):
    """Raised by a progress callback to break a run after some batches were written."""


def stop_after(n_calls: int, seen: list[tuple[int, int | None]]):
    def progress(done: int, total: int | None) -> None:
        seen.append((done, total))
        if len(seen) >= n_calls:
            raise Stop(f"stopped after {done} rows")
    return progress


def snapshot(store, table: str) -> tuple:
    info = store.table_info(table)
    rows = store.to_arrow(table).sort_by(info.key)
    return info.schema, dict(info.vectors), info.metadata, rows


def test_progress_after_each_batch(customers):
    seen: list[tuple[int, int | None]] = []
    r = embed(customers, "customers", TabularEmbedder(exclude=["note"]), batch_size=100,
              progress=lambda d, t: seen.append((d, t)))
    assert r.rows_embedded == 400
    done = [d for d, _ in seen]
    assert len(seen) >= 4
    assert done == sorted(done)
    assert done[-1] == 400
    assert {t for _, t in seen} == {400}
    seen.clear()
    embed_combined(customers, "customers", {"vec_tabular": 1.0}, batch_size=150,
                   progress=lambda d, t: seen.append((d, t)))
    assert len(seen) >= 3
    assert seen[-1] == (400, 400)


def test_failure_part_way_drops_the_new_columns(customers):
    before = snapshot(customers, "customers")
    seen: list[tuple[int, int | None]] = []
    with pytest.raises(Stop):
        embed(customers, "customers", TabularEmbedder(exclude=["note"]), batch_size=100,
              progress=stop_after(2, seen))
    assert seen[-1][0] == 200  # two batches were written before the failure
    after = snapshot(customers, "customers")
    assert after[0] == before[0]
    assert after[1] == before[1]
    assert after[2] == before[2]
    assert after[3].equals(before[3])
    assert not [a for a in customers.list_artifacts()
                if a.startswith(artifact_name("customers", "vec_tabular"))]


def state_of(store, column: str) -> tuple[bytes, dict]:
    """The state artifact the table metadata names for ``column``."""
    meta = store.table_info("customers").metadata["embedders"][column]
    return store.get_artifact(meta["state_artifact"])


def test_failure_rewriting_an_existing_column_leaves_it(tmp_path):
    from tests.ingest.embedders.conftest import customers_table

    s = connect(str(tmp_path / "db"))
    t = customers_table(400)
    s.create_table("customers", t.schema, key="customer_id")
    s.write("customers", t)
    first = embed(s, "customers", TabularEmbedder(exclude=["note"], pca=3))
    before = snapshot(s, "customers")
    state = state_of(s, "vec_tabular")
    with pytest.raises(Stop):
        embed(s, "customers", TabularEmbedder(include=["age", "region"], pca=3),
              batch_size=100, progress=stop_after(3, []))
    after = snapshot(s, "customers")
    assert after[:3] == before[:3]
    assert after[3].equals(before[3])
    assert state_of(s, "vec_tabular")[0] == state[0]
    assert before[2]["embedders"]["vec_tabular"]["state_sha256"] == first.state_sha256


@pytest.fixture
def bank(tmp_path):
    b = synthetic.generate(tmp_path / "files", n_customers=300, events_per_customer=8, seed=1)
    s = connect(str(tmp_path / "db"))
    synthetic.load_into_store(s, b)
    return s


def test_behavior_progress_and_failure(bank):
    before = {t: snapshot(bank, t) for t in ("customers", "products")}
    with pytest.raises(Stop):
        embed_behavior(bank, BehaviorEmbedder(dim=8), batch_size=100,
                       progress=stop_after(2, []))
    for t in ("customers", "products"):
        after = snapshot(bank, t)
        assert after[:3] == before[t][:3]
        assert after[3].equals(before[t][3])
    assert not [a for a in bank.list_artifacts()
                if a.startswith(artifact_name("customers", "vec_behavior"))]
    seen: list[tuple[int, int | None]] = []
    r = embed_behavior(bank, BehaviorEmbedder(dim=8), batch_size=100,
                       progress=lambda d, t: seen.append((d, t)))
    n = r.rows_embedded
    assert n == bank.count("customers")
    assert [d for d, _ in seen] == [*list(range(100, n, 100)), n]
    assert {t for _, t in seen} == {n}
    assert "vec_behavior" in bank.table_info("products").vectors
    assert pa.types.is_fixed_size_list(bank.table_info("customers").schema.field(
        "vec_behavior").type)
