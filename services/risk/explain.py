"""Why a customer scored as it did: where it deviates, who its normal neighbours are, how rare.

For one customer (by key) the explanation holds:

- its score, rank and flag as written back, and the percentile of its score in the table;
- the features where it deviates most from the population, as robust z-scores
  ``(x - median) / (1.4826 * MAD)``: the model's attributes, or for a vector column its
  dimensions against the fit sample's medians (named after the attributes they encode when
  the tabular embedder wrote the column: ``age``, ``region=north``);
- the attributes the detector used, and only those (never ids, bookkeeping columns or a
  label left out of the embedding): numbers as robust z-scores against the whole table,
  categories by how rare the customer's value is;
- its nearest normal neighbours: a store search on the model's vector column restricted to
  rows that are not flagged, with the search's similarity (``score``) or ``distance``.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel
from scipy.stats import norm

from vectorstore import VectorStore, col

from .errors import RiskError
from .features import RISK_COLUMNS, table_key, tabular_features
from .persistence import load_model
from .rows import robust_scale


class Deviation(BaseModel):
    feature: str
    value: float | str | None
    """The customer's value (None when missing)."""
    median: float | None = None
    """Numbers: the population median."""
    robust_z: float
    """Numbers: ``(value - median) / (1.4826 * MAD)``. Categories: the normal quantile whose
    two-sided tail is the share of customers with this value (1% reads 2.58, 50% 0.67), so
    both kinds sort on one scale."""
    share: float | None = None
    """Categories: share of the table's customers with the same value."""


class Neighbour(BaseModel):
    key: str
    similarity: float | None = None
    distance: float | None = None
    risk_score: float | None = None


class RiskExplanation(BaseModel):
    customer: str
    model_id: str
    risk_score: float
    """On the written risk-score scale (a robust z-score, see :mod:`services.risk.scoring`)."""
    risk_rank: int | None
    """1 + the customers scoring higher (computed when asked: no global rank is stored)."""
    risk_flag: bool | None
    percentile: float
    """Share (0-100) of the table's customers with a score at or below this one."""
    deviations: list[Deviation]
    """Model features (attributes or vector dimensions), largest |robust z| first."""
    attribute_deviations: list[Deviation]
    """For a tabular vector model: the attributes it was built from, most unusual first."""
    neighbours: list[Neighbour]
    """Nearest customers that are not flagged, closest first (empty for attribute models)."""
    metric: str | None


def _top(names: list[str], x: np.ndarray, med: np.ndarray, z: np.ndarray, n: int) -> list[Deviation]:
    order = np.argsort(-np.abs(z), kind="stable")[:n]
    return [Deviation(feature=names[i], value=float(x[i]), median=float(med[i]),
                      robust_z=float(z[i])) for i in order]


def _attribute_deviations(store: VectorStore, table: str, row: pa.Table,
                          numeric: list[str], categorical: list[str]) -> list[Deviation]:
    """The customer's attributes against the whole table, most unusual first."""
    from ingest.column_kinds import numeric_values

    if not numeric and not categorical:
        return []
    data = store.to_arrow(table, columns=[*numeric, *categorical])
    out = []
    for c in numeric:
        x = numeric_values(data.column(c).combine_chunks())
        x = x[np.isfinite(x)]
        meds, scales = robust_scale(x[:, None]) if x.size else (np.zeros(1), np.ones(1))
        med, scale = float(meds[0]), float(scales[0])
        v = float(numeric_values(row.column(c).combine_chunks())[0])
        ok = np.isfinite(v)
        out.append(Deviation(feature=c, value=v if ok else None, median=med,
                             robust_z=(v - med) / scale if ok else 0.0))
    for c in categorical:
        values = data.column(c)
        if pa.types.is_dictionary(values.type):
            values = values.cast(values.type.value_type)
        v = row.column(c)[0].as_py()
        same = (values.null_count if v is None else
                int(pc.sum(pc.equal(values, pa.scalar(v, values.type))).as_py() or 0))
        share = same / max(len(values), 1)
        z = float(norm.isf(share / 2)) if 0 < share < 1 else 0.0
        out.append(Deviation(feature=c, value=None if v is None else str(v), robust_z=z,
                             share=share))
    out.sort(key=lambda d: -abs(d.robust_z))
    return out


def explain(store: VectorStore, table: str, customer: str, *, model_id: str | None = None,
            n_features: int = 5, n_neighbours: int = 5) -> RiskExplanation:
    """Explain the risk score of ``customer`` (its key value) under the table's risk model."""
    info = store.table_info(table)
    key = table_key(info)
    if "risk_score" not in info.schema.names:
        raise RiskError(f"table {table!r} has no risk scores yet: run risk scoring first")
    det, source, meta = load_model(store, table, model_id)
    tab = tabular_features(store, table, source.column)
    attrs = [a for a in (tab.attributes if tab else []) if a in info.schema.names]
    cols = list(dict.fromkeys([key, *source.columns,
                               *(c for c in RISK_COLUMNS if c in info.schema.names), *attrs]))
    row = store.to_arrow(table, columns=cols, filter=col(key) == customer)
    if row.num_rows == 0:
        raise RiskError(f"table {table!r} has no customer {key}={customer!r}")
    x = source.matrix(row, table, key)
    score = float(det.risk_score(x)[0])
    stored = row.column("risk_score")[0].as_py()
    if stored is not None and row.column("risk_model")[0].as_py() == meta["model_id"]:
        score = float(stored)
    n_all = store.count(table)
    n_below = store.count(table, col("risk_score") <= score)
    rank = store.count(table, col("risk_score") > score) + 1 if stored is not None else None
    names = (source.feature_names or (tab.feature_names if tab else None)
             or [f"{source.column}[{i}]" for i in range(x.shape[1])])
    z = det.robust_z(x)[0]
    deviations = _top(names, x[0], det.feature_median_, z, n_features)
    attribute_devs = _attribute_deviations(
        store, table, row, [a for a in tab.numeric if a in attrs] if tab else [],
        [a for a in tab.categorical if a in attrs] if tab else [])[:n_features]
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
        risk_rank=rank, risk_flag=row.column("risk_flag")[0].as_py(),
        percentile=100.0 * n_below / max(n_all, 1), deviations=deviations,
        attribute_deviations=attribute_devs, neighbours=neighbours, metric=metric)


__all__ = ["Deviation", "Neighbour", "RiskExplanation", "explain"]
