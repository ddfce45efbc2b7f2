"""One error tree for the services package (matching, risk, evaluation, facade, CLI)."""

from __future__ import annotations

from vectorstore.errors import ArtifactCorrupt, KindredError


class ServiceError(KindredError):
    """Base class of every error raised by :mod:`services`."""


class UnknownProduct(ServiceError):
    """The product named is not in the products table or in any customer's holdings."""


class NotEnoughData(ServiceError):
    """Too few rows (e.g. known consumers) for a meaningful answer."""


class MatchingError(ServiceError):
    """Product matching cannot run as asked."""


class RiskError(ServiceError):
    """Risk scoring cannot run as asked."""


class ModelIntegrityError(RiskError, ArtifactCorrupt):
    """A persisted model does not match its checksum or was made by incompatible versions."""


class EvaluationError(ServiceError):
    """An evaluation cannot run as asked (no label, no holders, ...)."""


class StoreMissing(ServiceError):
    """No store exists at the given location (and the command does not create one)."""
