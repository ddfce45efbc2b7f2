"""The behaviour profile's class prior from the customers' attributes.

The latent-class profile of :mod:`services.matching.behaviour` gives every customer the same
prior over the classes; a customer's few events then move it. Who a customer is (age, income,
occupation, region...) also says which class they are likely in, most for customers with
little history. :class:`ClassPrior` is a multinomial logistic regression of the class on the
customers table's scalar attributes, fitted on the classes' posteriors given the events (soft
labels: each customer counts once per class, weighted by its posterior), so the profile's
posterior becomes ``P(class | attributes) * P(events | class)``. Features: each numeric
attribute standardised, its square (an effect that peaks in a range of ages) and a missing
flag; each category one-hot over the levels :func:`services.matching.features.fit_spec` keeps
(an unseen level or a null is its own column). The customers' holdings are left out: the
profile models events, and holdings recorded from the same events would repeat them. The
fitted state is plain arrays and a JSON spec (no pickle).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from vectorstore import VectorStore

from ._data import CUSTOMER_KEY, CUSTOMERS
from .features import FeatureSpec, candidate_columns, fit_spec

FIT_ROWS = 20_000
"""The class prior is fitted on at most this many customers (a seeded random sample)."""
REGULARIZATION_C = 1.0
"""scikit-learn's ``C`` (inverse L2 strength) of the logistic regression: its default."""


@dataclass
class ClassPrior:
    """Fitted state: the feature spec, the numeric columns' mean and SD, the coefficients."""

    spec: FeatureSpec
    mean: np.ndarray
    sd: np.ndarray
    coef: np.ndarray
    """(classes, features)"""
    intercept: np.ndarray

    @property
    def columns(self) -> list[str]:
        """The customers table's columns :meth:`log_prior` reads."""
        return self.spec.columns

    def design(self, data: pa.Table | pa.RecordBatch) -> np.ndarray:
        """The ``(rows, features)`` matrix of the logistic regression."""
        return _design(self.spec, self.spec.encode(data), self.mean, self.sd)

    def log_prior(self, data: pa.Table | pa.RecordBatch) -> np.ndarray:
        """``(rows, classes)`` log-probabilities of the classes given each row's attributes."""
        z = self.design(data) @ self.coef.T + self.intercept
        z -= z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"prior_mean": self.mean, "prior_sd": self.sd, "prior_coef": self.coef,
                "prior_intercept": self.intercept}

    def meta(self) -> dict[str, Any]:
        return self.spec.to_dict()

    @classmethod
    def from_saved(cls, meta: dict[str, Any], z: Any) -> ClassPrior:
        return cls(FeatureSpec.from_dict(meta), np.asarray(z["prior_mean"]),
                   np.asarray(z["prior_sd"]), np.asarray(z["prior_coef"]),
                   np.asarray(z["prior_intercept"]))


def _design(spec: FeatureSpec, X: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    parts = []
    n_num = len(spec.numeric)
    for j in range(n_num):
        v = X[:, j]
        miss = np.isnan(v)
        z = np.where(miss, 0.0, (v - mean[j]) / sd[j])
        z = np.clip(z, -10.0, 10.0)
        parts += [z[:, None], z[:, None] ** 2, miss[:, None].astype(np.float64)]
    for j, levels in enumerate(spec.categorical.values()):
        v = X[:, n_num + j]
        hot = np.zeros((len(v), len(levels) + 1))
        hot[np.arange(len(v)), np.where(np.isnan(v), len(levels), v).astype(np.int64)] = 1.0
        parts.append(hot)
    return np.hstack(parts) if parts else np.zeros((X.shape[0], 0))


def soft_logistic(Z: np.ndarray, R: np.ndarray, *, c: float = 1.0,
                  max_iter: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Multinomial logistic regression on soft labels: minimises the cross-entropy of the
    rows' class probabilities against ``R`` (rows summing to 1) plus ``||coef||^2 / (2 c)``
    (scikit-learn's L2 penalty and ``C``; the intercept is not penalised), by L-BFGS.
    Returns (coef (classes, features), intercept (classes,))."""
    from scipy.optimize import minimize

    f = Z.shape[1]
    k = R.shape[1]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W = theta[:k * f].reshape(k, f)
        b = theta[k * f:]
        a = Z @ W.T + b
        a -= a.max(axis=1, keepdims=True)
        logp = a - np.log(np.exp(a).sum(axis=1, keepdims=True))
        g = np.exp(logp) - R
        val = -float((R * logp).sum()) + float((W * W).sum()) / (2 * c)
        gw = g.T @ Z + W / c
        return val, np.concatenate([gw.ravel(), g.sum(axis=0)])

    b0 = np.log(np.maximum(R.mean(axis=0), 1e-12))
    res = minimize(loss, np.concatenate([np.zeros(k * f), b0 - b0.mean()]), jac=True,
                   method="L-BFGS-B", options={"maxiter": max_iter})
    return res.x[:k * f].reshape(k, f), res.x[k * f:]


def customer_rows(store: VectorStore, ids: pa.Array, columns: list[str],
                  table: str = CUSTOMERS) -> pa.Table:
    """The customers table's ``columns`` for ``ids``, in that order (a customer without a row
    gets nulls)."""
    import pandas as pd

    t = store.to_arrow(table, columns=[CUSTOMER_KEY, *[c for c in columns if c != CUSTOMER_KEY]])
    pos = pd.Index(t.column(CUSTOMER_KEY).to_numpy(zero_copy_only=False)).get_indexer(
        ids.to_numpy(zero_copy_only=False))
    return t.take(pa.array(np.where(pos >= 0, pos, None), pa.int64()))


def fit_class_prior(store: VectorStore, ids: pa.Array, R: np.ndarray, *, seed: int = 0,
                    table: str = CUSTOMERS) -> ClassPrior | None:
    """The class prior fitted on customers ``ids`` with class posteriors ``R`` (rows of
    ``ids``); None when there is no customers table or no usable attribute."""
    from ..errors import MatchingError

    if not store.has_table(table) or R.shape[1] < 2:
        return None
    info = store.table_info(table)
    cols = candidate_columns(info)
    if not cols:
        return None
    rows = np.arange(len(ids))
    if len(rows) > FIT_ROWS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, FIT_ROWS, replace=False))
    data = customer_rows(store, ids.take(pa.array(rows)), cols, table)
    try:
        spec = fit_spec(data, info, cols, target_product=None)
    except MatchingError:
        return None
    spec.holdings = []
    if not spec.numeric and not spec.categorical:
        return None
    X = spec.encode(data)
    n_num = len(spec.numeric)
    mean = np.array([np.nanmean(X[:, j]) if np.isfinite(X[:, j]).any() else 0.0
                     for j in range(n_num)])
    sd = np.array([np.nanstd(X[:, j]) if np.isfinite(X[:, j]).any() else 1.0
                   for j in range(n_num)])
    sd = np.where(np.isfinite(sd) & (sd > 0), sd, 1.0)
    mean = np.where(np.isfinite(mean), mean, 0.0)
    Z = _design(spec, X, mean, sd)
    coef, intercept = soft_logistic(Z, R[rows], c=REGULARIZATION_C)
    return ClassPrior(spec, mean, sd, coef, intercept)


__all__ = ["ClassPrior", "customer_rows", "fit_class_prior", "soft_logistic"]
