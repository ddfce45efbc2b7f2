"""Sparse writes: new values of existing columns for a few rows of a fragment, which the
commit moves to a new fragment instead of rewriting the fragment's columns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from .stage import _holders, leaf_paths

SPARSE_SHARE = 0.03
"""A write of existing columns on at most this share of a fragment's rows is *sparse*: at
commit time those rows are moved (deleted from the fragment, appended whole with the new
values to a new fragment) instead of rewriting the columns for every row of the fragment,
which costs like a write of all of them."""


def is_sparse(rows: int, physical_rows: int) -> bool:
    """Whether writing ``rows`` rows of a fragment of ``physical_rows`` rows is sparse."""
    return 0 < rows <= SPARSE_SHARE * physical_rows


@dataclass
class SparsePiece:
    """New values of existing columns for a few rows of one fragment, kept in memory until
    the commit moves those rows (picklable; at most :data:`SPARSE_SHARE` of a fragment)."""

    fragment_id: int
    physical_rows: int
    addrs: np.ndarray
    """Row addresses (sorted) in the fragment as staged."""
    values: pa.Table
    """One row per address: the columns written."""
    rewritten: dict[str, list[str]]
    """Column -> paths of the fragment's files that held it when staged."""
    columns: tuple[str, ...]


def stage_sparse(frag: Any, schema_paths: dict[str, int], addrs: np.ndarray,
                 values: pa.Table) -> SparsePiece:
    """A :class:`SparsePiece` setting existing columns ``values`` at ``addrs`` of ``frag``."""
    meta = frag.metadata
    order = np.argsort(addrs, kind="stable")
    addrs = np.asarray(addrs, dtype=np.uint64)[order]
    if not (order == np.arange(len(order))).all():
        values = values.take(pa.array(order))
    rewritten = {c: _holders(meta, {schema_paths[p] for p in leaf_paths(schema_paths, c)})
                 for c in values.column_names}
    return SparsePiece(meta.id, meta.physical_rows, addrs, values.combine_chunks(), rewritten,
                       tuple(values.column_names))

