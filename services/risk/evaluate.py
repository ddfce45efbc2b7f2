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
from pydantic import BaseModel
from sklearn.metrics import average_precision_score, roc_auc_score

from vectorstore import VectorStore

from .config import config_json, parse_detector
from .errors import RiskError
from .scoring import fit, score_stream


class DetectorEvaluation(BaseModel):
    """One detector's measured quality on one table (one row of the evaluation table)."""

    detector: str
    config: str
    n_rows: int
    n_anomalies: int
    roc_auc: float
    average_precision: float
    precision_at_n: float
    fit_seconds: float
    score_seconds: float


def label_metrics(y: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """ROC-AUC, average precision and precision@n (n = positives) of ``scores`` for ``y``."""
    y = np.asarray(y, dtype=bool)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        raise RiskError(f"the label has {n_pos} anomalies out of {y.size} rows: metrics need "
                        "both anomalies and normal rows")
    order = np.argsort(-np.asarray(scores), kind="stable")[:n_pos]
    return {"roc_auc": float(roc_auc_score(y, scores)),
            "average_precision": float(average_precision_score(y, scores)),
            "precision_at_n": float(y[order].mean())}


def _labels(values: pa.ChunkedArray | pa.Array, table: str, label: str) -> np.ndarray:
    if values.null_count:
        raise RiskError(f"table {table!r}, label column {label!r} has {values.null_count} "
                        "null value(s): every row needs a label")
    t = values.type
    if pa.types.is_boolean(t):
        return values.to_numpy(zero_copy_only=False).astype(bool)
    if pa.types.is_integer(t):
        v = values.to_numpy(zero_copy_only=False)
        if not np.isin(v, (0, 1)).all():
            raise RiskError(f"table {table!r}, label column {label!r} must hold 0/1 values")
        return v.astype(bool)
    raise RiskError(f"table {table!r}, label column {label!r} is {t}: expected bool or 0/1 int")


def evaluate(store: VectorStore, table: str, label: str,
             detectors: Sequence[Any] = ("ecod", "iforest", "hbos", "copod", "knn", "lof", "pca",
                                         "default"), *,
             column: str | None = None, attributes: list[str] | None = None,
             fit_sample: int | float | None = None, seed: int = 0,
             batch_size: int = 65_536) -> list[DetectorEvaluation]:
    """Fit and score each detector on ``table`` and measure it against ``label``."""
    info = store.table_info(table)
    info.check_columns([label])
    rows = []
    for spec in detectors:
        cfg = parse_detector(spec)
        t0 = time.perf_counter()
        det, source = fit(store, table, cfg, column=column, attributes=attributes,
                          fit_sample=fit_sample, seed=seed, batch_size=batch_size)
        if label in source.columns:
            raise RiskError(f"the label column {label!r} is one of the features")
        t1 = time.perf_counter()
        kept, scores = score_stream(store, table, det, source, extra=(label,),
                                    batch_size=batch_size)
        t2 = time.perf_counter()
        y = _labels(kept.column(label), table, label)
        m = label_metrics(y, scores)
        rows.append(DetectorEvaluation(
            detector="default" if spec in (None, "default") else cfg.kind,
            config=config_json(cfg), n_rows=int(y.size), n_anomalies=int(y.sum()),
            fit_seconds=t1 - t0, score_seconds=t2 - t1, **m))
    return rows


def evaluation_table(rows: Sequence[DetectorEvaluation]) -> pa.Table:
    """The evaluation rows as one Arrow table."""
    return pa.Table.from_pylist([r.model_dump() for r in rows])


__all__ = ["DetectorEvaluation", "evaluate", "evaluation_table", "label_metrics"]
