"""Binary query results back to Arrow: psycopg loaders that keep vectors, timestamps and dates
as raw bytes / integers, and the column decoder that turns them into Arrow arrays at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from psycopg.adapt import Loader
from psycopg.pq import Format

from .codec import _PG_EPOCH_DAYS, _PG_EPOCH_US


class _BytesLoader(Loader):
    format = Format.BINARY

    def load(self, data: Any) -> bytes:
        return bytes(data)


class _IntLoader(Loader):
    """Timestamps and dates as their raw integer (microseconds / days since 2000-01-01)."""

    format = Format.BINARY

    def load(self, data: Any) -> int:
        return int.from_bytes(data, "big", signed=True)


def _decode_column(values: list[Any], field: pa.Field) -> pa.Array:
    typ = field.type
    n = len(values)
    if pa.types.is_fixed_size_list(typ):
        dim = typ.list_size
        nulls = np.fromiter((v is None for v in values), dtype=bool, count=n)
        blank = bytes(4 + 4 * dim)
        raw = b"".join(blank if v is None else v for v in values)
        mat = np.frombuffer(raw, dtype=">f4").reshape(n, dim + 1)[:, 1:].astype(np.float32)
        mask = pa.array(nulls) if nulls.any() else None
        return pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), dim, mask=mask)
    if pa.types.is_timestamp(typ):
        ints = pc.add(pa.array(values, pa.int64()), _PG_EPOCH_US)
        return ints.cast(pa.timestamp("us", tz=typ.tz)).cast(typ)
    if pa.types.is_date(typ):
        ints = pc.add(pa.array(values, pa.int64()), _PG_EPOCH_DAYS).cast(pa.int32())
        return ints.cast(pa.date32()).cast(typ)
    return pa.array(values, type=typ)


# --------------------------------------------------------------------------- connection details
