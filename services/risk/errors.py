"""Risk errors: specific subclasses of :class:`services.errors.RiskError`."""

from __future__ import annotations

from sklearn.exceptions import NotFittedError

from services.errors import ModelIntegrityError, RiskError


class InvalidRiskInput(RiskError, ValueError):
    """The data to score is unusable: empty, constant, null or NaN features (also a
    ``ValueError``, as scikit-learn's conventions ask of bad input to an estimator)."""


class DetectorNotFitted(RiskError, NotFittedError):
    """A detector was used before ``fit`` (also scikit-learn's ``NotFittedError``)."""


class TooManyRows(RiskError):
    """A detector whose cost is quadratic in rows was asked to fit on more rows than allowed."""


class ModelNotFound(RiskError):
    """No persisted risk model for the table (or under the id given)."""


__all__ = ["DetectorNotFitted", "InvalidRiskInput", "ModelIntegrityError", "ModelNotFound", "RiskError",
           "TooManyRows"]
