"""A scikit-learn-style anomaly detector over PyOD: higher score = more anomalous.

``RiskDetector(...).fit(X)`` (or ``RiskDetector.from_config(config)``) learns from a matrix
(rows = customers); afterwards
``decision_function(X)`` is a fixed function of each row: the score of a row never depends on
which other rows are scored with it, nor on whether the row was in the training sample.

That matters for PyOD's transductive detectors. ``pyod.models.ECOD`` and ``COPOD`` score new
rows by recomputing their empirical CDFs over the training rows *plus the batch being
scored*, so PyOD gives a row a different score depending on its batch. Kindred keeps the
per-feature sorted training values and evaluates the training sample's tail probabilities
for any row (``searchsorted``), with the same formula as PyOD. On the training rows this
equals PyOD's ``decision_scores_`` exactly; for a new row outside the training range the tail
probability is floored at ``1/(n+1)`` (what PyOD would give that row scored alone), so new
rows are scored consistently in any batch. The other detectors (IForest, HBOS, KNN, LOF, PCA)
are inductive in PyOD already and are called directly; every row, training rows included, is
scored with ``decision_function`` (so KNN and LOF see a training row as its own neighbour).

Two scales. ``decision_function`` is the detector's own score (PyOD's, or the ensemble's
combination of its members'), whose units differ from one detector to the next.
``risk_score`` is the scale Kindred writes and shows: the same score as a robust z-score
against the fitted rows' scores, ``(score - median) / (1.4826 * MAD)`` (the MAD falling back
to the mean absolute deviation when over half the scores tie), so 0 is the median customer
and 3 is three robust standard deviations more unusual, whatever the detector. Robust,
because anomaly scores are heavy-tailed by nature: a mean and standard deviation would be
set by the anomalies themselves (LOF's few huge ratios put every other customer near 0).
``threshold_`` is on that scale. It is an increasing function of the native score, so ranks
and ROC-AUC are the same on both.

Never a non-finite score: features constant over the fit rows are dropped; PCA is fitted on
the basis its features really span (collinear columns, such as a one-hot block whose levels
sum to one, give zero eigenvalues that PyOD divides by); a member that cannot be fitted or
gives a non-finite score on the fit rows is left out of an ensemble with a message, and a
single detector that does so raises :class:`InvalidRiskInput` with one line.
"""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from pydantic import BaseModel
from scipy.stats import skew
from sklearn.base import BaseEstimator, OutlierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted, validate_data

from .config import QUADRATIC_ROW_LIMIT, SINGLE_KINDS, EnsembleConfig, parse_detector
from .errors import DetectorNotFitted, InvalidRiskInput, RiskError, TooManyRows
from .rows import (
    _FLOATS,
    _read_only,
    finite_rows,
    fit_rows_for,
    robust_scale,
    tail_scores,
)

_INDUCTIVE_FIT_SCORES = ("iforest", "hbos", "pca")
"""PyOD detectors whose ``decision_scores_`` equal ``decision_function`` on the fit rows."""

ROBUST_STATS_ROWS = 20_000
"""Above this many fit rows, the population median and MAD used by explanations are estimated
on a seeded sample of this many rows (a median's standard error is then ~1% of the spread)."""

PCA_RANK_TOL = 1e-10
"""PCA keeps the components whose variance is above this share of the largest. PyOD's PCA
standardises its features first (Kindred runs it in float64), so a smaller variance means
columns that agree to better than float32 precision (vectors are stored as float32, about 7
significant digits, so an exactly collinear combination keeps a variance of about 1e-14 of
the data's from rounding): such a direction is rounding noise, and PyOD's score, which
divides by the variance, would be dominated by it or infinite."""

SCORE_CHUNK = 65_536
"""Rows scored at once inside ``decision_function`` (bounds temporary memory). One streamed
batch (65,536 rows) is one call: IForest pays a fixed cost per call (100 trees walked), which
made 16,384-row chunks about 20% slower than whole batches."""


class _PyODMember:
    """A fitted PyOD detector whose ``decision_function`` is inductive."""

    def __init__(self, estimator: Any, *, float64: bool = False) -> None:
        self.estimator = estimator
        self.float64 = float64

    def score(self, X: np.ndarray) -> np.ndarray:
        if type(self.estimator).__name__ == "HBOS":
            X = _read_only(X)  # the array type its numba kernel was compiled for at fit
        if getattr(self, "float64", False):
            X = X.astype(np.float64, copy=False)
        return np.asarray(self.estimator.decision_function(X), dtype=np.float64)


class _TailMember:
    """ECOD / COPOD evaluated against the fitted training sample (see the module docstring)."""

    def __init__(self, kind: str, X: np.ndarray) -> None:
        self.kind = kind
        self.sorted_t = np.ascontiguousarray(np.sort(X, axis=0).T)  # (d, n), one row per feature
        with np.errstate(all="ignore"):  # a near-constant feature's skew can be NaN: no sign
            self.skew_sign = np.sign(np.nan_to_num(skew(X, axis=0))).astype(np.int8)

    def score(self, X: np.ndarray) -> np.ndarray:
        return tail_scores(self.kind, self.sorted_t, self.skew_sign, X)


def _pyod_estimator(cfg: Any) -> Any:
    c = cfg.contamination
    if cfg.kind == "iforest":
        from pyod.models.iforest import IForest

        return IForest(n_estimators=cfg.n_estimators, max_samples=cfg.max_samples,
                       max_features=cfg.max_features, random_state=cfg.random_state,
                       contamination=c)
    if cfg.kind == "hbos":
        from pyod.models.hbos import HBOS

        return HBOS(n_bins=cfg.n_bins, alpha=cfg.alpha, tol=cfg.tol, contamination=c)
    if cfg.kind == "knn":
        from pyod.models.knn import KNN

        return KNN(n_neighbors=cfg.n_neighbors, method=cfg.method, contamination=c)
    if cfg.kind == "lof":
        from pyod.models.lof import LOF

        return LOF(n_neighbors=cfg.n_neighbors, contamination=c)
    if cfg.kind == "pca":
        from pyod.models.pca import PCA

        return PCA(n_components=cfg.n_components, whiten=cfg.whiten,
                   standardization=cfg.standardization, random_state=cfg.random_state,
                   contamination=c)
    raise InvalidRiskInput(f"no PyOD estimator for detector kind {cfg.kind!r}")  # pragma: no cover


def _fit_member(cfg: Any, X: np.ndarray, messages: list[str]) -> _PyODMember | _TailMember:
    if cfg.kind in ("ecod", "copod"):
        return _TailMember(cfg.kind, X)
    idx, msg = fit_rows_for(cfg, X.shape[0])
    if msg is not None:
        warnings.warn(msg, stacklevel=3)
        messages.append(msg)
        X = X[idx]
    if cfg.kind == "pca":
        # in float64: PyOD divides by the smallest eigenvalues, which float32 arithmetic
        # leaves at ~1e-6 of the largest even for exactly collinear columns
        return _PyODMember(_fit_pca(cfg, X.astype(np.float64, copy=False), messages),
                           float64=True)
    est = _pyod_estimator(cfg)
    est.fit(_read_only(X) if cfg.kind == "hbos" else X)
    return _PyODMember(est)


def _fit_pca(cfg: Any, X: np.ndarray, messages: list[str]) -> Any:
    """PyOD's PCA, refitted on the rank-reduced basis when its features are collinear (the
    components of variance below ``PCA_RANK_TOL`` of the largest are left out)."""
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero eigenvalue: checked below
        est = _pyod_estimator(cfg).fit(X)
    var = np.asarray(est.explained_variance_, dtype=np.float64)
    keep = int(np.sum(var > PCA_RANK_TOL * var.max())) if var.size and var.max() > 0 else 0
    if keep == var.size:
        return est
    if keep == 0:
        raise InvalidRiskInput("PCA: the features have no variance")
    messages.append(f"PCA: the features span {keep} of {X.shape[1]} dimensions (collinear "
                    f"columns, such as a one-hot block); fitted on that {keep}-dimensional basis")
    return _pyod_estimator(cfg.model_copy(update={"n_components": keep})).fit(X)


DEFAULT_MEMBERS = ("iforest", "knn", "pca")
"""The default ensemble's members (see :func:`services.risk.config.default_ensemble`)."""

FLAT_PARAMS = frozenset({
    "contamination", "n_estimators", "max_samples", "max_features", "n_bins", "alpha", "tol",
    "n_neighbors", "method", "n_components", "whiten", "standardization", "max_rows",
    "on_large", "random_state"})
"""The detectors' parameters, each given to every detector (ensemble member) that has one."""


def _fields(kind: str) -> set[str]:
    """The parameters a detector kind's configuration has."""
    return set(type(parse_detector(kind)).model_fields) - {"kind"}


class RiskDetector(OutlierMixin, BaseEstimator):
    """Anomaly detector (one PyOD detector or an ensemble); higher score = more anomalous.

    Parameters
    ----------
    detector:
        ``"ensemble"`` (``"default"``) or one of ``ecod``, ``copod``, ``iforest``, ``hbos``,
        ``knn``, ``lof``, ``pca``. A configuration (:mod:`services.risk.config` model, dict or
        JSON) is accepted too, for callers that hold one, with every other parameter left at
        its default (``from_config`` turns one into flat parameters).
    members, combine:
        The ensemble's detectors (kind names, or dicts of one member's own parameters such as
        ``{"kind": "knn", "n_neighbors": 10}``) and how their scores are combined
        (``"zscore"`` or ``"rank"``).
    contamination:
        Expected share of anomalies: ``threshold_`` is the fit rows' risk-score quantile at
        ``1 - contamination``.
    n_estimators, max_samples, max_features, n_bins, alpha, tol, n_neighbors, method, \
n_components, whiten, standardization, random_state:
        PyOD's parameters of the same name, given to each detector that has one
        (``n_neighbors=None``: KNN's 5, LOF's 20).
    max_rows, on_large:
        KNN and LOF (cost quadratic in rows) fit on at most ``max_rows`` rows: above it a
        seeded sample (``"sample"``, said in ``messages_``) or an error (``"refuse"``).

    Attributes set by ``fit``: ``config_`` (the validated configuration), ``n_features_in_``,
    ``n_fit_rows_``, ``members_`` (fitted members), ``member_kinds_`` (their kinds: an
    ensemble member that failed is left out), ``member_stats_`` (ensemble standardisation),
    ``decision_scores_`` (``decision_function`` of the fit rows, in row order, as PyOD's),
    ``labels_`` (``predict`` of the fit rows), ``score_center_``/``score_scale_`` (median and
    robust spread of ``decision_scores_``: the risk-score scale), ``threshold_`` (on the
    risk-score scale), ``sorted_risk_scores_`` (the fit rows' risk scores, sorted, for
    :meth:`percentile`; ``train_scores_`` is its former name, still readable),
    ``feature_median_``/``feature_scale_`` (robust population statistics for explanations),
    ``messages_`` (notes such as sampling or a member left out).
    """

    def __init__(self, detector: Any = "ensemble", *, members: tuple[Any, ...] = DEFAULT_MEMBERS,
                 combine: str = "zscore", contamination: float = 0.05, n_estimators: int = 100,
                 max_samples: int | float | str = "auto", max_features: float = 1.0,
                 n_bins: int = 10, alpha: float = 0.1, tol: float = 0.5,
                 n_neighbors: int | None = None, method: str = "largest",
                 n_components: int | float | None = None, whiten: bool = False,
                 standardization: bool = True, max_rows: int = QUADRATIC_ROW_LIMIT,
                 on_large: str = "sample", random_state: int = 0) -> None:
        self.detector = detector
        self.members = members
        self.combine = combine
        self.contamination = contamination
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.n_bins = n_bins
        self.alpha = alpha
        self.tol = tol
        self.n_neighbors = n_neighbors
        self.method = method
        self.n_components = n_components
        self.whiten = whiten
        self.standardization = standardization
        self.max_rows = max_rows
        self.on_large = on_large
        self.random_state = random_state

    @classmethod
    def from_config(cls, spec: Any) -> RiskDetector:
        """An unfitted detector with the flat parameters of a configuration (a model, dict,
        JSON string or name, as :func:`services.risk.config.parse_detector` reads)."""
        return cls(**cls._params_of(parse_detector(spec)))

    @staticmethod
    def _params_of(cfg: Any) -> dict[str, Any]:
        if isinstance(cfg, EnsembleConfig):
            return {"detector": "ensemble", "combine": cfg.combine,
                    "contamination": cfg.contamination,
                    "members": tuple(m.model_dump() for m in cfg.members)}
        params = cfg.model_dump()
        return {"detector": params.pop("kind"), **params}

    def _member_config(self, spec: Any) -> Any:
        """One detector's configuration: this detector's flat parameters that its kind has,
        overridden by ``spec``'s own (a kind name, dict or configuration model)."""
        own = (spec.model_dump() if isinstance(spec, BaseModel)
               else dict(spec) if isinstance(spec, dict) else {"kind": str(spec).strip().lower()})
        kind = str(own.get("kind", "")).lower()
        if kind not in SINGLE_KINDS:
            raise RiskError(f"unknown detector {own.get('kind')!r}; expected one of "
                            f"{', '.join(SINGLE_KINDS)}")
        flat = {f: getattr(self, f) for f in _fields(kind) & FLAT_PARAMS}
        if flat.get("n_neighbors", 0) is None:
            del flat["n_neighbors"]
        return parse_detector({**flat, **own, "kind": kind})

    def _config(self) -> Any:
        """The validated configuration these parameters describe (RiskError if invalid)."""
        spec = "ensemble" if self.detector is None else self.detector
        if not isinstance(spec, str) or spec.strip().startswith("{"):
            changed = sorted(k for k, v in self.get_params(deep=False).items()
                             if k != "detector" and v != _DEFAULTS[k])
            if changed:
                raise RiskError(f"detector={type(spec).__name__} is a whole configuration: give "
                                f"{', '.join(changed)} inside it, or use flat parameters "
                                "(RiskDetector.from_config)")
            return parse_detector(spec)
        name = spec.strip().lower()
        if name not in ("default", "ensemble"):
            return self._member_config(name)
        return parse_detector({
            "kind": "ensemble", "combine": self.combine, "contamination": self.contamination,
            "members": [self._member_config(m).model_dump() for m in self.members]})

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Also reads detectors stored before the flat parameters (one ``config`` parameter,
        sorted ``train_scores_``): their parameters come from the fitted ``config_``."""
        state = dict(state)
        if "config" in state and "detector" not in state:
            del state["config"]
            state.update(_DEFAULTS)
            if "config_" in state:
                state.update(self._params_of(state["config_"]))
        if "train_scores_" in state and "sorted_risk_scores_" not in state:
            state["sorted_risk_scores_"] = state.pop("train_scores_")
        super().__setstate__(state)

    @property
    def train_scores_(self) -> np.ndarray:
        """The former name of ``sorted_risk_scores_`` (read-only)."""
        self._check_fitted()
        return self.sorted_risk_scores_

    def fit(self, X: Any, y: Any = None) -> RiskDetector:
        try:
            X = validate_data(self, X, dtype=_FLOATS, ensure_min_samples=2,
                              ensure_all_finite=False)
        except ValueError as exc:
            raise InvalidRiskInput(f"fit: {exc}") from None
        finite_rows(X, "fit")
        cfg = self._config()
        if np.all(X.max(axis=0) == X.min(axis=0)):
            raise InvalidRiskInput("fit: every feature is constant (all rows are identical): "
                                   "nothing distinguishes one row from another")
        self.config_ = cfg
        self.n_fit_rows_ = X.shape[0]
        self.messages_: list[str] = []
        # a feature constant over the fit rows tells no row from another, and breaks detectors
        # that divide by its spread (PCA's zero eigenvalue gives inf, an ensemble NaN): drop it
        varying = X.max(axis=0) != X.min(axis=0)
        self.kept_features_ = None if varying.all() else np.flatnonzero(varying)
        Xm = X if self.kept_features_ is None else X[:, self.kept_features_]
        if self.kept_features_ is not None:
            self.messages_.append(f"{X.shape[1] - self.kept_features_.size} of {X.shape[1]} "
                                  "features are constant over the fit rows and were ignored")
        rows = X
        if X.shape[0] > ROBUST_STATS_ROWS:  # median/MAD of 100,000 x 384 cost ~4 s, PyOD's fit 2 s
            pick = np.random.default_rng(0).choice(X.shape[0], ROBUST_STATS_ROWS, replace=False)
            rows = X[np.sort(pick)]
        with ThreadPoolExecutor(max_workers=1) as pool:
            # the population statistics for explanations overlap the detectors' fit (numpy's
            # partition and PyOD's kernels release the GIL)
            robust = pool.submit(robust_scale, rows)
            fitted = self._fit_members(cfg, Xm)
            self.feature_median_, self.feature_scale_ = robust.result()
        self.members_ = [m for m, _, _ in fitted]
        self.member_kinds_ = [c.kind for _, c, _ in fitted]
        self.member_stats_: list[tuple[float, float, np.ndarray]] = []
        if isinstance(cfg, EnsembleConfig):
            for _, _, s in fitted:
                sd = float(s.std())
                self.member_stats_.append((float(s.mean()), sd if sd > 0 else 1.0, np.sort(s)))
            # the fit rows' member scores are known: combine them rather than score again
            native = self._combine([s for _, _, s in fitted])
        else:
            native = fitted[0][2]
        self.decision_scores_ = native
        center, scale = robust_scale(native[:, None])
        self.score_center_, self.score_scale_ = float(center[0]), float(scale[0])
        train = self.to_risk_scale(native)
        self.sorted_risk_scores_ = np.sort(train)
        self.threshold_ = float(np.percentile(train, 100 * (1 - cfg.contamination)))
        self.labels_ = (train > self.threshold_).astype(np.int64)
        return self

    def _fit_members(self, cfg: Any, X: np.ndarray) -> list[tuple[Any, Any, np.ndarray]]:
        """(member, its config, its fit-row scores) for each member that fits and scores every
        fit row finitely; the others are left out of an ensemble with a message, and fail a
        single detector with one clear line."""
        ensemble = isinstance(cfg, EnsembleConfig)
        fitted, problems = [], []
        for m in cfg.members if ensemble else (cfg,):
            name = m.kind.upper()
            try:
                member = _fit_member(m, X, self.messages_)
                s = self._fit_scores(member, m, X)
            except TooManyRows:
                raise
            except Exception as exc:  # PyOD/scikit-learn numerical failures on these features
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                problem = f"{name} could not be fitted on these features ({detail})"
            else:
                bad = int(np.count_nonzero(~np.isfinite(s)))
                if not bad:
                    fitted.append((member, m, s))
                    continue
                problem = (f"{name} gave a non-finite score to {bad:,} of {s.size:,} fit rows "
                           "on these features")
            if not ensemble:
                raise InvalidRiskInput(f"{problem}: try another detector")
            problems.append(problem)
            self.messages_.append(f"{problem}: left out of the ensemble")
        if not fitted:
            raise InvalidRiskInput("no ensemble member could score these features: "
                                   + "; ".join(problems))
        return fitted

    @classmethod
    def _fit_scores(cls, member: Any, cfg: Any, X: np.ndarray) -> np.ndarray:
        """A member's scores of the fit rows ``X``: PyOD's own ``decision_scores_`` where that
        is the same function (inductive detectors fitted on all of ``X``), else scored."""
        if (isinstance(member, _PyODMember) and cfg.kind in _INDUCTIVE_FIT_SCORES
                and member.estimator.decision_scores_.shape[0] == X.shape[0]):
            return np.asarray(member.estimator.decision_scores_, dtype=np.float64)
        return cls._member_scores(member, X)

    @staticmethod
    def _member_scores(member: Any, X: np.ndarray) -> np.ndarray:
        parts = [member.score(X[i:i + SCORE_CHUNK]) for i in range(0, X.shape[0], SCORE_CHUNK)]
        return np.concatenate(parts)

    def _validate(self, X: Any) -> np.ndarray:
        """Rows to score, checked by scikit-learn's ``validate_data`` against the fit."""
        self._check_fitted()
        try:
            X = validate_data(self, X, dtype=_FLOATS, reset=False, ensure_all_finite=False)
        except ValueError as exc:
            raise InvalidRiskInput(f"score: {exc}") from None
        return finite_rows(X, "score")

    def decision_function(self, X: Any) -> np.ndarray:
        """The detector's native scores of the rows of ``X`` (float64; higher = more
        anomalous): PyOD's ``decision_function``, or the ensemble's combination."""
        return self.score_checked(self._validate(X))

    def score_checked(self, X: np.ndarray) -> np.ndarray:
        """``decision_function`` for a float matrix already checked to be finite (as
        :meth:`FeatureSource.matrix` does for streamed batches): skips a second full pass."""
        self._check_fitted()
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise InvalidRiskInput(f"score: rows have shape {X.shape}, the detector was "
                                   f"fitted on {self.n_features_in_} features")
        kept = getattr(self, "kept_features_", None)
        if kept is not None:
            X = X[:, kept]
        if not self.member_stats_:
            return self._member_scores(self.members_[0], X)
        return self._combine([self._member_scores(m, X) for m in self.members_])

    def risk_score(self, X: Any) -> np.ndarray:
        """Risk scores of the rows of ``X``: native scores as robust z-scores against the fit
        rows' (``(score - score_center_) / score_scale_``); InvalidRiskInput if one is not
        finite."""
        return self.risk_score_checked(self._validate(X))

    def risk_score_checked(self, X: np.ndarray) -> np.ndarray:
        """:meth:`risk_score` for a matrix already checked to be finite."""
        scores = self.to_risk_scale(self.score_checked(X))
        bad = ~np.isfinite(scores)
        if bad.any():
            raise InvalidRiskInput(f"score: row {int(np.flatnonzero(bad)[0])} got a non-finite "
                                   f"score from {'+'.join(self.member_kinds_)}")
        return scores

    def to_risk_scale(self, native: np.ndarray) -> np.ndarray:
        """Native scores (``decision_function``) on the risk-score scale."""
        return (np.asarray(native, dtype=np.float64) - self.score_center_) / self.score_scale_

    def _combine(self, member_scores: list[np.ndarray]) -> np.ndarray:
        """The ensemble score from each member's scores of the same rows."""
        total = np.zeros(member_scores[0].shape[0], dtype=np.float64)
        for s, (mean, sd, sorted_train) in zip(member_scores, self.member_stats_, strict=True):
            if self.config_.combine == "zscore":
                total += (s - mean) / sd
            else:
                total += np.searchsorted(sorted_train, s, side="right") / sorted_train.size
        return total / len(member_scores)

    def predict(self, X: Any) -> np.ndarray:
        """1 for rows whose risk score is above ``threshold_``, else 0 (int64, as PyOD's)."""
        return (self.risk_score(X) > self.threshold_).astype(np.int64)

    def percentile(self, risk_scores: np.ndarray) -> np.ndarray:
        """Share (0-100) of the fit rows' risk scores at or below each risk score."""
        self._check_fitted()
        ranks = np.searchsorted(self.sorted_risk_scores_,
                                np.asarray(risk_scores, dtype=np.float64), "right")
        return 100.0 * ranks / self.sorted_risk_scores_.size

    def robust_z(self, X: Any) -> np.ndarray:
        """Robust z-scores of rows against the training population (median / MAD)."""
        self._check_fitted()
        return (np.asarray(X, dtype=np.float64) - self.feature_median_) / self.feature_scale_

    def _check_fitted(self) -> None:
        try:
            check_is_fitted(self, "members_")
        except NotFittedError:
            raise DetectorNotFitted("this RiskDetector is not fitted yet: call fit(X) first"
                                    ) from None


_DEFAULTS = RiskDetector().get_params(deep=False)
