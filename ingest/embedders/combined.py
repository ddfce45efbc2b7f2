"""Combined embedder: a weighted concatenation of vector columns already in the table.

Each input vector is L2-normalised, multiplied by ``sqrt(w_i / sum(w))`` and the pieces are
concatenated, so the result has unit length and the cosine of two combined vectors is the
weighted mean of the inputs' cosines (weights ``w_i / sum(w)``). A null input contributes a
zero piece. State: the input columns, their dimensions and the weights (JSON only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from vectorstore import TableInfo, VectorStore

from ..runner import Runner
from .base import (
    Embedder,
    EmbedResult,
    Progress,
    check_columns,
    from_vector_array,
    l2_normalize,
    register,
    to_vector_array,
)
from .data import FitData
from .errors import EmbeddingError
from .runner import embed


@register
class CombinedEmbedder(Embedder):
    """``{column: weight}`` -> one unit vector whose cosine is the weighted mean of cosines."""

    kind: ClassVar[str] = "combined"
    default_column: ClassVar[str] = "vec_combined"

    def __init__(self, weights: Mapping[str, float]) -> None:
        if not weights:
            raise EmbeddingError("give at least one vector column to combine")
        bad = {c: w for c, w in weights.items() if not (float(w) > 0)}
        if bad:
            raise EmbeddingError(f"weights must be > 0, got {bad}")
        self.weights = {str(c): float(w) for c, w in weights.items()}

    def get_params(self) -> dict[str, Any]:
        return {"weights": self.weights}

    def input_columns(self, info: TableInfo) -> list[str]:
        return list(self.weights)

    def _fit(self, data: FitData) -> CombinedEmbedder:
        info = data.info
        table = info.name
        check_columns(info, list(self.weights), "vector")
        not_vec = [c for c in self.weights if c not in info.vectors]
        if not_vec:
            raise EmbeddingError(f"table {table!r}: {not_vec} are not vector columns; vector "
                                 f"columns: {sorted(info.vectors)}")
        self.dims_ = {c: info.vectors[c].dim for c in self.weights}
        self.dim_ = sum(self.dims_.values())
        return self

    def transform(self, batch: pa.RecordBatch) -> pa.FixedSizeListArray:
        self._check_fitted()
        check_columns(TableInfo("batch", batch.schema), list(self.weights), "vector")
        total = sum(self.weights.values())
        parts = []
        for c, w in self.weights.items():
            v = from_vector_array(batch.column(c), self.dims_[c]).astype(np.float64)
            parts.append(l2_normalize(v) * np.sqrt(w / total))
        return to_vector_array(np.concatenate(parts, axis=1))

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {}, {"dims": self.dims_}

    def _load_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.dims_ = {k: int(v) for k, v in info["dims"].items()}


def embed_combined(store: VectorStore, table: str, weights: Mapping[str, float], *,
                   column: str = "vec_combined", batch_size: int = 16_384,
                   progress: Progress | None = None, runner: Runner | str | None = None
                   ) -> EmbedResult:
    """Write ``column`` as the weighted concatenation of the ``weights`` vector columns.

    ``progress(rows_done, total)`` is called after each batch, as in :func:`embed`.
    """
    return embed(store, table, CombinedEmbedder(weights), column, batch_size=batch_size,
                 progress=progress, runner=runner)
