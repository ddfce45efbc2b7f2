"""How sure a ranking quality is: ROC-AUC intervals, "is it better than chance", audience sums.

An interval for a ROC-AUC estimated over repeated holdouts (or cross-validation folds) is
``mean +- 1.96 * max(SD across the repeats, Hanley-McNeil standard error of one holdout)``.
The repeats reuse the same rows, so their spread alone understates the uncertainty; the
Hanley-McNeil error is what a single holdout of that size can tell. A target is called
*not predictable from these data* when the interval's lower end is at or below 0.5 (chance).

Audiences from calibrated probabilities: the expected number of conversions is the sum of the
prospects' probabilities, with a 95% interval from the Poisson-binomial variance
``sum p (1 - p)`` (it assumes the probabilities are right: the calibration curve in the report
shows how far they are), and the lift is the audience's mean probability over the base rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

Z95 = 1.96


def hanley_mcneil_se(auc: float, n_pos: float, n_neg: float) -> float:
    """Standard error of a ROC-AUC from ``n_pos`` positives and ``n_neg`` negatives."""
    if n_pos < 1 or n_neg < 1:
        return float("inf")
    a = min(max(auc, 1e-6), 1 - 1e-6)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    return math.sqrt(max(var, 0.0))


def auc_interval(aucs: Sequence[float], n_pos: float, n_neg: float) -> tuple[float, float]:
    """95% interval of the mean of ``aucs`` (each measured on ``n_pos``/``n_neg`` rows)."""
    a = np.asarray(aucs, dtype=np.float64)
    mean = float(a.mean())
    sd = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    half = Z95 * max(sd, hanley_mcneil_se(mean, n_pos, n_neg))
    return max(0.0, mean - half), min(1.0, mean + half)


def predictability(method: str, mean: float, low: float, high: float, source: str
                   ) -> dict[str, Any]:
    """The verdict the match summary carries: is the best ranking better than chance?"""
    ok = low > 0.5
    verdict = {"method": method, "roc_auc": round(mean, 4),
               "interval": [round(low, 4), round(high, 4)], "source": source,
               "predictable": ok}
    if not ok:
        verdict["message"] = (f"not predictable from these data: the best method ({method}) "
                              f"has ROC-AUC {mean:.3f}, 95% interval {low:.3f}-{high:.3f}, "
                              "which includes chance (0.5)")
    return verdict


def audience(probabilities: np.ndarray, base_rate: float) -> dict[str, Any] | None:
    """Expected conversions and lift (with 95% intervals) of an audience of prospects."""
    p = np.asarray(probabilities, dtype=np.float64)
    if len(p) == 0 or not base_rate > 0:
        return None
    expected = float(p.sum())
    half = Z95 * math.sqrt(float((p * (1 - p)).sum()))
    lo, hi = max(0.0, expected - half), min(float(len(p)), expected + half)
    denom = len(p) * base_rate
    return {"size": len(p), "expected_conversions": round(expected, 2),
            "conversions_interval": [round(lo, 2), round(hi, 2)],
            "mean_probability": round(expected / len(p), 6), "base_rate": round(base_rate, 6),
            "lift": round(expected / denom, 3),
            "lift_interval": [round(lo / denom, 3), round(hi / denom, 3)]}
