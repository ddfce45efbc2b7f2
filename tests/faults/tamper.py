"""Tampered, truncated and missing artifacts of every kind, and what loading them does.

Each case damages one artifact of a small real store (risk model, learned-query cache,
embedder state) the way an attacker or a failing disk would, then loads it through the
product path. It records whether the damaged bytes were used (``loaded``), whether code in
them ran (``executed``: a marker file), and whether the outcome was one clear Kindred error
or warning naming the artifact. Used by test_tamper.py and ``python -m tests.faults.report``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import vectorstore
from vectorstore.base import ARTIFACT_TABLE
from vectorstore.errors import ArtifactRebuilt, StoreError

KEY = "test-artifact-key-0123456789"


@dataclass
class TamperOutcome:
    case: str
    loaded: bool
    executed: bool
    clear: bool
    message: str


@contextlib.contextmanager
def artifact_key(value: str | None) -> Iterator[None]:
    old = os.environ.get("KINDRED_ARTIFACT_KEY")
    if value is None:
        os.environ.pop("KINDRED_ARTIFACT_KEY", None)
    else:
        os.environ["KINDRED_ARTIFACT_KEY"] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("KINDRED_ARTIFACT_KEY", None)
        else:
            os.environ["KINDRED_ARTIFACT_KEY"] = old


def make_store(path: Path) -> Any:
    """customers with holdings and a vector, a risk model, a learned query, embedder state."""
    from ingest.embedders import TabularEmbedder, embed
    from services import risk
    from services.matching.build import build_query

    s = vectorstore.connect(str(path))
    rng = np.random.default_rng(0)
    n = 200
    s.create_table("customers", pa.schema([("customer_id", pa.string()), ("age", pa.float64()),
                                           ("income", pa.float64()),
                                           ("holdings", pa.list_(pa.string()))]),
                   key="customer_id")
    s.write("customers", pa.table({
        "customer_id": [f"c{i}" for i in range(n)], "age": rng.normal(40, 10, n),
        "income": rng.normal(5000, 900, n),
        "holdings": [["mortgage"] if i % 3 == 0 else ["savings"] for i in range(n)]}))
    embed(s, "customers", TabularEmbedder(include=["age", "income"]))
    risk.score_table(s, "customers", "hbos", column="vec_tabular")
    build_query(s, "mortgage", "learned", vector_column="vec_tabular")
    return s


def _name(s: Any, part: str) -> str:
    return next(a for a in s.list_artifacts() if part in a)


def _raw_write(s: Any, name: str, data: bytes, meta: str) -> None:
    """Replace an artifact's row directly, with a digest that matches the new bytes."""
    row = pa.table({"name": [name], "data": [data], "sha256": [hashlib.sha256(data).hexdigest()],
                    "metadata": [meta], "created_at": [None]},
                   schema=s.table_info(ARTIFACT_TABLE).schema)
    s.write(ARTIFACT_TABLE, row, mode="upsert")


def _consistent(s: Any, name: str, data: bytes, meta: dict[str, Any]) -> None:
    """Replace an artifact and every record of its digest (the table's risk metadata, the
    embedder entry), as someone with write access to the store would."""
    meta = {k: v for k, v in meta.items() if k not in ("sha256", "hmac")}
    _raw_write(s, name, data, json.dumps(meta))
    sha = hashlib.sha256(data).hexdigest()
    info = s.table_info("customers").metadata
    if ".risk." in name:
        s.set_metadata("customers", {"risk": {**info["risk"], "sha256": sha}})
    if name.endswith(".embedder"):
        emb = dict(info["embedders"])
        emb["vec_tabular"] = {**emb["vec_tabular"], "state_sha256": sha}
        s.set_metadata("customers", {"embedders": emb})


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def _crafted_skops(data: bytes) -> bytes:
    """A skops file whose top object claims to be ``builtins.eval``."""
    src = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(src.read("schema.json"))
    schema["__module__"], schema["__class__"] = "builtins", "eval"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as out:
        for n in src.namelist():
            out.writestr(n, json.dumps(schema) if n == "schema.json" else src.read(n))
    return buf.getvalue()


def _risk(s: Any) -> Any:
    from services import risk

    return risk.load_model(s, "customers")


def _cache(s: Any) -> Any:
    from services.matching.build import build_query

    return build_query(s, "mortgage", "learned", vector_column="vec_tabular")


def _embedder(s: Any) -> Any:
    from ingest.embedders import load_embedder

    return load_embedder(s, "customers", "vec_tabular")


def _npz_with(data: bytes, **changes: np.ndarray) -> bytes:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(changes)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _negated_query(data: bytes) -> bytes:
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        arrays = {k: -z[k] for k in z.files}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


# (name, artifact part, loader, damage(store, name, data, meta, marker), key or None)
Damage = Callable[[Any, str, bytes, dict[str, Any], Path], None]


def _cases() -> list[tuple[str, str, Callable[[Any], Any], Damage, str | None]]:
    def evil_pickle(s, n, d, m, marker):
        _consistent(s, n, pickle.dumps(_Evil(marker)), m)

    def evil_pickle_v1(s, n, d, m, marker):
        _consistent(s, n, pickle.dumps(_Evil(marker)), {**m, "format": "kindred-risk-model/1"})

    def crafted(s, n, d, m, marker):
        _consistent(s, n, _crafted_skops(d), m)

    def truncated(s, n, d, m, marker):
        _consistent(s, n, d[: len(d) // 2], m)

    def empty(s, n, d, m, marker):
        _consistent(s, n, b"", m)

    def bad_json(s, n, d, m, marker):
        _raw_write(s, n, d, "{not json")

    def flipped(s, n, d, m, marker):  # bytes changed, stored digest kept
        row = pa.table({"name": [n], "data": [d[:-1] + bytes([d[-1] ^ 1])],
                        "sha256": [m["sha256"]], "metadata": [json.dumps(m)],
                        "created_at": [None]}, schema=s.table_info(ARTIFACT_TABLE).schema)
        s.write(ARTIFACT_TABLE, row, mode="upsert")

    def deleted(s, n, d, m, marker):
        s.delete_artifact(n)

    def wrong_shape(s, n, d, m, marker):
        _consistent(s, n, _npz_with(d, center=np.zeros(7)), m)

    def nan_state(s, n, d, m, marker):
        _consistent(s, n, _npz_with(d, scale=np.array([np.nan, 1.0])), m)

    def short_query(s, n, d, m, marker):
        _consistent(s, n, _npz_with(d, vector=np.zeros(3, np.float32)), m)

    def negated(s, n, d, m, marker):  # a well-formed forgery: only the HMAC can tell
        _consistent(s, n, _negated_query(d), m)

    def resealed_without_key(s, n, d, m, marker):
        with artifact_key(None):
            s.put_artifact(n, d[:], {k: v for k, v in m.items() if k != "sha256"})

    risk_cases = [("pickle payload, digests consistent", evil_pickle, None),
                  ("pickle payload labelled as the old pickle format", evil_pickle_v1, None),
                  ("skops file naming builtins.eval", crafted, None),
                  ("truncated model", truncated, None), ("empty model", empty, None),
                  ("metadata not JSON", bad_json, None), ("bit flip, digest kept", flipped, None),
                  ("model deleted", deleted, None),
                  ("stored without the key, read with it", resealed_without_key, KEY)]
    cache_cases = [("truncated", truncated, None), ("empty", empty, None),
                   ("metadata not JSON", bad_json, None), ("wrong-shaped vector", short_query, None),
                   ("bit flip, digest kept", flipped, None),
                   ("negated query, forged with digests (keyed store)", negated, KEY)]
    emb_cases = [("truncated", truncated, None), ("empty", empty, None),
                 ("wrong-shaped array", wrong_shape, None), ("NaN in state", nan_state, None),
                 ("metadata not JSON", bad_json, None), ("bit flip, digest kept", flipped, None),
                 ("state deleted", deleted, None), ("pickle payload", evil_pickle, None),
                 ("forged without the key (keyed store)", wrong_shape, KEY)]
    out = [(f"risk model: {n}", ".risk.", _risk, f, k) for n, f, k in risk_cases]
    out += [(f"learned-query cache: {n}", ".matching.learned.", _cache, f, k)
            for n, f, k in cache_cases]
    out += [(f"embedder state: {n}", ".embedder", _embedder, f, k) for n, f, k in emb_cases]
    return out


def run_all(root: Path) -> list[TamperOutcome]:
    """Every tamper case on its own fresh store under ``root``."""
    from ingest.errors import IngestError
    from services.errors import ServiceError

    outcomes = []
    for i, (name, part, load, damage, key) in enumerate(_cases()):
        with artifact_key(key):
            s = make_store(root / f"s{i}")
            art = _name(s, part)
            data, meta = s.get_artifact(art)
            marker = root / f"executed-{i}"
            if key is not None and "without the key" not in name and "forged" in name:
                with artifact_key(None):  # the forger does not know the key
                    damage(s, art, data, meta, marker)
            else:
                damage(s, art, data, meta, marker)
            loaded, clear, message = False, False, ""
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    result = load(s)
                except (StoreError, ServiceError, IngestError) as exc:
                    message = str(exc)
                    clear = art in message and "\n" not in message.strip()
                else:
                    rebuilt = [w for w in caught if issubclass(w.category, ArtifactRebuilt)]
                    if rebuilt:
                        message = str(rebuilt[0].message)
                        clear = art in message
                        loaded = bool(getattr(result, "details", {}).get("cached"))
                    else:
                        loaded = True
                        message = "loaded without complaint"
            s.close()
            outcomes.append(TamperOutcome(name, loaded, marker.exists(), clear, message))
    return outcomes
