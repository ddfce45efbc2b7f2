"""PostgreSQL's binary COPY format built column-wise with Arrow and numpy (no Python code per
row), and the check that text holds no NUL character.

Each column becomes a large_binary array of "cells" (4-byte big-endian length, then the
value in PostgreSQL's binary format; length -1 for null); Arrow's element-wise join then
glues the cells of a row together.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SchemaMismatch
from ..schema import TableInfo
from .types import pg_type

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_COPY_TRAILER = b"\xff\xff"
_COPY_ROWS = 8192  # rows encoded at a time (bounds the memory of one COPY chunk)
_PG_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01 in microseconds since 1970
_PG_EPOCH_DAYS = 10_957
_ELEM_OID = {"boolean": 16, "smallint": 21, "integer": 23, "bigint": 20, "real": 700,
             "double precision": 701, "text": 25}


_EMPTY = pa.scalar(b"", pa.large_binary())


def _binary_rows(matrix: np.ndarray, sizes: np.ndarray | None = None) -> pa.Array:
    """A large_binary array whose row i is ``matrix[i, :sizes[i]]`` (all of it by default)."""
    n, w = matrix.shape
    matrix = np.ascontiguousarray(matrix, dtype=np.uint8)
    if sizes is None or (sizes == w).all():
        data = matrix.reshape(-1)
        offsets = np.arange(n + 1, dtype=np.int64) * w
    else:
        keep = np.arange(w)[None, :] < sizes[:, None]
        data = matrix[keep]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
    return pa.Array.from_buffers(pa.large_binary(), n,
                                 [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _be_bytes(values: np.ndarray, dtype: str) -> np.ndarray:
    """(n, itemsize) uint8 big-endian bytes of ``values``."""
    arr = np.ascontiguousarray(values.astype(dtype, copy=False))
    if not len(arr):  # e.g. the elements of lists that are all null or empty
        return np.zeros((0, arr.dtype.itemsize * int(np.prod(arr.shape[1:]))), np.uint8)
    return arr.view(np.uint8).reshape(len(values), -1)


def _valid(arr: pa.Array) -> np.ndarray | None:
    if arr.null_count == 0:
        return None
    return np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _fixed_cells(payload: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    n, w = payload.shape
    full = np.empty((n, 4 + w), dtype=np.uint8)
    lengths = np.full(n, w, dtype=">i4")
    if valid is not None:
        lengths[~valid] = -1
    full[:, :4] = lengths.view(np.uint8).reshape(n, 4)
    full[:, 4:] = payload
    sizes = None if valid is None else np.where(valid, 4 + w, 4)
    return _binary_rows(full, sizes)


def _var_cells(values: pa.Array, valid: np.ndarray | None) -> pa.Array:
    filled = pc.fill_null(values.cast(pa.large_binary()), _EMPTY)
    if valid is not None:  # a null cell is its length (-1) alone
        filled = pc.if_else(pa.array(valid), filled, _EMPTY)
    lengths = pc.binary_length(filled).to_numpy(zero_copy_only=False).astype(">i4")
    if valid is not None:
        lengths[~valid] = -1
    header = _binary_rows(lengths.view(np.uint8).reshape(len(values), 4))
    return pc.binary_join_element_wise(header, filled, _EMPTY)


def _numbers(arr: pa.Array, fill: Any = 0) -> np.ndarray:
    return pc.fill_null(arr, fill).to_numpy(zero_copy_only=False)


_FIXED_DTYPE = {"smallint": ">i2", "integer": ">i4", "bigint": ">i8", "real": ">f4",
                "double precision": ">f8"}


def _fixed_payload(arr: pa.Array, pgt: str) -> np.ndarray | None:
    """(n, width) uint8 binary values of a fixed-width type (nulls as zeros); None otherwise."""
    if pgt == "boolean":
        return _numbers(arr, False).astype(np.uint8).reshape(-1, 1)
    dtype = _FIXED_DTYPE.get(pgt)
    if dtype is not None:
        return _be_bytes(_numbers(arr), dtype)
    if pgt in ("timestamp", "timestamptz"):
        us = arr.cast(pa.timestamp("us", tz=arr.type.tz), safe=False).cast(pa.int64())
        return _be_bytes(_numbers(us) - _PG_EPOCH_US, ">i8")
    if pgt == "date":
        days = arr.cast(pa.date32()).cast(pa.int32())
        return _be_bytes(_numbers(days) - _PG_EPOCH_DAYS, ">i4")
    if pgt.startswith("vector("):
        n, dim = len(arr), arr.type.list_size
        flat = arr.values.slice(arr.offset * dim, n * dim)
        vals = _numbers(flat, 0.0).astype(np.float32, copy=False).reshape(n, dim)
        payload = np.empty((n, 4 + 4 * dim), dtype=np.uint8)
        payload[:, :2] = np.frombuffer(np.array([dim], ">i2").tobytes(), np.uint8)
        payload[:, 2:4] = 0
        payload[:, 4:] = _be_bytes(vals, ">f4").reshape(n, 4 * dim)
        return payload
    return None


def _scalar_cells(arr: pa.Array, pgt: str) -> pa.Array:
    payload = _fixed_payload(arr, pgt)
    if payload is not None:
        return _fixed_cells(payload, _valid(arr))
    if pgt in ("text", "bytea"):
        return _var_cells(arr, _valid(arr))
    raise SchemaMismatch(f"cannot encode PostgreSQL type {pgt}")  # pragma: no cover


def _array_cells(arr: pa.Array, elem_pgt: str) -> pa.Array:
    n = len(arr)
    offsets = arr.offsets
    start, stop = offsets[0].as_py(), offsets[n].as_py()
    elems = _scalar_cells(arr.values.slice(start, stop - start), elem_pgt)
    rel = pc.subtract(offsets.cast(pa.int64()), start)
    joined = pc.fill_null(pc.binary_join(pa.LargeListArray.from_arrays(rel, elems), _EMPTY),
                          _EMPTY)
    counts = np.diff(rel.to_numpy())
    header = np.zeros((n, 5), dtype=">i4")  # ndim, has-null flag, element oid, length, lower bound
    header[:, 0] = counts > 0
    header[:, 2] = _ELEM_OID[elem_pgt]
    header[:, 3] = counts
    header[:, 4] = 1
    sizes = np.where(counts > 0, 20, 12)  # an empty array is ndim 0, without dimension info
    head = _binary_rows(header.view(np.uint8).reshape(n, 20), sizes)
    payload = pc.binary_join_element_wise(head, joined, _EMPTY)
    return _var_cells(payload, _valid(arr))


def _column_cells(arr: pa.Array, field: pa.Field) -> pa.Array:
    pgt = pg_type(field)
    if pgt.endswith("[]"):
        return _array_cells(arr, pgt[:-2])
    return _scalar_cells(arr, pgt)


def _fixed_rows(batch: pa.RecordBatch) -> np.ndarray | None:
    """Rows as one (n, width) byte matrix when every column is fixed-width and null-free."""
    if any(c.null_count for c in batch.columns):
        return None
    n = batch.num_rows
    parts = [np.tile(np.frombuffer(np.array([batch.num_columns], ">i2").tobytes(), np.uint8),
                     (n, 1))]
    for arr, fld in zip(batch.columns, batch.schema, strict=True):
        payload = _fixed_payload(arr, pg_type(fld))
        if payload is None:
            return None
        length = np.frombuffer(np.array([payload.shape[1]], ">i4").tobytes(), np.uint8)
        parts += [np.tile(length, (n, 1)), payload]
    return np.concatenate(parts, axis=1)


def encode_copy_rows(batch: pa.RecordBatch) -> memoryview:
    """The rows of ``batch`` in PostgreSQL's binary COPY format (no header or trailer)."""
    fixed = _fixed_rows(batch)
    if fixed is not None:
        # ndarray is a buffer; numpy declares its __buffer__ for Python >= 3.12 only
        return memoryview(fixed.reshape(-1))  # type: ignore[arg-type]
    n = batch.num_rows
    count = _binary_rows(np.tile(np.frombuffer(np.array([batch.num_columns], ">i2").tobytes(),
                                               np.uint8), (n, 1)))
    cells = [_column_cells(batch.column(i), batch.schema.field(i))
             for i in range(batch.num_columns)]
    rows = pc.binary_join_element_wise(count, *cells, _EMPTY)
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int64)
    begin, end = offsets[rows.offset], offsets[rows.offset + n]
    return memoryview(rows.buffers()[2])[begin:end]


def _check_text(info: TableInfo, batch: pa.RecordBatch) -> None:
    """PostgreSQL text cannot hold NUL characters: refuse them by row and column up front."""
    for fld, arr in zip(batch.schema, batch.columns, strict=True):
        typ, flat = fld.type, arr
        if pa.types.is_list(typ) or pa.types.is_large_list(typ):
            typ, flat = typ.value_type, arr.flatten()
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)) or not len(flat):
            continue
        hit = pc.fill_null(pc.match_substring(flat, "\x00"), False)
        if pc.any(hit).as_py():
            idx = pc.index(hit, True).as_py()
            where = "row" if flat is arr else "list element"
            raise SchemaMismatch(f"table {info.name!r}, column {fld.name!r}, {where} {idx}: "
                                 "PostgreSQL text cannot contain NUL characters")
