"""Embedders: tabular, text, behaviour and combined vectors written into named vector columns.

Public entry points: :func:`embed` (fit + write one embedder's column; an embedder's own
``fit`` takes Arrow rows, :class:`FitData`), :func:`embed_behavior`
(customers and products in one space), :func:`embed_combined`, :func:`load_embedder` (the fitted
state of a column, checksum- and version-checked), and the embedder classes.
"""

from .base import Embedder, EmbedResult, load_embedder
from .data import FitData
from .errors import (
    DimensionConflictError,
    EmptyInputError,
    ModelIntegrityError,
    ModelNotFoundError,
    UnknownColumnError,
)
from .runner import embed, embed_columns
from .tabular import TabularEmbedder
from .text import ProfileTemplate, TextEmbedder

__all__ = [
    "DimensionConflictError",
    "EmbedResult",
    "Embedder",
    "EmptyInputError",
    "FitData",
    "ModelIntegrityError",
    "ModelNotFoundError",
    "ProfileTemplate",
    "TabularEmbedder",
    "TextEmbedder",
    "UnknownColumnError",
    "embed",
    "embed_columns",
    "load_embedder",
]
