"""The row-level arithmetic of the risk detectors: finite-row checks, the row sample a
quadratic detector fits on, robust per-feature scales, ECOD / COPOD tail scores against a
fitted sample, and read-only views for HBOS's compiled kernels."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.utils.validation import check_array

from .errors import InvalidRiskInput, TooManyRows

_FLOATS = (np.float64, np.float32)
"""Dtypes kept as they are; any other numeric input becomes float64."""


def finite_rows(X: np.ndarray, what: str) -> np.ndarray:
    """``X`` unchanged, or InvalidRiskInput naming the first row and feature that is not finite."""
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        col = int(np.flatnonzero(~np.isfinite(X[row]))[0])
        raise InvalidRiskInput(f"{what}: row {row} has a NaN or infinite value in feature {col}")
    return X


def check_matrix(X: Any, what: str = "input") -> np.ndarray:
    """A 2-D float32/float64 matrix with at least one row and feature and finite values, or
    InvalidRiskInput saying why (scikit-learn's ``check_array``, its message kept)."""
    try:
        X = check_array(X, dtype=_FLOATS, ensure_all_finite=False)
    except ValueError as exc:
        raise InvalidRiskInput(f"{what}: {exc}") from None
    return finite_rows(X, what)


def fit_rows_for(cfg: Any, n_rows: int) -> tuple[np.ndarray | None, str | None]:
    """Rows a quadratic detector may fit on: (None, None) for all, or (indices, message)."""
    limit = getattr(cfg, "max_rows", None)
    if limit is None or n_rows <= limit:
        return None, None
    if cfg.on_large == "refuse":
        raise TooManyRows(
            f"{cfg.kind.upper()} cost grows with the square of the rows: {n_rows:,} rows is above "
            f"its limit of {limit:,} (raise max_rows, pass a smaller fit_sample, or set "
            "on_large='sample')")
    idx = np.sort(np.random.default_rng(cfg.random_state).choice(n_rows, limit, replace=False))
    msg = (f"{cfg.kind.upper()} fitted on a seeded sample of {limit:,} of {n_rows:,} rows "
           f"(its cost grows with the square of the rows; limit max_rows={limit:,})")
    return idx, msg


def _read_only(X: np.ndarray) -> np.ndarray:
    """A read-only view of ``X``. HBOS's numba kernels compile once per array type, and
    read-only arrays (the zero-copy batches a scan yields) are a different type from
    writable ones: fitting and scoring through read-only views means one compilation and
    no per-batch copy."""
    if not X.flags.writeable:
        return X
    view = X.view()
    view.flags.writeable = False
    return view


def robust_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature median and robust scale (1.4826 * MAD, else 1.2533 * mean |dev|, else 1)."""
    med = np.median(X, axis=0)  # in X's dtype: no float64 copy of a float32 sample
    dev = np.abs(X - med)
    mad = 1.4826 * np.median(dev, axis=0)
    mean_ad = 1.2533 * dev.mean(axis=0)
    scale = np.where(mad > 0, mad, np.where(mean_ad > 0, mean_ad, 1.0))
    return med.astype(np.float64), scale.astype(np.float64)


def tail_scores(kind: str, sorted_t: np.ndarray, skew_sign: np.ndarray, X: np.ndarray
                ) -> np.ndarray:
    """ECOD / COPOD scores of ``X`` against a fitted sample: ``sorted_t`` its sorted columns
    (one row per feature), ``skew_sign`` each feature's skew sign."""
    n = sorted_t.shape[1]
    floor = 1.0 / (n + 1)
    X = X.astype(sorted_t.dtype, copy=False)
    out = np.zeros(X.shape[0], dtype=np.float64)
    for j in range(X.shape[1]):
        col, x = sorted_t[j], X[:, j]
        left = np.searchsorted(col, x, side="right") / n
        right = (n - np.searchsorted(col, x, side="left")) / n
        u_l = -np.log(np.maximum(left, floor))
        u_r = -np.log(np.maximum(right, floor))
        s = skew_sign[j]
        u_skew = u_l if s < 0 else (u_r if s > 0 else u_l + u_r)
        if kind == "ecod":
            o = np.maximum(np.maximum(u_l, u_r), u_skew)
        else:  # copod
            o = np.maximum(u_skew, (u_l + u_r) / 2)
        out += o
    return out
