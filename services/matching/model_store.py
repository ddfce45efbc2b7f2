"""Persisted propensity models: saved in a format that cannot run code, loaded only when verified.

The fitted estimators go through :mod:`vectorstore.estimators`, the project's one audited
path for scikit-learn models (the skops format, canonical bytes, an explicit allow-list of
types: anything else in the file is refused before it is built), into a content-addressed
store artifact (``store.save_artifact``: ``<prefix>.<sha256[:16]>``, written before the commit
that names it and swept by ``optimize`` once no table mentions it). The same fit gives the
same bytes, so a re-run after a killed ``fit`` stores nothing new. The record returned
(artifact name, format, sha256, library versions) goes into the table metadata;
:func:`load_model` refuses bytes whose checksum differs from the recorded one or that were
written by another scikit-learn / skops / numpy version.
"""

from __future__ import annotations

import hashlib
from typing import Any

from vectorstore import VectorStore, estimators
from vectorstore.errors import ArtifactCorrupt, ArtifactNotFound

from ..errors import ModelIntegrityError

FORMAT = "kindred-propensity/2"
FORMATS = (FORMAT, "skops-1")
"""Formats :func:`load_model` reads: both are skops files (the first with canonical bytes)."""
VERSION_LIBS = ("scikit-learn", "skops", "numpy")
REBUILD = "refit it with `kindred fit <product>`"


def library_versions() -> dict[str, str]:
    from ingest.embedders.base import library_versions as versions

    return versions(VERSION_LIBS)


def save_model(store: VectorStore, prefix: str, models: Any,
               metadata: dict[str, Any]) -> dict[str, Any]:
    """Write ``models`` (a list of fitted scikit-learn estimators) as a content-addressed
    artifact named ``<prefix>.<sha16>``.

    Returns what the caller must record to load it again: artifact, format, sha256, versions.
    """
    data = estimators.dumps(models)
    record = {"format": FORMAT, "sha256": hashlib.sha256(data).hexdigest(),
              "versions": library_versions()}
    record["artifact"] = store.save_artifact(prefix, data, {**metadata, **record})
    return record


def load_model(store: VectorStore, record: dict[str, Any]) -> Any:
    """The estimators saved under ``record`` (from :func:`save_model`), after checking the
    checksum, the library versions and every type in the file; ModelIntegrityError otherwise."""
    name = record.get("artifact", "?")
    if record.get("format") not in FORMATS:
        raise ModelIntegrityError(f"model {name!r}: unknown format {record.get('format')!r}; "
                                  f"{REBUILD}")
    try:
        data, _ = store.get_artifact(name)
    except (ArtifactNotFound, ArtifactCorrupt) as exc:
        raise ModelIntegrityError(f"model {name!r} cannot be read: {exc}; {REBUILD}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != record.get("sha256"):
        raise ModelIntegrityError(f"model {name!r}: checksum {digest[:12]} does not match the "
                                  f"recorded {str(record.get('sha256'))[:12]}; {REBUILD}")
    now = library_versions()
    if record.get("versions") != now:
        raise ModelIntegrityError(f"model {name!r} was written with {record.get('versions')}, "
                                  f"this installation has {now}; {REBUILD}")
    try:
        return estimators.loads(data, what=f"model {name!r}", expect=list, rebuild=REBUILD)
    except ArtifactCorrupt as exc:  # ArtifactUntrusted included
        raise ModelIntegrityError(str(exc)) from None
