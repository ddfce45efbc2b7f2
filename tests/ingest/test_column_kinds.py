"""One rule for numbers vs categories: declared kinds, text, integer codes named as codes."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import vectorstore
from ingest.column_kinds import (
    CODE_MAX_LEVELS,
    column_kind,
    count_levels,
    named_like_code,
    parse_kinds,
)
from ingest.embedders import TabularEmbedder
from ingest.embedders.errors import EmbeddingError


@pytest.mark.parametrize(("name", "code"), [
    ("customer_type", True), ("MOSTYPE", True), ("region_code", True), ("branchId", True),
    ("zip", True), ("segment", True), ("age", False), ("campaign", False),
    ("education", False), ("n_children", False), ("tenure_years", False)])
def test_names_that_say_code(name, code):
    assert named_like_code(name) is code


def test_column_kind_rule():
    i64 = pa.int64()
    assert column_kind("customer_type", i64, n_distinct=41) == "category"
    assert column_kind("customer_type", i64, n_distinct=CODE_MAX_LEVELS + 1) == "numeric"
    assert column_kind("customer_type", i64) == "numeric"  # unknown count: too many
    assert column_kind("campaign", i64, n_distinct=41) == "numeric"  # a count, not a code
    assert column_kind("campaign", i64, declared="category") == "category"
    assert column_kind("job", pa.string()) == "category"
    assert column_kind("flag", pa.bool_()) == "numeric"
    assert column_kind("ts", pa.timestamp("us")) == "numeric"
    assert column_kind("tags", pa.list_(pa.string())) is None
    with pytest.raises(ValueError, match="cannot be read as numeric"):
        column_kind("job", pa.string(), declared="numeric")
    assert parse_kinds(["a=category", "b = Numeric"]) == {"a": "category", "b": "numeric"}
    with pytest.raises(ValueError, match="COLUMN=category"):
        parse_kinds(["a=ordinal"])


@pytest.fixture
def coded(tmp_path) -> vectorstore.VectorStore:
    rng = np.random.default_rng(0)
    n = 600
    st = vectorstore.connect(str(tmp_path / "db"))
    t = pa.table({"customer_id": [f"c{i}" for i in range(n)],
                  "customer_type": rng.integers(1, 42, n),
                  "campaign": rng.integers(1, 42, n),
                  "age": rng.integers(18, 90, n)})
    st.create_table("customers", t.schema, key="customer_id")
    st.write("customers", t)
    return st


def test_tabular_embedder_reads_integer_codes_as_categories(coded):
    assert count_levels(coded, "customers", ["customer_type"]) == {"customer_type": 41}
    emb = TabularEmbedder(min_frequency=0.0).fit(coded, "customers")
    assert emb.categorical_ == ["customer_type"]
    assert emb.numeric_ == ["campaign", "age"]
    assert "customer_type=7" in emb.feature_names_
    declared = TabularEmbedder(types={"campaign": "category", "customer_type": "numeric"})
    declared.fit(coded, "customers")
    assert declared.categorical_ == ["campaign"]
    assert "customer_type" in declared.numeric_
    assert declared.get_params()["types"] == {"campaign": "category",
                                              "customer_type": "numeric"}
    with pytest.raises(EmbeddingError, match="COLUMN=category"):
        TabularEmbedder(types={"age": "ordinal"})


def test_ingest_type_category_keeps_codes_as_labels(tmp_path):
    from services.facade import Kindred

    csv = tmp_path / "c.csv"
    csv.write_text("id,branch,age\n1,07,30\n2,12,40\n3,07,50\n")
    with Kindred(str(tmp_path / "store"), create=True) as k:
        k.ingest(str(csv), table="customers", id_column="id", types=["branch=category"])
        info = k.store.table_info("customers")
        assert info.schema.field("branch").type == pa.string()
        assert info.schema.field("age").type == pa.int64()
        got = k.store.to_arrow("customers", columns=["branch"]).column("branch").to_pylist()
        assert sorted(got) == ["07", "07", "12"]  # the code as written, leading zero kept
