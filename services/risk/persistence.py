"""Fitted detectors stored beside the table, checked before they are ever unpickled.

A model is saved as a store artifact ``<table>.risk.<model id>``: the pickled
:class:`RiskDetector` plus metadata (format, configuration, feature source, threshold and the
versions of Python, numpy, scikit-learn and PyOD that made it). The table's metadata
(``metadata["risk"]``) records the latest model id and its sha256.

Loading refuses, with :class:`ModelIntegrityError` and before any unpickling, when the bytes
do not match the sha256 stored with them or recorded in the table, when the format is
unknown, or when the library versions differ from the running ones in a way pickles do not
survive (Python or scikit-learn or PyOD major.minor, numpy major).
"""

from __future__ import annotations

import hashlib
import pickle
import platform
from typing import Any

import numpy as np
import pyod
import sklearn

from vectorstore import ArtifactCorrupt, ArtifactNotFound, VectorStore

from .config import config_json
from .detector import RiskDetector
from .errors import ModelIntegrityError, ModelNotFound
from .features import FeatureSource

FORMAT = "kindred-risk-model/1"
META_KEY = "risk"


def library_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "numpy": np.__version__,
            "sklearn": sklearn.__version__, "pyod": pyod.__version__}


def _parts(v: str, n: int) -> tuple[str, ...]:
    return tuple(v.split("+")[0].split(".")[:n])


_COMPAT = {"python": 2, "sklearn": 2, "pyod": 2, "numpy": 1}


def check_versions(saved: dict[str, Any], name: str) -> None:
    """ModelIntegrityError unless ``saved`` versions are compatible with the running ones."""
    current = library_versions()
    for lib, n in _COMPAT.items():
        got = saved.get(lib)
        if not isinstance(got, str):
            raise ModelIntegrityError(f"risk model {name!r} does not record its {lib} version: "
                                      "refusing to load it")
        if _parts(got, n) != _parts(current[lib], n):
            raise ModelIntegrityError(
                f"risk model {name!r} was made with {lib} {got}, this process runs "
                f"{current[lib]}: refit the model (a pickle is not safe across these versions)")


def artifact_name(table: str, model_id: str) -> str:
    return f"{table}.risk.{model_id}"


def save_model(store: VectorStore, table: str, detector: RiskDetector,
               source: FeatureSource, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Persist a fitted detector; returns the metadata recorded (with ``model_id``, ``sha256``)."""
    data = pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL)
    digest = hashlib.sha256(data).hexdigest()
    model_id = f"{detector.config_.kind}-{digest[:12]}"
    meta = {
        "format": FORMAT, "table": table, "model_id": model_id,
        "detector": detector.config_.kind, "config": config_json(detector.config_),
        "source": source.model_dump(mode="json"), "members": list(detector.member_kinds_),
        "score_center": detector.score_center_, "score_scale": detector.score_scale_,
        "threshold": detector.threshold_,
        "n_fit_rows": detector.n_fit_rows_, "n_features": detector.n_features_in_,
        "messages": list(detector.messages_), "versions": library_versions(), **(extra or {}),
    }
    name = artifact_name(table, model_id)
    sha = store.put_artifact(name, data, meta)
    record = {**meta, "artifact": name, "sha256": sha}
    return record


def load_model(store: VectorStore, table: str, model_id: str | None = None,
               ) -> tuple[RiskDetector, FeatureSource, dict[str, Any]]:
    """The persisted detector (latest for ``table`` when ``model_id`` is None), its feature
    source and metadata, after checking sha256 and versions (never unpickling before)."""
    recorded = store.table_info(table).metadata.get(META_KEY) or {}
    if model_id is None:
        model_id = recorded.get("model_id")
        if not model_id:
            raise ModelNotFound(f"table {table!r} has no risk model yet: run risk scoring first")
    name = artifact_name(table, model_id)
    try:
        data, meta = store.get_artifact(name)
    except ArtifactNotFound:
        raise ModelNotFound(f"no persisted risk model {model_id!r} for table {table!r}") from None
    except ArtifactCorrupt as exc:
        raise ModelIntegrityError(f"risk model {name!r}: {exc}") from None
    if recorded.get("model_id") == model_id and recorded.get("sha256") not in (None, meta["sha256"]):
        raise ModelIntegrityError(
            f"risk model {name!r} has sha256 {meta['sha256']}, but table {table!r} recorded "
            f"{recorded['sha256']} when it was scored: refusing to load it")
    if meta.get("format") != FORMAT:
        raise ModelIntegrityError(f"risk model {name!r} has format {meta.get('format')!r}, "
                                  f"expected {FORMAT!r}")
    if meta.get("table") != table:
        raise ModelIntegrityError(f"risk model {name!r} was made for table {meta.get('table')!r}")
    check_versions(meta.get("versions") or {}, name)
    detector = pickle.loads(data)  # noqa: S301 (sha256 and versions checked above)
    if not isinstance(detector, RiskDetector):
        raise ModelIntegrityError(f"risk model {name!r} does not hold a RiskDetector")
    return detector, FeatureSource.model_validate(meta["source"]), meta
