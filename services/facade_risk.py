"""The bodies of :class:`services.facade.Kindred`'s risk scoring: score_risk, risk_top and
evaluate_risk. The facade keeps the signatures and docstrings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .admin import Progress
from .facade_common import (
    _check_fresh,
    _finite,
    _for_step,
)
from .models import (
    RiskEvaluation,
)

if TYPE_CHECKING:
    from .facade import Kindred
    from .risk import RiskRun


def score_risk(self: Kindred, *, detector: str | None, column: str | None,
               attributes: Sequence[str] | None, fit_sample: int | float | None,
               threshold: float | None, seed: int, table: str, progress: Progress | None) -> RiskRun:
    """The body of :meth:`Kindred.score_risk`."""
    from .risk import score_table

    _finite(threshold=threshold, fit_sample=fit_sample)
    self._require_table(table, "ingest it first")
    attributes = self._named(table, attributes)
    rows_done = _for_step(progress, "risk score")
    _check_fresh(self._store, table, column)
    return score_table(self._store, table, detector, column=column,
                       attributes=list(attributes) if attributes else None,
                       fit_sample=fit_sample, seed=seed, threshold=threshold,
                       progress=rows_done)


def risk_top(self: Kindred, n: int, *, columns: Sequence[str] | None, flagged_only: bool,
             table: str) -> pa.Table:
    """The body of :meth:`Kindred.risk_top`."""
    from .risk import top

    self._require_table(table, "ingest it first")
    columns = self._named(table, columns)
    _check_fresh(self._store, table, "risk_score", "risk")
    return top(self._store, table, n, columns=list(columns) if columns else None,
               flagged_only=flagged_only)


def evaluate_risk(self: Kindred, label: str, *, positive: Any, detectors: Sequence[Any],
                  column: str | None, fit_sample: int | float | None, seed: int,
                  table: str) -> RiskEvaluation:
    """The body of :meth:`Kindred.evaluate_risk`."""
    from .risk import evaluate
    from .risk.features import resolve_source

    self._require_table(table, "ingest it first")
    label = self._named_one(table, label)
    column = resolve_source(self._store.table_info(table), column).column
    rows = evaluate(self._store, table, label, list(detectors), positive=positive,
                    column=column, fit_sample=fit_sample, seed=seed)
    return RiskEvaluation(label=label, positive=positive, column=column, rows=rows)
