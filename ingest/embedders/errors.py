"""Errors of the embedders: each a :class:`ingest.errors.EmbeddingError`, raised before any write."""

from __future__ import annotations

from ..errors import EmbeddingError, ModelIntegrityError


class UnknownColumnError(EmbeddingError):
    """An input column named by the caller is not in the table."""


class EmptyInputError(EmbeddingError):
    """The table has no rows, or an input column has no usable value."""


class ModelNotFoundError(EmbeddingError):
    """A model path (or name) does not point at a model on this machine."""


class DimensionConflictError(EmbeddingError):
    """The target column exists with another dimension, metric or type."""


__all__ = [
    "DimensionConflictError",
    "EmbeddingError",
    "EmptyInputError",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "UnknownColumnError",
]
