"""Detector quality against a label column: ROC-AUC, average precision, precision@n.

``n`` in precision@n is the number of labelled anomalies, so precision@n is also recall@n and
a perfect detector scores 1. Scores are computed as :func:`services.risk.scoring.score_table`
computes them (same fit, same streamed scoring) but are not written back.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel
from sklearn.metrics import average_precision_score, roc_auc_score

from vectorstore import VectorStore

from .config import config_json, parse_detector
from .errors import RiskError
from .features import resolve_source, tabular_features
from .scoring import fit, score_stream


class DetectorEvaluation(BaseModel):
    """One detector's measured quality on one table (one row of the evaluation table)."""

    detector: str
    members: list[str]
    config: str
    source: str
    n_rows: int
    n_anomalies: int
    roc_auc: float
    average_precision: float
    precision_at_n: float
    fit_seconds: float
    score_seconds: float


def _both_classes(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=bool)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise RiskError(f"the label has {n_pos} anomalies out of {y.size} rows: metrics need "
                        "both anomalies and normal rows")
    return y


def label_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC-AUC, average precision and precision@n (n = positives) of ``scores`` for ``y``."""
    y = _both_classes(y)
    n_pos = int(y.sum())
    order = np.argsort(-np.asarray(scores), kind="stable")[:n_pos]
    return {"roc_auc": float(roc_auc_score(y, scores)),
            "average_precision": float(average_precision_score(y, scores)),
            "precision_at_n": float(y[order].mean())}


def _shown(values: pa.Array | pa.ChunkedArray) -> str:
    distinct = sorted(pc.unique(values).drop_null().to_pylist(), key=str)
    more = f" and {len(distinct) - 5} more" if len(distinct) > 5 else ""
    return ", ".join(repr(v) for v in distinct[:5]) + more


def labels(values: pa.Array | pa.ChunkedArray, table: str, label: str,
           positive: Any = None) -> np.ndarray:
    """True where a row is a known anomaly: ``label == positive``, or without ``positive`` a
    bool or 0/1 label as it is. RiskError naming the values when that cannot be read."""
    where = f"table {table!r}, label column {label!r}"
    if values.null_count:
        raise RiskError(f"{where} has {values.null_count} null value(s): every row needs a label")
    t = values.type
    if positive is None:
        if pa.types.is_boolean(t):
            return values.to_numpy(zero_copy_only=False).astype(bool)
        if pa.types.is_integer(t):
            v = values.to_numpy(zero_copy_only=False)
            if np.isin(v, (0, 1)).all():
                return v.astype(bool)
        raise RiskError(f"{where} holds {_shown(values)}: name the value that marks an "
                        "anomaly with --positive VALUE (positive= in Python)")
    if pa.types.is_dictionary(t):
        values = values.cast(t.value_type)
        t = t.value_type
    try:
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            target = pa.scalar(str(positive), t)
        elif pa.types.is_boolean(t):
            text = str(positive).strip().lower()
            if text not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(positive)
            target = pa.scalar(text in ("true", "1", "yes"))
        else:
            target = pa.scalar(float(positive)).cast(t)
    except (ValueError, TypeError, pa.ArrowInvalid):
        raise RiskError(f"{where} is {t}; --positive {positive!r} is not a value of that "
                        "type") from None
    y = np.asarray(pc.equal(values, target).to_numpy(zero_copy_only=False), dtype=bool)
    if not y.any():
        raise RiskError(f"{where} has no value {positive!r}; its values are {_shown(values)}")
    return y


def label_leak(store: VectorStore, table: str, label: str, source: Any) -> None:
    """RiskError when the label is one of the features (as an attribute or embedded in the
    vector column): the detector would see the answer."""
    used = list(source.columns)
    tab = tabular_features(store, table, source.column)
    if tab is not None:
        used += tab.attributes
    if label in used:
        how = (f"embedded in {source.column!r}: embed without it (kindred embed tabular "
               f"--exclude {label})") if label not in source.columns else "one of the features"
        raise RiskError(f"the label column {label!r} is {how}")


def evaluate(store: VectorStore, table: str, label: str,
             detectors: Sequence[Any] = ("ecod", "iforest", "hbos", "copod", "knn", "lof", "pca",
                                         "default"), *,
             positive: Any = None, column: str | None = None,
             attributes: list[str] | None = None, fit_sample: int | float | None = None,
             seed: int = 0, batch_size: int = 65_536) -> list[DetectorEvaluation]:
    """Fit and score each detector on ``table`` and measure it against ``label``
    (``label == positive`` marks an anomaly; without ``positive``, a bool or 0/1 label).
    The features are chosen as :func:`services.risk.score_table` chooses them."""
    info = store.table_info(table)
    info.check_columns([label])
    source = resolve_source(info, column, attributes)
    label_leak(store, table, label, source)
    y_all = labels(store.to_arrow(table, columns=[label]).column(label), table, label, positive)
    _both_classes(y_all)  # checked before any fit
    rows = []
    for spec in detectors:
        cfg = parse_detector(spec)
        t0 = time.perf_counter()
        det, source = fit(store, table, cfg, column=source.column,
                          attributes=list(source.attributes) if source.attributes else None,
                          fit_sample=fit_sample, seed=seed, batch_size=batch_size)
        t1 = time.perf_counter()
        kept, scores = score_stream(store, table, det, source, extra=(label,),
                                    batch_size=batch_size)
        t2 = time.perf_counter()
        y = labels(kept.column(label), table, label, positive)
        m = label_metrics(y, scores)
        rows.append(DetectorEvaluation(
            detector="default" if spec in (None, "default") else cfg.kind,
            members=list(det.member_kinds_), config=config_json(cfg),
            source=source.describe(), n_rows=int(y.size), n_anomalies=int(y.sum()),
            fit_seconds=t1 - t0, score_seconds=t2 - t1, **m))
    return rows


def evaluation_table(rows: Sequence[DetectorEvaluation]) -> pa.Table:
    """The evaluation rows as one Arrow table."""
    return pa.Table.from_pylist([r.model_dump() for r in rows])


__all__ = ["DetectorEvaluation", "evaluate", "evaluation_table", "label_leak", "label_metrics",
           "labels"]
