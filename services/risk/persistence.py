"""Fitted detectors stored beside the table in a format that cannot run code.

A model is saved as a content-addressed store artifact ``<table>.risk.<sha256[:16]>``
(``store.save_artifact``: written before the commit that names it, swept by ``optimize`` once
no table mentions it, so a killed run leaves nothing that stays): the :class:`RiskDetector`
in the skops format through :mod:`vectorstore.estimators` (the project's one audited path for
scikit-learn and PyOD models: no pickle, only allow-listed types are ever built) plus
metadata (format, configuration, feature source, threshold and the versions of Python,
numpy, scikit-learn and PyOD that made it). The bytes are canonical, so the same fit gives
the same bytes, and the model id (detector kind + the first 12 hex digits of their sha256)
is the same on every re-run. The table's metadata (``metadata["risk"]``) records the latest
model id, its artifact and its sha256. Models stored by earlier versions under
``<table>.risk.<model id>`` still load.

Loading refuses, with :class:`ModelIntegrityError` naming the artifact and how to rebuild it
(re-run risk scoring), when the bytes do not match the sha256 stored with them or recorded in
the table, when ``KINDRED_ARTIFACT_KEY`` is set and the HMAC does not match, when the format
is unknown (models pickled by older versions are never loaded), when the file names a type
outside the allow-list, or when the library versions differ from the running ones in a way
the model may not survive (Python, scikit-learn or PyOD major.minor, numpy major).
"""

from __future__ import annotations

import hashlib
import platform
from typing import Any

import numpy as np
import pyod
import sklearn

from ingest.datamodel import META_RISK
from vectorstore import ArtifactCorrupt, ArtifactNotFound, VectorStore, estimators

from .config import config_json
from .detector import RiskDetector
from .errors import ModelIntegrityError, ModelNotFound
from .features import FeatureSource

FORMAT = "kindred-risk-model/2"
REBUILD = "re-run `kindred risk score` (Kindred.score_risk) to fit and store a new model"
TRUSTED = (
    "services.risk.detector.RiskDetector", "services.risk.detector._PyODMember",
    "services.risk.detector._TailMember",
    *(f"services.risk.config.{c}Config" for c in
      ("IForest", "HBOS", "ECOD", "COPOD", "KNN", "LOF", "PCA", "Ensemble")),
)
"""Kindred's own classes a stored detector is made of (the rest: vectorstore.estimators)."""
META_KEY = META_RISK


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
                f"{current[lib]}: the model may not load or score the same; {REBUILD}")


def artifact_name(table: str, model_id: str) -> str:
    """The name earlier versions stored a model under (fixed, never swept)."""
    return f"{table}.risk.{model_id}"


def artifact_prefix(table: str) -> str:
    """The prefix of content-addressed risk models (``save_artifact`` appends the digest)."""
    return f"{table}.risk"


def _find_artifact(store: VectorStore, table: str, model_id: str,
                   recorded: dict[str, Any]) -> str:
    """The artifact holding ``model_id``: the one the table records, else the content-addressed
    name its digest gives (``<kind>-<sha12>`` -> ``<table>.risk.<sha12>...``), else the name
    of earlier versions."""
    if recorded.get("model_id") == model_id and isinstance(recorded.get("artifact"), str):
        return recorded["artifact"]
    digest = model_id.rsplit("-", 1)[-1]
    prefix = f"{artifact_prefix(table)}.{digest}"
    if len(digest) == 12:
        found = [a for a in store.list_artifacts() if a.startswith(prefix)
                 and len(a) == len(prefix) + 4]
        if len(found) == 1:
            return found[0]
    return artifact_name(table, model_id)


def save_model(store: VectorStore, table: str, detector: RiskDetector,
               source: FeatureSource, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Persist a fitted detector; returns the metadata recorded (with ``model_id``, ``sha256``)."""
    data = estimators.dumps(detector)
    digest = hashlib.sha256(data).hexdigest()
    model_id = f"{detector.config_.kind}-{digest[:12]}"
    meta = {
        "format": FORMAT, "serialization": estimators.SERIALIZATION, "table": table,
        "model_id": model_id,
        "detector": detector.config_.kind, "config": config_json(detector.config_),
        "source": source.model_dump(mode="json"), "members": list(detector.member_kinds_),
        "score_center": detector.score_center_, "score_scale": detector.score_scale_,
        "threshold": detector.threshold_,
        "n_fit_rows": detector.n_fit_rows_, "n_features": detector.n_features_in_,
        "messages": list(detector.messages_), "versions": library_versions(), **(extra or {}),
    }
    name = store.save_artifact(artifact_prefix(table), data, meta)
    return {**meta, "artifact": name, "sha256": digest}


def load_model(store: VectorStore, table: str, model_id: str | None = None,
               ) -> tuple[RiskDetector, FeatureSource, dict[str, Any]]:
    """The persisted detector (latest for ``table`` when ``model_id`` is None), its feature
    source and metadata, after checking sha256 and versions (never unpickling before)."""
    recorded = store.table_info(table).metadata.get(META_KEY) or {}
    if model_id is None:
        model_id = recorded.get("model_id")
        if not model_id:
            raise ModelNotFound(f"table {table!r} has no risk model yet: run risk scoring first")
    name = _find_artifact(store, table, model_id, recorded)
    try:
        data, meta = store.get_artifact(name)
    except ArtifactNotFound:
        raise ModelNotFound(f"no persisted risk model {model_id!r} for table {table!r} "
                            f"(artifact {name!r} is missing): {REBUILD}") from None
    except ArtifactCorrupt as exc:
        raise ModelIntegrityError(f"risk model {name!r}: {exc}; {REBUILD}") from None
    if recorded.get("model_id") == model_id and recorded.get("sha256") not in (None, meta["sha256"]):
        raise ModelIntegrityError(
            f"risk model {name!r} has sha256 {meta['sha256']}, but table {table!r} recorded "
            f"{recorded['sha256']} when it was scored: refusing to load it; {REBUILD}")
    if meta.get("format") != FORMAT:
        old = " (a pickle from an older version, never loaded)" if \
            meta.get("format") == "kindred-risk-model/1" else ""
        raise ModelIntegrityError(f"risk model {name!r} has format {meta.get('format')!r}, "
                                  f"expected {FORMAT!r}{old}; {REBUILD}")
    if meta.get("table") != table:
        raise ModelIntegrityError(f"risk model {name!r} was made for table "
                                  f"{meta.get('table')!r}; {REBUILD}")
    check_versions(meta.get("versions") or {}, name)
    try:
        detector = estimators.loads(data, what=f"risk model {name!r}", expect=RiskDetector,
                                    trusted=TRUSTED, rebuild=REBUILD)
        source = FeatureSource.model_validate(meta["source"])
    except ArtifactCorrupt as exc:
        raise ModelIntegrityError(str(exc)) from None
    except (KeyError, ValueError) as exc:
        raise ModelIntegrityError(f"risk model {name!r} has unreadable metadata "
                                  f"({type(exc).__name__}); {REBUILD}") from None
    if not hasattr(detector, "members_"):
        raise ModelIntegrityError(f"risk model {name!r} holds an unfitted detector; {REBUILD}")
    return detector, source, {**meta, "artifact": name}
