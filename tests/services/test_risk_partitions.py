"""Per-partition summaries merged on the driver: ``risk top`` from per-partition lists (ties
by key across partitions) and the propensity score ladder from per-partition histograms."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow as pa

import vectorstore
from services.matching.propensity import LADDER_BINS, ladder_counts, ladder_from_counts
from services.risk import scoring


def _store_in_fragments(path: str, scores: np.ndarray, parts: int) -> vectorstore.VectorStore:
    store = vectorstore.connect(path)
    n = len(scores)
    ids = np.array([f"k{i:04d}" for i in range(n)], dtype=object)
    order = np.random.default_rng(3).permutation(n)  # keys spread over the fragments
    edges = np.linspace(0, n, parts + 1).astype(int)
    for i, (lo, hi) in enumerate(itertools.pairwise(edges)):
        idx = order[lo:hi]
        t = pa.table({"customer_id": pa.array(ids[idx], pa.string()),
                      "risk_score": pa.array(scores[idx]),
                      "risk_flag": pa.array(scores[idx] > 1.0)})
        if i == 0:
            store.create_table("customers", t.schema, key="customer_id", data=t)
        else:
            store.write("customers", t, mode="append")
    return store


def test_top_merges_per_partition_lists_with_ties_by_key(tmp_path) -> None:
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(0, 1, 600), 1)  # many ties
    store = _store_in_fragments(str(tmp_path / "s"), scores, 5)
    assert len(store.partitions("customers")) == 5
    ids = [f"k{i:04d}" for i in range(len(scores))]
    expected = sorted(zip(ids, scores.tolist(), strict=True), key=lambda r: (-r[1], r[0]))
    for n in (1, 7, 40, 600, 700):
        got = scoring.top(store, "customers", n, columns=["customer_id"])
        assert got.column("customer_id").to_pylist() == [k for k, _ in expected[:n]], n
        assert got.column("risk_rank").to_pylist() == list(range(1, min(n, 600) + 1))
    flagged = scoring.top(store, "customers", 20, flagged_only=True, columns=["customer_id"])
    want = [k for k, s in expected if s > 1.0][:20]
    assert flagged.column("customer_id").to_pylist() == want
    assert scoring.top(store, "customers", 0).num_rows == 0


def test_ladder_from_partition_counts_is_split_independent_and_holds_the_share() -> None:
    rng = np.random.default_rng(1)
    p = np.concatenate([rng.beta(1.0, 30.0, 20_000), [0.0, 1.0, 1e-12, 1 - 1e-12]])
    whole = ladder_counts(p)
    pieces: dict[str, int] = {}
    for part in np.array_split(rng.permutation(p), 7):
        for k, v in ladder_counts(part).items():
            pieces[k] = pieces.get(k, 0) + v
    assert pieces == whole
    assert len(whole) <= LADDER_BINS
    fractions = (0.001, 0.01, 0.1, 0.3, 1.0)
    ladder = ladder_from_counts(whole, fractions)
    assert [f for f, _ in ladder] == list(fractions)
    s = np.sort(p)[::-1]
    for f, t in ladder:
        need = int(np.ceil(f * len(p)))
        held = int((p >= t).sum())
        assert held >= need, f
        # and not many more: within the rows of one 0.01-wide log-odds bin
        assert t <= s[need - 1]
        assert held - need <= max(5, 0.02 * need), f
    assert ladder_from_counts({}, fractions) == []
