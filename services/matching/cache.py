"""Fitted ``learned`` queries kept in the store, reused while the table is unchanged.

Choosing ``C`` by cross-validation and fitting the logistic regression takes seconds; the
result only depends on the table's rows and the fit options. Each fit is stored as an
artifact (``store.put_artifact``: npz bytes without pickle, sha256-checked on read) named
after the table, vector column and product, with a fingerprint of what it was fitted on:
the table's version (on backends that keep versions), its row count, the product's holder
count and the options. A later call with the same fingerprint loads the query instead of
refitting; any write to the table (new holdings, new rows) changes the fingerprint.
"""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from vectorstore import Metric, VectorStore
from vectorstore.errors import ArtifactCorrupt, ArtifactNotFound

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
            "model": None if model is None else {"C": float(model.C), "tol": float(model.tol),
                                                 "max_iter": int(model.max_iter)}}
    store.put_artifact(artifact_name(key["table"], key["column"], key["product"]),
                       buf.getvalue(), meta)


def load(store: VectorStore, key: dict[str, Any]) -> ProductQuery | None:
    """The stored query for ``key``, or None when there is none, it is stale or unreadable."""
    name = artifact_name(key["table"], key["column"], key["product"])
    try:
        data, meta = store.get_artifact(name)
    except (ArtifactNotFound, ArtifactCorrupt):
        return None
    if meta.get("key") != key:
        return None
    with np.load(io.BytesIO(data), allow_pickle=False) as z:
        vector, coef, intercept = z["vector"], z["coef"], z["intercept"]
    model = None
    if meta.get("model") is not None:
        m = meta["model"]
        model = LogisticRegression(C=m["C"], tol=m["tol"], max_iter=m["max_iter"])
        model.coef_, model.intercept_ = coef, intercept
        model.classes_ = np.array([0, 1], dtype=np.int8)
        model.n_features_in_ = coef.shape[1]
    details = {**meta["details"], "cached": True}
    if isinstance(details.get("cv_roc_auc"), dict):  # JSON made its float keys strings
        details["cv_roc_auc"] = {float(c): v for c, v in details["cv_roc_auc"].items()}
    return ProductQuery(key["product"], "learned", key["column"], Metric(meta["metric"]),
                        vector, searchable=bool(meta["searchable"]), scale=float(meta["scale"]),
                        offset=float(meta["offset"]), intercept=float(intercept[0]),
                        n_consumers=int(meta["n_consumers"]), details=details, model_=model,
                        linear=True)
