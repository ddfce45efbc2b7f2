from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ingest.embedders import (
    DimensionConflictError,
    EmptyInputError,
    ModelIntegrityError,
    TabularEmbedder,
    UnknownColumnError,
    embed,
    load_embedder,
)
from ingest.embedders.base import Embedder, artifact_name, from_vector_array
from tests.ingest.embedders.conftest import customers_table
from vectorstore import VectorColumn


def vectors(store, column, table="customers"):
    t = store.to_arrow(table, columns=["customer_id", column])
    order = np.argsort(t.column("customer_id").to_numpy(zero_copy_only=False))
    dim = store.table_info(table).vectors[column].dim
    return from_vector_array(t.column(column), dim)[order]


def test_deterministic_and_recorded(customers):
    r1 = embed(customers, "customers", TabularEmbedder(exclude=["note"], pca=3))
    v1 = vectors(customers, "vec_tabular")
    r2 = embed(customers, "customers", TabularEmbedder(exclude=["note"], pca=3))
    assert r1.rows_embedded == r2.rows_embedded == 400
    np.testing.assert_array_equal(v1, vectors(customers, "vec_tabular"))
    meta = customers.table_info("customers").metadata["embedders"]["vec_tabular"]
    assert (meta["kind"], meta["dim"], meta["metric"]) == ("tabular", 3, "cosine")
    assert meta["state_sha256"] == r2.state_sha256
    np.testing.assert_allclose(meta["mean"], v1.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(v1, axis=1), 1.0, atol=1e-5)


def test_robust_scaling_and_rare_levels(customers):
    emb = TabularEmbedder(exclude=["note"], normalize=False).fit(customers, "customers")
    t = customers.to_arrow("customers")
    age = t.column("age").to_numpy()
    assert emb.center_[emb.numeric_.index("age")] == pytest.approx(np.median(age))
    assert "income__missing" in emb.feature_names_  # income had missing values
    assert "region=Isles" not in emb.feature_names_  # 0.5% < min_frequency: grouped
    assert "region=__other__" in emb.feature_names_
    # an outlier is clipped, not allowed to dominate
    x = emb.transform(pa.record_batch({"age": [10_000], "income": [1.0], "region": ["North"]}))
    assert from_vector_array(x, emb.dim_)[0, 0] == pytest.approx(emb.clip)


def test_fixed_transform_new_rows_equal_full_run(customers):
    emb = TabularEmbedder(exclude=["note"], pca=4)
    embed(customers, "customers", emb, batch_size=128)
    new = customers_table(50, start=400)
    customers.write("customers", new)
    fitted = load_embedder(customers, "customers", "vec_tabular")
    before = vectors(customers, "vec_tabular")[:400]
    embed(customers, "customers", fitted, fit=False, batch_size=64)
    after = vectors(customers, "vec_tabular")
    np.testing.assert_allclose(after[:400], before, atol=1e-6)  # old rows unchanged
    direct = from_vector_array(emb.transform(new.to_batches()[0]), emb.dim_)
    np.testing.assert_allclose(after[400:], direct, atol=1e-6)


def test_sample_bound_is_order_independent(customers):
    a = TabularEmbedder(exclude=["note"], sample_size=100).fit(customers, "customers",
                                                               batch_size=37)
    b = TabularEmbedder(exclude=["note"], sample_size=100).fit(customers, "customers",
                                                               batch_size=400)
    np.testing.assert_array_equal(a.center_, b.center_)
    full = TabularEmbedder(exclude=["note"]).fit(customers, "customers")
    assert not np.array_equal(a.center_, full.center_) or a.scale_[0] != full.scale_[0]


def test_state_round_trip_without_pickle(customers):
    emb = TabularEmbedder(exclude=["note"], pca=2).fit(customers, "customers")
    data = emb.to_bytes()
    back = Embedder.from_bytes(data)
    batch = customers.to_arrow("customers").to_batches()[0]
    np.testing.assert_array_equal(emb.transform(batch).flatten(), back.transform(batch).flatten())


def test_version_mismatch_refused(customers):
    emb = TabularEmbedder(exclude=["note"]).fit(customers, "customers")
    data = bytearray(emb.to_bytes())
    import io
    import json

    z = dict(np.load(io.BytesIO(bytes(data)), allow_pickle=False))
    header = json.loads(z["__kindred_state__"].tobytes())
    header["versions"]["numpy"] = "0.0.1"
    z["__kindred_state__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **z)
    with pytest.raises(ModelIntegrityError, match=r"numpy 0\.0\.1"):
        Embedder.from_bytes(buf.getvalue())
    assert Embedder.from_bytes(buf.getvalue(), check_versions=False).dim_ == emb.dim_


def test_tampered_state_refused(customers):
    embed(customers, "customers", TabularEmbedder(exclude=["note"]))
    name = customers.table_info("customers").metadata["embedders"]["vec_tabular"]["state_artifact"]
    assert name.startswith(artifact_name("customers", "vec_tabular"))
    data, _ = customers.get_artifact(name)
    customers.put_artifact(name, data + b"x")  # a different state than the metadata records
    with pytest.raises(ModelIntegrityError, match="refusing"):
        load_embedder(customers, "customers", "vec_tabular")


def test_errors_write_nothing(customers):
    before = customers.table_info("customers").schema
    with pytest.raises(UnknownColumnError, match="nope"):
        embed(customers, "customers", TabularEmbedder(exclude=["nope"]))
    with pytest.raises(UnknownColumnError, match="nope"):
        embed(customers, "customers", TabularEmbedder(include=["age", "nope"]))
    customers.add_columns("customers", [], vectors=[VectorColumn("vec_tabular", 3)])
    with pytest.raises(DimensionConflictError, match="dim 3"):
        embed(customers, "customers", TabularEmbedder(exclude=["note"]))
    info = customers.table_info("customers")
    assert info.schema.names == [*before.names, "vec_tabular"]
    assert "embedders" not in info.metadata
    customers.create_table("empty", before, key="customer_id")
    with pytest.raises(EmptyInputError, match="no rows"):
        embed(customers, "empty", TabularEmbedder())
    assert customers.table_info("empty").schema.names == before.names


def test_raw_companion_keeps_magnitudes_and_weighs_columns_alike(customers):
    from ingest.embedders.tabular import embed_tabular

    customers.add_columns("customers", [pa.field("consolidation_run", pa.int64())])
    customers.update("customers", pa.table({
        "customer_id": [f"c{i:05d}" for i in range(400)], "consolidation_run": [3] * 400}))
    main, raw = embed_tabular(customers, "customers", exclude=["note"])
    assert (main.column, raw.column) == ("vec_tabular", "vec_tabular_raw")
    info = customers.table_info("customers")
    assert (str(info.vectors["vec_tabular"].metric), str(info.vectors["vec_tabular_raw"].metric)
            ) == ("cosine", "l2")
    assert info.metadata["embedders"]["vec_tabular_raw"]["params"]["normalize"] is False
    emb = load_embedder(customers, "customers", "vec_tabular_raw")
    assert "consolidation_run" not in emb.numeric_  # bookkeeping, never an attribute
    t = customers.to_arrow("customers")
    age = t.column("age").to_numpy().astype(float)
    # exact z-scores (population mean and SD), not clipped, not unit length
    i = emb.numeric_.index("age")
    assert emb.center_[i] == pytest.approx(age.mean())
    assert emb.scale_[i] == pytest.approx(age.std())
    far = emb.transform(pa.record_batch({"age": [10_000], "income": [1.0], "region": ["North"]}))
    v = from_vector_array(far, emb.dim_)[0]
    assert v[emb.feature_names_.index("age")] == pytest.approx((10_000 - age.mean()) / age.std())
    # a change of category is a distance of 1, as one standard deviation of a number is
    base = {"age": [int(age.mean())], "income": [float(np.nanmean(t.column("income")))]}
    a, b = (from_vector_array(emb.transform(pa.record_batch({**base, "region": [r]})),
                              emb.dim_)[0] for r in ("North", "South"))
    assert np.linalg.norm(a - b) == pytest.approx(1.0, abs=1e-6)
    older = from_vector_array(emb.transform(pa.record_batch(
        {**base, "age": [base["age"][0] + age.std()], "region": ["North"]})), emb.dim_)[0]
    assert np.linalg.norm(older - a) == pytest.approx(1.0, abs=1e-4)
    assert np.linalg.norm(a) != pytest.approx(1.0, abs=1e-3)


def test_raw_companion_conflicts_fail_before_anything_is_written(customers):
    from ingest.embedders.tabular import embed_tabular

    customers.add_columns("customers", [], vectors=[VectorColumn("vec_tabular_raw", 3, "l2")])
    version = customers.version("customers") if customers.capabilities.versions else None
    with pytest.raises(DimensionConflictError, match="vec_tabular_raw"):
        embed_tabular(customers, "customers", exclude=["note"])
    info = customers.table_info("customers")
    assert "vec_tabular" not in info.vectors
    if version is not None:
        assert customers.version("customers") == version
    main, raw = embed_tabular(customers, "customers", exclude=["note"], raw=False)
    assert raw is None
    assert main.rows_embedded == 400
