"""Checks the backends share: search arguments, update data, filters bound to a schema, columns
to drop and scan positions (the bodies of :class:`vectorstore.base.VectorStore`'s helper
methods, documented there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .errors import InvalidOption, StoreError
from .filters import Filter, bind, parse_filter
from .schema import TableInfo, VectorColumn

if TYPE_CHECKING:
    from .base import Data, FilterLike


def check_options(options: dict[str, Any], accepted: set[str] | frozenset[str],
                  backend: str) -> None:
    """InvalidOption naming every option ``backend`` does not take, and the ones it does."""
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InvalidOption(f"unknown option(s) {', '.join(unknown)} for the {backend} "
                            f"backend; accepted: {', '.join(sorted(accepted))}")


def check_index_params(backend: str, index_type: str | None, default: str,
                       accepted: dict[str, set[str]], params: dict[str, Any]) -> str:
    """The upper-cased index type, after checking it and its parameters (names the backend
    accepts for that type, each a positive integer): one message for every backend."""
    kind = (index_type or default).upper()
    if kind not in accepted:
        raise InvalidOption(f"unknown index type {kind!r} for {backend}; accepted: "
                            f"{', '.join(accepted)}")
    unknown = sorted(set(params) - accepted[kind])
    if unknown:
        names = ", ".join(sorted(accepted[kind])) or "none"
        raise InvalidOption(f"unknown {kind} index parameter(s) {', '.join(unknown)}; "
                            f"accepted: {names}")
    for key, value in params.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InvalidOption(f"index parameter {key} must be a positive integer, "
                                f"got {value!r}")
    return kind


def lookup_columns(info: TableInfo, key: str | None, columns: Sequence[str] | None
                   ) -> tuple[str, list[str]]:
    """The key a lookup matches on (``key`` or the table's) and the columns it returns (the
    key first, then ``columns`` or every column), checked against the table."""
    key = key or info.key
    if key is None:
        raise StoreError(f"table {info.name!r} has no key column: name one with key=")
    cols = list(dict.fromkeys([key, *(columns if columns is not None else info.schema.names)]))
    info.check_columns(cols)
    return key, cols


def check_search(scheme: str, info: TableInfo, query: Any, k: int, vector_column: str | None,
                  params: dict[str, Any] | None, accepted: set[str],
                  ) -> tuple[VectorColumn, np.ndarray, dict[str, Any]]:
    from .errors import DimensionMismatch

    vec = info.vector(vector_column)
    q = np.asarray(query, dtype=np.float32)
    if q.ndim not in (1, 2) or q.shape[-1] != vec.dim:
        raise DimensionMismatch(
            f"table {info.name!r}, column {vec.name!r}: query has shape {q.shape}, "
            f"expected ({vec.dim},) or (n, {vec.dim})"
        )
    if not np.isfinite(q).all():
        raise DimensionMismatch(f"table {info.name!r}: query vector contains NaN or infinity")
    if not isinstance(k, int) or isinstance(k, bool) or k <= 0:
        raise InvalidOption(f"k must be a positive integer, got {k!r}")
    params = dict(params or {})
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise InvalidOption(f"unknown search parameter(s) {', '.join(unknown)} for the "
                            f"{scheme} backend; accepted: {', '.join(sorted(accepted))}")
    return vec, q, params


def update_data(info: TableInfo, data: Data, key: str | None,
                 ) -> tuple[str, pa.Table | None]:
    from .conform import conform
    from .errors import KeyConflict

    key = key or info.key
    if key is None:
        raise KeyConflict(f"table {info.name!r} has no key column: name one with key=")
    info.check_columns([key])
    batches = list(conform(TableInfo(info.name, info.schema, key, info.vectors), data,
                           partial=True, require_key=True, unique_key=True))
    if not batches:
        return key, None
    incoming = pa.Table.from_batches(batches)
    return key, incoming if incoming.num_columns >= 2 else None


def bind_filter(info: TableInfo, filter: FilterLike) -> Filter | None:
    if filter is None:
        return None
    if isinstance(filter, str):
        return parse_filter(filter, info.schema)
    return bind(filter, info.schema)


def columns_to_drop(info: TableInfo, columns: Sequence[str]) -> list[str]:
    from .errors import ColumnNotFound, SchemaMismatch

    cols = list(dict.fromkeys(columns))
    for c in cols:
        if c not in info.schema.names:
            raise ColumnNotFound(f"table {info.name!r} has no column {c!r}")
        if c == info.key:
            raise SchemaMismatch(f"table {info.name!r}: the key column {c!r} cannot be dropped")
    return cols

def _sorted_positions(positions: np.ndarray | Sequence[int]) -> np.ndarray:
    """Positions as a sorted, duplicate-free int64 array."""
    return np.unique(np.asarray(positions, dtype=np.int64).ravel())


def _check_positions(name: str, pos: np.ndarray, n_rows: int) -> None:
    if pos.size and (pos[0] < 0 or pos[-1] >= n_rows):
        bad = int(pos[0] if pos[0] < 0 else pos[-1])
        raise InvalidOption(f"table {name!r} has {n_rows:,} rows: position {bad} is out of range")
