"""Persisted propensity models: saved in a format that cannot run code, loaded only when verified.

The fitted estimators are written with ``skops.io`` (a schema of types and arrays, not a
pickle) and loaded with an explicit list of trusted types: anything else in the file is
refused. The bytes go into a store artifact; its sha256 and the library versions that wrote
it are returned to the caller, who records them (the table metadata), and :func:`load_model`
refuses bytes whose checksum differs from the recorded one or that were written by another
scikit-learn / skops / numpy version. These two functions are the only place that knows the
format.
"""

from __future__ import annotations

import hashlib
from typing import Any

from vectorstore import VectorStore
from vectorstore.errors import ArtifactCorrupt, ArtifactNotFound

from ..errors import ModelIntegrityError

FORMAT = "skops-1"
VERSION_LIBS = ("scikit-learn", "skops", "numpy")
TRUSTED_TYPES = [
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
    "functools.partial",
]


def library_versions() -> dict[str, str]:
    from ingest.embedders.base import library_versions as versions

    return versions(VERSION_LIBS)


def save_model(store: VectorStore, name: str, estimators: Any,
               metadata: dict[str, Any]) -> dict[str, Any]:
    """Write ``estimators`` (scikit-learn objects, lists/dicts of them) as artifact ``name``.

    Returns what the caller must record to load it again: format, sha256 and versions.
    """
    import skops.io as sio

    data = sio.dumps(estimators)
    record = {"artifact": name, "format": FORMAT, "sha256": hashlib.sha256(data).hexdigest(),
              "versions": library_versions()}
    store.put_artifact(name, data, {**metadata, **record})
    return record


def load_model(store: VectorStore, record: dict[str, Any]) -> Any:
    """The estimators saved under ``record`` (from :func:`save_model`), after checking the
    checksum and the library versions; ModelIntegrityError otherwise."""
    import skops.io as sio

    name = record.get("artifact", "?")
    if record.get("format") != FORMAT:
        raise ModelIntegrityError(f"model {name!r}: unknown format {record.get('format')!r}")
    try:
        data, _ = store.get_artifact(name)
    except (ArtifactNotFound, ArtifactCorrupt) as exc:
        raise ModelIntegrityError(f"model {name!r} cannot be read: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != record.get("sha256"):
        raise ModelIntegrityError(f"model {name!r}: checksum {digest[:12]} does not match the "
                                  f"recorded {str(record.get('sha256'))[:12]}; refit it")
    now = library_versions()
    if record.get("versions") != now:
        raise ModelIntegrityError(f"model {name!r} was written with {record.get('versions')}, "
                                  f"this installation has {now}; refit it")
    untrusted = [t for t in sio.get_untrusted_types(data=data) if t not in TRUSTED_TYPES]
    if untrusted:
        raise ModelIntegrityError(f"model {name!r} holds types that are not trusted: "
                                  f"{', '.join(untrusted)}")
    return sio.loads(data, trusted=TRUSTED_TYPES)
