"""The one audited way to persist scikit-learn and PyOD models: skops, with an allow-list.

``pickle`` (and joblib) run code while loading, so a model file anyone could write is a way
to run code in every process that loads it. This module stores fitted estimators in the
`skops <https://skops.readthedocs.io>`_ format instead: a zip of JSON describing the object
tree plus ``.npy`` arrays (read with ``allow_pickle=False``). Loading only ever constructs
types on an explicit allow-list: the scikit-learn and PyOD types Kindred's models are made of
(:data:`TRUSTED`) plus the caller's own classes. A file that names any other type (``os.system``,
``builtins.eval``, a type of a library not listed) is refused before anything is built.

The bytes are canonical (object ids renumbered in order, array files named by position,
fixed zip timestamps, deflate), so the same fitted model always gives the same bytes and the
same digest: a model id derived from them is stable across re-runs.

Every layer may use it (it imports skops lazily); risk detectors and the propensity model
(HistGradientBoosting + a calibrator) go through it. Integrity and authenticity are the
store's job (sha256, and the HMAC of :mod:`vectorstore.sealing`).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable
from typing import Any

from .errors import ArtifactCorrupt, ArtifactUntrusted

SERIALIZATION = "skops"

TRUSTED: frozenset[str] = frozenset({
    # PyOD detectors
    "pyod.models.iforest.IForest", "pyod.models.hbos.HBOS", "pyod.models.knn.KNN",
    "pyod.models.lof.LOF", "pyod.models.pca.PCA", "pyod.models.ecod.ECOD",
    "pyod.models.copod.COPOD",
    # what they hold beyond skops' own defaults
    "sklearn.tree._tree.Tree", "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    # gradient boosting and calibration (propensity models)
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.calibration._CalibratedClassifier", "sklearn.calibration._SigmoidCalibration",
    "sklearn.utils.validation.check_array", "functools.partial",
})
"""Types beyond skops' defaults that the models Kindred makes consist of. A partial or a
function is only ever one of the listed functions (skops audits the function node too)."""

_EPOCH = (1980, 1, 1, 0, 0, 0)


def dumps(obj: Any) -> bytes:
    """``obj`` in the skops format, as canonical bytes (equal objects -> equal bytes)."""
    import skops.io as sio

    return _canonical(sio.dumps(obj))


def _canonical(raw: bytes) -> bytes:
    """Renumber skops' memory-address ids and file names in order of appearance, and write
    the zip with fixed timestamps and sorted entries."""
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        schema = json.loads(z.read("schema.json"))
        files = {n: z.read(n) for n in z.namelist() if n != "schema.json"}
    ids: dict[int, int] = {}
    names: dict[str, str] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "__id__" and isinstance(v, int):
                    out[k] = ids.setdefault(v, len(ids) + 1)
                elif k == "file" and isinstance(v, str) and v in files:
                    ext = v.rsplit(".", 1)[-1]
                    out[k] = names.setdefault(v, f"{len(names) + 1:06d}.{ext}")
                else:
                    out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    schema = walk(_sorted_sets(schema))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as z:
        entries = [("schema.json", json.dumps(schema, indent=1).encode())]
        entries += sorted((names[old], data) for old, data in files.items() if old in names)
        for name, data in entries:
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    return buf.getvalue()


def _sorted_sets(node: Any) -> Any:
    """The schema with every set's elements in a fixed order: a set (pydantic's
    ``__pydantic_fields_set__`` in a detector configuration, for one) iterates in an order
    that changes with the process's string hash seed, so the same fit pickled in two
    processes would otherwise give different bytes. Elements are ordered by their content,
    ids left out (ids are memory addresses until :func:`_canonical` renumbers them)."""
    if isinstance(node, list):
        return [_sorted_sets(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _sorted_sets(v) for k, v in node.items()}
    if out.get("__loader__") == "SetNode" and isinstance(out.get("content"), list):
        out["content"] = sorted(out["content"],
                                key=lambda v: json.dumps(_without_ids(v), sort_keys=True))
    return out


def _without_ids(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_ids(v) for k, v in node.items() if k != "__id__"}
    if isinstance(node, list):
        return [_without_ids(v) for v in node]
    return node


def untrusted_types(data: bytes, trusted: Iterable[str] = ()) -> list[str]:
    """The types ``data`` would build that are neither skops defaults nor allowed here."""
    import skops.io as sio

    allowed = TRUSTED | set(trusted)
    return sorted(t for t in sio.get_untrusted_types(data=data) if t not in allowed)


def loads(data: bytes, *, what: str, expect: type | tuple[type, ...],
          trusted: Iterable[str] = (), rebuild: str = "") -> Any:
    """The object stored by :func:`dumps`, built only from allowed types.

    ``what`` names the artifact in messages, ``expect`` is the type the object must have,
    ``trusted`` the caller's own classes (fully qualified names), ``rebuild`` how to make a
    new one. Raises :class:`ArtifactUntrusted` when the file names a type outside the
    allow-list, :class:`ArtifactCorrupt` when it is not a readable skops file or holds
    another kind of object; never a traceback from the parser, never code from the file.
    """
    import skops.io as sio

    hint = f" ({rebuild})" if rebuild else ""
    if not data.startswith(b"PK"):
        raise ArtifactCorrupt(f"{what} is not a skops model file (it may be an old pickle, "
                              f"which is never loaded){hint}")
    allowed = TRUSTED | set(trusted)
    try:
        found = sio.get_untrusted_types(data=data)
        bad = sorted(t for t in found if t not in allowed)
        if bad:
            raise ArtifactUntrusted(f"{what} refers to type(s) {', '.join(bad)}, which this "
                                    f"kind of model never holds: refusing to load it{hint}")
        obj = sio.loads(data, trusted=sorted(set(found)))
    except ArtifactUntrusted:
        raise
    except Exception as exc:  # skops and zipfile raise many types for a damaged file
        raise ArtifactCorrupt(f"{what} is not a readable skops model "
                              f"({type(exc).__name__}){hint}") from exc
    if not isinstance(obj, expect):
        names = expect.__name__ if isinstance(expect, type) else \
            " or ".join(t.__name__ for t in expect)
        raise ArtifactCorrupt(f"{what} holds a {type(obj).__name__}, expected a {names}{hint}")
    return obj
