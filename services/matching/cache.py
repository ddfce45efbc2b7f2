"""Fitted ``learned`` queries kept in the store, reused while the table is unchanged.

Choosing ``C`` by cross-validation and fitting the logistic regression takes seconds; the
result only depends on the table's rows and the fit options. Each fit is stored as an
artifact (``store.put_artifact``: npz bytes without pickle, sha256-checked on read) named
after the table, vector column and product, with a fingerprint of what it was fitted on:
the table's version (on backends that keep versions), its row count, the product's holder
count and the options. A later call with the same fingerprint loads the query instead of
refitting; any write to the table (new holdings, new rows) changes the fingerprint.

A stored query is checked before use: the store's sha256 (and, with ``KINDRED_ARTIFACT_KEY``
set, its HMAC), then every array's shape and finiteness against the table's vector column and
every metadata field's type. One that fails any check (truncated, empty, tampered, metadata
that is not JSON) is never used: it is refitted and stored again, with an
:class:`~vectorstore.errors.ArtifactRebuilt` warning naming it and why.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import warnings
import zipfile
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from vectorstore import Metric, VectorStore
from vectorstore.errors import ArtifactCorrupt, ArtifactNotFound, ArtifactRebuilt

from .query import ProductQuery

FORMAT = 1


def artifact_name(table: str, column: str, product: str) -> str:
    """The artifact holding the learned query of ``product`` on ``table.column``."""
    digest = hashlib.sha256(product.encode()).hexdigest()[:16]
    return f"{table}.matching.learned.{column}.{digest}"


def fingerprint(store: VectorStore, table: str, column: str, product: str, n_consumers: int,
                seed: int, options: dict[str, Any]) -> dict[str, Any]:
    """What a learned fit depends on; equal fingerprints give the same query."""
    return {"format": FORMAT, "table": table, "column": column, "product": product,
            "version": store.data_version(table) if store.capabilities.versions else None,
            "rows": store.count(table), "consumers": n_consumers, "seed": seed,
            "options": json.loads(json.dumps(options, sort_keys=True, default=str))}


def save(store: VectorStore, query: ProductQuery, key: dict[str, Any]) -> None:
    """Store ``query`` (a fitted learned query) under its fingerprint."""
    model = query.model_
    buf = io.BytesIO()
    np.savez(buf, vector=query.vector.astype(np.float32),
             coef=(model.coef_ if model is not None else query.vector[None, :]).astype(np.float64),
             intercept=np.asarray([query.intercept], dtype=np.float64))
    meta = {"key": key, "metric": str(query.metric), "searchable": query.searchable,
            "scale": query.scale, "offset": query.offset, "n_consumers": query.n_consumers,
            "details": json.loads(json.dumps(query.details, default=str)),
            "model": None if model is None else {"C": float(query.details["C"]),
                                                 "tol": float(model.tol),
                                                 "max_iter": int(model.max_iter)}}
    store.put_artifact(artifact_name(key["table"], key["column"], key["product"]),
                       buf.getvalue(), meta)


class _Unusable(Exception):
    """A stored query that fails a check (the message says which)."""


def load(store: VectorStore, key: dict[str, Any]) -> ProductQuery | None:
    """The stored query for ``key``; None when there is none or it is stale (fit again), and
    None with an :class:`ArtifactRebuilt` warning when it is unreadable or fails a check."""
    name = artifact_name(key["table"], key["column"], key["product"])
    try:
        data, meta = store.get_artifact(name)
    except ArtifactNotFound:
        return None
    except ArtifactCorrupt as exc:
        _rebuilt(name, str(exc))
        return None
    if meta.get("key") != key:
        return None
    try:
        return _decode(store, key, data, meta)
    except _Unusable as exc:
        _rebuilt(name, str(exc))
        return None


def _rebuilt(name: str, reason: str) -> None:
    warnings.warn(f"the stored learned query {name!r} is unusable ({reason}): refitting it "
                  "and storing it again", ArtifactRebuilt, stacklevel=3)


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not math.isfinite(float(value)):
        raise _Unusable(f"{what} is {value!r}, not a finite number")
    return float(value)


def _decode(store: VectorStore, key: dict[str, Any], data: bytes,
            meta: dict[str, Any]) -> ProductQuery:
    """The query in ``data``/``meta``, every part checked (see the module docstring)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            vector, coef, intercept = z["vector"], z["coef"], z["intercept"]
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise _Unusable(f"its data is not a readable npz ({type(exc).__name__})") from None
    vc = store.table_info(key["table"]).vectors.get(key["column"])
    dim = vc.dim if vc is not None else None
    if vector.dtype.kind != "f" or vector.ndim != 1 or (dim is not None and vector.shape[0] != dim):
        raise _Unusable(f"its query vector has shape {vector.shape} and type {vector.dtype}, "
                        f"expected ({dim},) floats")
    if coef.dtype.kind != "f" or coef.shape != (1, vector.shape[0]):
        raise _Unusable(f"its coefficients have shape {coef.shape}, expected (1, {vector.shape[0]})")
    if intercept.dtype.kind != "f" or intercept.shape != (1,):
        raise _Unusable(f"its intercept has shape {intercept.shape}, expected (1,)")
    if not (np.isfinite(vector).all() and np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise _Unusable("it holds NaN or infinite values")
    try:
        metric = Metric(meta["metric"])
        scale, offset = _finite(meta["scale"], "scale"), _finite(meta["offset"], "offset")
        n_consumers = meta["n_consumers"]
        if isinstance(n_consumers, bool) or not isinstance(n_consumers, int) or n_consumers < 0:
            raise _Unusable(f"n_consumers is {n_consumers!r}")
        if not isinstance(meta["searchable"], bool) or not isinstance(meta["details"], dict):
            raise _Unusable("searchable or details has the wrong type")
        model = None
        if meta.get("model") is not None:
            m = meta["model"]
            c, tol = _finite(m["C"], "C"), _finite(m["tol"], "tol")
            if c <= 0 or tol <= 0 or not isinstance(m["max_iter"], int) or m["max_iter"] < 1:
                raise _Unusable(f"its model options {m!r} are not valid")
            model = LogisticRegression(C=c, tol=tol, max_iter=m["max_iter"])
            model.coef_, model.intercept_ = coef, intercept
            model.classes_ = np.array([0, 1], dtype=np.int8)
            model.n_features_in_ = coef.shape[1]
        details = {**meta["details"], "cached": True}
    except (KeyError, TypeError, ValueError) as exc:
        raise _Unusable(f"its metadata lacks or mistypes a field ({type(exc).__name__}: "
                        f"{exc})") from None
    if isinstance(details.get("cv_roc_auc"), dict):  # JSON made its float keys strings
        try:
            details["cv_roc_auc"] = {float(c): v for c, v in details["cv_roc_auc"].items()}
        except ValueError:
            raise _Unusable("its cross-validation details are not readable") from None
    return ProductQuery(key["product"], "learned", key["column"], metric,
                        vector.astype(np.float32), searchable=meta["searchable"], scale=scale,
                        offset=offset, intercept=float(intercept[0]), n_consumers=n_consumers,
                        details=details, model_=model, linear=True)
