"""Tampered, truncated and missing artifacts of every kind are refused (or, for a cache,
rebuilt) with one clear message naming them; nothing in them ever runs. Plus the audited
model path (vectorstore.estimators) on the models the project makes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import vectorstore
from tests.faults import tamper as T
from vectorstore import estimators
from vectorstore.errors import ArtifactCorrupt, ArtifactUnauthenticated, ArtifactUntrusted

ROOT = Path(__file__).resolve().parents[2]


def test_every_tampered_artifact_is_refused_or_rebuilt(tmp_path: Path) -> None:
    outcomes = T.run_all(tmp_path)
    assert len(outcomes) >= 20
    bad = [o for o in outcomes if o.loaded or o.executed or not o.clear]
    assert not bad, "\n".join(f"{o.case}: loaded={o.loaded} executed={o.executed} {o.message}"
                              for o in bad)


def test_hmac_binds_name_bytes_and_metadata(tmp_path: Path) -> None:
    s = vectorstore.connect(str(tmp_path / "db"))
    with T.artifact_key(T.KEY):
        s.put_artifact("a.model", b"bytes-a", {"threshold": 1.5})
        s.put_artifact("b.model", b"bytes-b", {"threshold": 1.5})
        assert s.get_artifact("a.model")[0] == b"bytes-a"
        data, meta = s.get_artifact("b.model")
        # b's bytes and HMAC moved under a's name: the name is part of the HMAC
        T._raw_write(s, "a.model", data, json.dumps(
            {k: v for k, v in meta.items() if k != "sha256"}))
        with pytest.raises(ArtifactUnauthenticated, match=r"a\.model"):
            s.get_artifact("a.model")
        s.put_artifact("b.model", b"bytes-b", {"threshold": 1.5})
        _, meta = s.get_artifact("b.model")
        meta = {k: v for k, v in meta.items() if k != "sha256"}
        T._raw_write(s, "b.model", b"bytes-b", json.dumps({**meta, "threshold": 9}))
        with pytest.raises(ArtifactUnauthenticated, match="fails its HMAC"):
            s.get_artifact("b.model")
    with T.artifact_key("another-key-of-enough-length"):
        s.put_artifact("c.model", b"c", {})
    with T.artifact_key(T.KEY), pytest.raises(ArtifactUnauthenticated):
        s.get_artifact("c.model")
    with T.artifact_key("short"), pytest.raises(vectorstore.StoreError, match="16 characters"):
        s.get_artifact("c.model")


def test_behavior_state_loads_in_a_fresh_process(tmp_path: Path) -> None:
    from ingest.embedders.behavior import BehaviorEmbedder, embed_behavior

    s = vectorstore.connect(str(tmp_path / "db"))
    n = 60
    s.create_table("customers", pa.schema([("customer_id", pa.string()),
                                           ("holdings", pa.list_(pa.string()))]),
                   key="customer_id")
    s.write("customers", pa.table({"customer_id": [f"c{i}" for i in range(n)],
                                   "holdings": [[f"p{i % 7}", f"p{(i * 3) % 5}"]
                                                for i in range(n)]}))
    embed_behavior(s, BehaviorEmbedder(dim=4, events=None), customers="customers",
                   products=None)
    code = ("import sys, vectorstore; from ingest.embedders import load_embedder; "
            f"e = load_embedder(vectorstore.connect({str(tmp_path / 'db')!r}), 'customers', "
            "'vec_behavior'); print(e.kind, e.dim_)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["behavior", "4"]


def _propensity_models() -> list[tuple[str, object, np.ndarray]]:
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.frozen import FrozenEstimator

    rng = np.random.default_rng(0)
    X = np.c_[rng.normal(size=(600, 4)), rng.integers(0, 3, 600)]
    X[::9, 1] = np.nan
    y = (X[:, 0] + rng.normal(size=600) > 0.3).astype(int)
    hgb = HistGradientBoostingClassifier(max_iter=20, random_state=0,
                                         categorical_features=[4]).fit(X, y)
    return [
        ("hgb", hgb, X),
        ("sigmoid", CalibratedClassifierCV(FrozenEstimator(hgb), method="sigmoid").fit(X, y), X),
        ("isotonic", CalibratedClassifierCV(FrozenEstimator(hgb), method="isotonic").fit(X, y),
         X),
        ("cv", CalibratedClassifierCV(HistGradientBoostingClassifier(max_iter=10,
                                                                      random_state=0),
                                      cv=3).fit(X, y), X),
    ]


@pytest.mark.parametrize("name", ["hgb", "sigmoid", "isotonic", "cv"])
def test_propensity_models_round_trip_through_the_audited_path(name: str) -> None:
    model, X = next((m, x) for n, m, x in _propensity_models() if n == name)
    data = estimators.dumps(model)
    assert estimators.dumps(model) == data  # canonical: the same model, the same bytes
    back = estimators.loads(data, what=name, expect=type(model))
    np.testing.assert_array_equal(back.predict_proba(X), model.predict_proba(X))


def test_the_audited_path_refuses_foreign_types_and_damage() -> None:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(np.eye(4), [0, 1, 0, 1])
    data = estimators.dumps(model)
    with pytest.raises(ArtifactUntrusted, match=r"builtins\.eval"):
        estimators.loads(T._crafted_skops(data), what="m", expect=LogisticRegression)
    with pytest.raises(ArtifactCorrupt, match="BadZipFile"):
        estimators.loads(data[:50], what="m", expect=LogisticRegression)
    with pytest.raises(ArtifactCorrupt, match="pickle"):
        estimators.loads(b"\x80\x04junk", what="m", expect=LogisticRegression)
    with pytest.raises(ArtifactCorrupt, match="expected a dict"):
        estimators.loads(data, what="m", expect=dict)


def test_the_same_fit_gives_the_same_model_id_and_bytes(tmp_path: Path) -> None:
    from services import risk

    runs = []
    for i in range(2):
        s = T.make_store(tmp_path / f"s{i}")
        r = risk.score_table(s, "customers", None, column="vec_tabular")
        runs.append((r.model_id, s.get_artifact(r.artifact)))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1][0] == runs[1][1][0]
