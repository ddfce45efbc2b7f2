"""The facade's risk steps: score, the most anomalous, explanations and evaluation (the
bodies behind :meth:`Kindred.score_risk`, :meth:`Kindred.risk_top`, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from vectorstore import VectorStore

from ..admin import Progress
from ..models import RiskEvaluation
from ._common import _check_fresh, _finite, _for_step, named, named_one, require_table

if TYPE_CHECKING:
    from ..risk import RiskExplanation, RiskRun


def score_risk(store: VectorStore, runner: Any, *, detector: str | None = None,
               column: str | None = None, attributes: Sequence[str] | None = None,
               fit_sample: int | float | None = None, threshold: float | None = None,
               seed: int = 0, table: str, progress: Progress | None = None) -> RiskRun:
    """:meth:`services.facade.Kindred.score_risk`."""
    from ..risk import score_table

    _finite(threshold=threshold, fit_sample=fit_sample)
    require_table(store, table, "ingest it first")
    attributes = named(store, table, attributes)
    rows_done = _for_step(progress, "risk score")
    _check_fresh(store, table, column)
    return score_table(store, table, detector, column=column,
                       attributes=list(attributes) if attributes else None,
                       fit_sample=fit_sample, seed=seed, threshold=threshold,
                       progress=rows_done, runner=runner)


def risk_top(store: VectorStore, runner: Any, n: int = 20, *,
             columns: Sequence[str] | None = None, flagged_only: bool = False,
             table: str) -> pa.Table:
    """:meth:`services.facade.Kindred.risk_top`."""
    from ..risk import top

    require_table(store, table, "ingest it first")
    columns = named(store, table, columns)
    _check_fresh(store, table, "risk_score", "risk")
    return top(store, table, n, columns=list(columns) if columns else None,
               flagged_only=flagged_only, runner=runner)


def explain_risk(store: VectorStore, customer_id: str, *, table: str) -> RiskExplanation:
    """:meth:`services.facade.Kindred.explain_risk`."""
    from ..risk import explain

    require_table(store, table, "ingest it first")
    return explain(store, table, customer_id)


def evaluate_risk(store: VectorStore, label: str, *, positive: Any = None,
                  detectors: Sequence[Any] = ("iforest", "hbos", "ecod", "default"),
                  column: str | None = None, fit_sample: int | float | None = None,
                  seed: int = 0, table: str) -> RiskEvaluation:
    """:meth:`services.facade.Kindred.evaluate_risk`."""
    from ..risk import evaluate
    from ..risk.features import resolve_source

    require_table(store, table, "ingest it first")
    label = named_one(store, table, label)
    column = resolve_source(store.table_info(table), column).column
    rows = evaluate(store, table, label, list(detectors), positive=positive,
                    column=column, fit_sample=fit_sample, seed=seed)
    return RiskEvaluation(label=label, positive=positive, column=column, rows=rows)
