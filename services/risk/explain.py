"""Why a customer scored as it did: where it deviates, who its normal neighbours are, how rare.

For one customer (by key) the explanation holds:

- its score, rank and flag as written back, and the percentile of its score in the table;
- the features where it deviates most from the population, as robust z-scores
  ``(x - median) / (1.4826 * MAD)``: the model's attributes, or for a vector column its
  dimensions (against the fit sample's medians) and, when the table has numeric attributes,
  those too (against the whole table's medians);
- its nearest normal neighbours: a store search on the model's vector column restricted to
  rows that are not flagged, with the search's similarity (``score``) or ``distance``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from vectorstore import VectorStore, col

from .errors import RiskError
from .features import RISK_COLUMNS, table_key
from .persistence import load_model


class Deviation(BaseModel):
    feature: str
    value: float
    median: float
    robust_z: float


class Neighbour(BaseModel):
    key: str
    similarity: float | None = None
    distance: float | None = None
    risk_score: float | None = None


class RiskExplanation(BaseModel):
    customer: str
    model_id: str
    risk_score: float
    risk_rank: int | None
    risk_flag: bool | None
    percentile: float
    """Share (0-100) of the table's customers with a score at or below this one."""
    deviations: list[Deviation]
    """Model features (attributes or vector dimensions), largest |robust z| first."""
    attribute_deviations: list[Deviation]
    """For a vector model: the table's numeric attributes, largest |robust z| first."""
    neighbours: list[Neighbour]
    """Nearest customers that are not flagged, closest first (empty for attribute models)."""
    metric: str | None


def _top(names: list[str], x: np.ndarray, med: np.ndarray, z: np.ndarray, n: int) -> list[Deviation]:
    order = np.argsort(-np.abs(z), kind="stable")[:n]
    return [Deviation(feature=names[i], value=float(x[i]), median=float(med[i]),
                      robust_z=float(z[i])) for i in order]


def _numeric_attributes(info: Any) -> list[str]:
    out = []
    for f in info.schema:
        t = f.type
        if f.name in RISK_COLUMNS or f.name == info.key or f.name in info.vectors:
            continue
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            out.append(f.name)
    return out


def _attribute_population(store: VectorStore, table: str, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    parts = [np.column_stack([b.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                              for c in names])
             for b in store.scan(table, columns=names) if b.num_rows]
    X = np.concatenate(parts)
    med = np.nanmedian(X, axis=0)
    dev = np.abs(X - med)
    mad = 1.4826 * np.nanmedian(dev, axis=0)
    mean_ad = 1.2533 * np.nanmean(dev, axis=0)
    return med, np.where(mad > 0, mad, np.where(mean_ad > 0, mean_ad, 1.0))


def explain(store: VectorStore, table: str, customer: str, *, model_id: str | None = None,
            n_features: int = 5, n_neighbours: int = 5) -> RiskExplanation:
    """Explain the risk score of ``customer`` (its key value) under the table's risk model."""
    info = store.table_info(table)
    key = table_key(info)
    if "risk_score" not in info.schema.names:
        raise RiskError(f"table {table!r} has no risk scores yet: run risk scoring first")
    det, source, meta = load_model(store, table, model_id)
    attrs = _numeric_attributes(info) if source.column else []
    cols = list(dict.fromkeys([key, *source.columns, *RISK_COLUMNS, *attrs]))
    row = store.to_arrow(table, columns=cols, filter=col(key) == customer)
    if row.num_rows == 0:
        raise RiskError(f"table {table!r} has no customer {key}={customer!r}")
    x = source.matrix(row, table, key)
    score = float(det.decision_function(x)[0])
    stored = row.column("risk_score")[0].as_py()
    if stored is not None and row.column("risk_model")[0].as_py() == meta["model_id"]:
        score = float(stored)
    n_all = store.count(table)
    n_below = store.count(table, col("risk_score") <= score)
    names = source.feature_names or [f"{source.column}[{i}]" for i in range(x.shape[1])]
    z = det.robust_z(x)[0]
    deviations = _top(names, x[0], det.feature_median_, z, n_features)
    attribute_devs: list[Deviation] = []
    if attrs:
        med, scale = _attribute_population(store, table, attrs)
        xa = np.array([row.column(c)[0].as_py() for c in attrs], dtype=np.float64)
        za = np.where(np.isnan(xa), 0.0, (xa - med) / scale)
        attribute_devs = _top(attrs, xa, med, za, n_features)
    neighbours: list[Neighbour] = []
    metric = None
    if source.column:
        vec = info.vector(source.column)
        metric = str(vec.metric)
        flt = (col("risk_flag") == False) & (col(key) != customer)  # noqa: E712
        res = store.search(table, x[0], k=n_neighbours, vector_column=source.column,
                           filter=flt, columns=[key, "risk_score"])
        value_col = vec.metric.result_column
        for k_, v, s in zip(res.column(key).to_pylist(), res.column(value_col).to_pylist(),
                            res.column("risk_score").to_pylist(), strict=True):
            nb = {"similarity": v} if value_col == "score" else {"distance": v}
            neighbours.append(Neighbour(key=str(k_), risk_score=s, **nb))
    return RiskExplanation(
        customer=customer, model_id=meta["model_id"], risk_score=score,
        risk_rank=row.column("risk_rank")[0].as_py(), risk_flag=row.column("risk_flag")[0].as_py(),
        percentile=100.0 * n_below / max(n_all, 1), deviations=deviations,
        attribute_deviations=attribute_devs, neighbours=neighbours, metric=metric)


__all__ = ["Deviation", "Neighbour", "RiskExplanation", "explain"]
