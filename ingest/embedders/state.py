"""Embedder kinds by name (imported on first use) and the checks fitted state passes on load.

:func:`embedder_class` finds the class of a kind without the caller importing its module
(``load_embedder(store, "customers", "vec_behavior")`` works in a fresh process), in the
spirit of fsspec's registry: built-in kinds are ``module:Class`` strings, imported lazily;
:func:`~ingest.embedders.base.register` adds others.

:func:`check_state` runs before a stored state is used: every array has the shape the kind's
``transform`` indexes with (derived from the state's own lists and the recorded dimension)
and holds finite values, so a damaged or crafted state is one clear
:class:`ModelIntegrityError` at load, never an ``IndexError`` in the middle of a write.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import ModelIntegrityError

BUILTIN_KINDS: dict[str, str] = {
    "tabular": "ingest.embedders.tabular:TabularEmbedder",
    "text": "ingest.embedders.text:TextEmbedder",
    "behavior": "ingest.embedders.behavior:BehaviorEmbedder",
    "combined": "ingest.embedders.combined:CombinedEmbedder",
}


def embedder_class(kind: object, registered: dict[str, Any]) -> Any | None:
    """The class of an embedder kind: a registered one, else a built-in imported now."""
    if not isinstance(kind, str):
        return None
    if kind in registered:
        return registered[kind]
    target = BUILTIN_KINDS.get(kind)
    if target is None:
        return None
    module, _, name = target.partition(":")
    importlib.import_module(module)  # its @register fills ``registered``
    return registered.get(kind) or getattr(importlib.import_module(module), name)


class _Bad(Exception):
    pass


def _shape(arrays: dict[str, np.ndarray], name: str, shape: tuple[int, ...],
           kinds: str = "f") -> np.ndarray:
    if name not in arrays:
        raise _Bad(f"array {name!r} is missing")
    a = arrays[name]
    if a.shape != shape:
        raise _Bad(f"array {name!r} has shape {a.shape}, expected {shape}")
    if a.dtype.kind not in kinds:
        raise _Bad(f"array {name!r} has type {a.dtype}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise _Bad(f"array {name!r} holds NaN or infinite values")
    return a


def _strings(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Bad(f"{what} is not a list of names")
    return value


def _int(value: object, what: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _Bad(f"{what} is {value!r}, expected an integer >= {low}")
    return value


def _tabular(dim: int, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    numeric = _strings(info.get("numeric"), "the numeric column list")
    categorical = _strings(info.get("categorical"), "the categorical column list")
    levels = info.get("levels")
    if not isinstance(levels, dict) or set(levels) != set(categorical):
        raise _Bad("the category levels do not match the categorical columns")
    for c, v in levels.items():
        _strings(v, f"the levels of {c!r}")
    n = len(numeric)
    _shape(arrays, "center", (n,))
    scale = _shape(arrays, "scale", (n,))
    if (scale <= 0).any():
        raise _Bad("array 'scale' holds values <= 0")
    missing = _shape(arrays, "has_missing", (n,), "bifu")
    n_features = n + int(np.count_nonzero(missing)) + sum(len(v) for v in levels.values())
    if _int(info.get("n_features"), "n_features") != n_features:
        raise _Bad(f"n_features is {info.get('n_features')}, the columns give {n_features}")
    components = arrays.get("components")
    rows = components.shape[0] if components is not None and components.ndim == 2 else -1
    _shape(arrays, "components", (max(rows, 0), n_features))
    _shape(arrays, "pca_mean", (n_features,))
    expected = rows if rows > 0 else n_features
    if dim != expected:
        raise _Bad(f"the recorded dimension {dim} does not match the state ({expected})")


def _behavior(dim: int, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    items = arrays.get("items")
    if items is None or items.ndim != 1 or items.dtype.kind not in "US":
        raise _Bad("array 'items' is missing or not a list of item ids")
    n = items.shape[0]
    _shape(arrays, "item_vectors", (n, dim))
    _shape(arrays, "singular_values", (dim,))
    _shape(arrays, "idf", (n,))
    avg = info.get("avg_len")
    if isinstance(avg, bool) or not isinstance(avg, int | float) or not np.isfinite(avg) or avg < 0:
        raise _Bad(f"avg_len is {avg!r}")
    _int(info.get("n_customers_fit"), "n_customers_fit")
    _int(info.get("nnz"), "nnz")


def _combined(dim: int, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    dims = info.get("dims")
    if not isinstance(dims, dict) or not dims:
        raise _Bad("the source column dimensions are missing")
    total = sum(_int(v, f"the dimension of {k!r}", 1) for k, v in dims.items())
    if total != dim:
        raise _Bad(f"the source dimensions add up to {total}, the recorded dimension is {dim}")


def _text(dim: int, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
    sha = info.get("model_sha256")
    if sha is not None and not isinstance(sha, str):
        raise _Bad("the model checksum is not text")


CHECKS: dict[str, Callable[[int, dict[str, np.ndarray], dict[str, Any]], None]] = {
    "tabular": _tabular, "behavior": _behavior, "combined": _combined, "text": _text,
}


def check_state(kind: str, header: dict[str, Any], arrays: dict[str, np.ndarray],
                what: str) -> None:
    """ModelIntegrityError naming ``what`` unless the state fits its kind (see module doc)."""
    try:
        dim = _int(header.get("dim"), "the dimension", 1)
        info = header.get("state")
        if not isinstance(info, dict) or not isinstance(header.get("params"), dict):
            raise _Bad("the header's state or parameters are not objects")
        for name, a in arrays.items():
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise _Bad(f"array {name!r} holds NaN or infinite values")
        check = CHECKS.get(kind)
        if check is not None:
            check(dim, arrays, info)
    except _Bad as exc:
        raise ModelIntegrityError(f"{what} is damaged: {exc}") from None
