"""Risk errors: specific subclasses of :class:`services.errors.RiskError`."""

from __future__ import annotations

from services.errors import ModelIntegrityError, RiskError


class InvalidRiskInput(RiskError):
    """The data to score is unusable: empty, constant, null or NaN features."""


class TooManyRows(RiskError):
    """A detector whose cost is quadratic in rows was asked to fit on more rows than allowed."""


class ModelNotFound(RiskError):
    """No persisted risk model for the table (or under the id given)."""


__all__ = ["InvalidRiskInput", "ModelIntegrityError", "ModelNotFound", "RiskError", "TooManyRows"]
