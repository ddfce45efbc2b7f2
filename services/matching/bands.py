"""Similarity bands: each ranked list split into high, medium and low score bands.

A band is a score range. By default the edges are the list's own score tertiles (the upper and
lower thirds of the scores returned), so every list reads "top third / middle / bottom third"
whatever the method's score scale; fixed edges (two descending thresholds, e.g. cosine 0.5 and
0.3) make bands comparable across products and calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import MatchingError

BAND_LABELS: tuple[str, str, str] = ("high", "medium", "low")
BAND_COLUMN = "band"


def check_bands(bands: Sequence[float] | None) -> tuple[float, float] | None:
    """Two finite descending thresholds (high >= first > medium >= second > low), or None."""
    if bands is None:
        return None
    edges = [float(b) for b in bands]
    if len(edges) != 2 or not all(np.isfinite(edges)) or edges[0] < edges[1]:
        raise MatchingError(f"bands must be two finite thresholds, highest first "
                            f"(high >= first, medium >= second), got {list(bands)!r}")
    return edges[0], edges[1]


def band_edges(scores: np.ndarray, edges: tuple[float, float] | None) -> tuple[float, float]:
    """The edges to use: the given ones, or the scores' upper and lower tertiles."""
    if edges is not None:
        return edges
    if len(scores) == 0:
        return float("nan"), float("nan")
    hi, lo = np.quantile(scores, [2 / 3, 1 / 3])
    return float(hi), float(lo)


def assign_bands(scores: np.ndarray, edges: tuple[float, float] | None = None) -> np.ndarray:
    """Band index per score: 0 high (>= upper edge), 1 medium (>= lower edge), 2 low."""
    hi, lo = band_edges(scores, edges)
    return np.where(scores >= hi, 0, np.where(scores >= lo, 1, 2)).astype(np.int8)


def with_bands(ranked: pa.Table, edges: tuple[float, float] | None = None
               ) -> tuple[pa.Table, list[dict[str, Any]]]:
    """``ranked`` (with a ``score`` column) plus a ``band`` column, and a per-band report:
    label, lower edge, rows, min and max score."""
    scores = np.asarray(ranked.column("score").to_numpy(), dtype=np.float64)
    hi, lo = band_edges(scores, edges)
    idx = assign_bands(scores, (hi, lo))
    labels = np.asarray(BAND_LABELS, dtype=object)[idx]
    out = ranked.append_column(BAND_COLUMN, pa.array(labels, pa.string()))
    report = []
    for i, (label, edge) in enumerate(zip(BAND_LABELS, (hi, lo, None), strict=True)):
        s = scores[idx == i]
        report.append({"band": label,
                       "min_edge": None if edge is None or not np.isfinite(edge) else edge,
                       "rows": len(s),
                       "min_score": float(s.min()) if len(s) else None,
                       "max_score": float(s.max()) if len(s) else None})
    return out, report
