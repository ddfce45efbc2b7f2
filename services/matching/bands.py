"""Score bands: each ranked list split into high, medium and low bands by fixed score edges.

A band is a score range, the same for every list of a product, so a customer's band does not
depend on how long a list was asked for. The edges come from the whole base, never from the
returned list:

- calibrated probabilities (``propensity``): **high** at least twice the base rate, **medium**
  above the base rate, **low** at or below it (:func:`probability_edges`);
- similarity scores (the vector methods): the score distribution of the customers who do not
  hold the product, from a seeded sample of up to :data:`BASE_SAMPLE` of them: **high** is
  their top 10%, **medium** the next 20%, **low** the rest (:func:`base_edges`);
- or two fixed descending thresholds given by the caller (e.g. cosine 0.5 and 0.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import MatchingError

BAND_LABELS: tuple[str, str, str] = ("high", "medium", "low")
BAND_COLUMN = "band"
BASE_SAMPLE = 2_000
BASE_QUANTILES = (0.9, 0.7)


def probability_edges(base_rate: float) -> tuple[float, float]:
    """Probability bands: high >= twice the base rate, medium > the base rate."""
    return min(1.0, 2.0 * base_rate), float(np.nextafter(base_rate, 1.0))


def base_edges(scores: np.ndarray) -> tuple[float, float] | None:
    """Edges at the top 10% and top 30% of a sample of the base's scores (None if empty)."""
    s = np.asarray(scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if len(s) == 0:
        return None
    hi, lo = np.quantile(s, BASE_QUANTILES)
    return float(hi), float(lo)


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
    """The edges to use (``None``: no edges known, every row is low)."""
    if edges is not None:
        return edges
    return float("inf"), float("inf")


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
