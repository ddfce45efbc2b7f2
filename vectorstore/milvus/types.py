"""Arrow tables <-> Milvus collections: field types, and rows in both directions.

Milvus has fewer types than Arrow, so some columns are stored in a wider or encoded form;
the exact Arrow schema lives in the table's description and every read casts back to it:

- timestamps (any unit, with or without zone) as INT64 in their own unit, dates as INT32
  days (date64: INT64 ms); unsigned integers in the next wider signed type;
- binary values as an ARRAY of base64 VARCHAR chunks (Milvus has no binary scalar type);
- lists of bool/int/float/string as ARRAY fields (no null elements: Milvus cannot hold them);
- a vector column as a FLOAT_VECTOR (zeros where the row has no vector) plus a BOOL field
  ``_kindred_has_<column>`` that says whether the row has one (a Milvus vector cannot be
  null on every server version, and vector fields cannot be filtered on);
- a table without a key gets an auto-id primary key ``_kindred_row`` (insertion order), and
  a table without vectors a two-dimension ``_kindred_pad`` vector (every Milvus collection
  needs a vector field).

Names starting with ``_kindred`` are reserved for these fields, and Milvus's expression
keywords cannot be column names (its filter language has no identifier quoting).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import SchemaMismatch
from ..schema import TableInfo

ROW_ID = "_kindred_row"
PAD = "_kindred_pad"
PAD_DIM = 2
HAS_PREFIX = "_kindred_has_"
MAX_VARCHAR = 65_535
"""Bytes a Milvus VARCHAR holds."""
MAX_CAPACITY = 4_096
"""Elements a Milvus ARRAY holds."""
_B64_CHUNK = (MAX_VARCHAR // 4) * 3  # raw bytes per base64 chunk of at most MAX_VARCHAR chars
RESERVED_WORDS = frozenset({"and", "or", "not", "in", "like", "is", "null", "exists", "iso",
                            "interval", "true", "false", "between"})
SUPPORTED = ("bool, int8/16/32/64, uint8/16/32, float32/64, string, large_string, binary, "
             "large_binary, timestamp, date32/64, list of bool/int/float/string, "
             "fixed_size_list<float32> (vector)")


def has_field(column: str) -> str:
    return HAS_PREFIX + column


def check_column_name(table: str, name: str) -> None:
    """Refuse names Milvus cannot store or filter on (reserved prefix, expression keywords)."""
    if name.lower().startswith("_kindred"):
        raise SchemaMismatch(f"table {table!r}, column {name!r}: names starting with "
                             "'_kindred' are reserved by the Milvus backend")
    if name.lower() in RESERVED_WORDS:
        raise SchemaMismatch(f"table {table!r}, column {name!r}: {name!r} is a keyword of "
                             "Milvus's filter language, which cannot quote names: rename the "
                             "column")


def _element(typ: pa.DataType) -> tuple[str, dict[str, Any]] | None:
    """The Milvus type (and extra field arguments) of a plain scalar Arrow type."""
    if pa.types.is_boolean(typ):
        return "BOOL", {}
    if pa.types.is_int8(typ):
        return "INT8", {}
    if pa.types.is_int16(typ) or pa.types.is_uint8(typ):
        return "INT16", {}
    if pa.types.is_int32(typ) or pa.types.is_uint16(typ):
        return "INT32", {}
    if pa.types.is_int64(typ) or pa.types.is_uint32(typ):
        return "INT64", {}
    if pa.types.is_float32(typ):
        return "FLOAT", {}
    if pa.types.is_float64(typ):
        return "DOUBLE", {}
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "VARCHAR", {"max_length": MAX_VARCHAR}
    return None


def milvus_field(table: str, field: pa.Field, *, vector: bool = False
                 ) -> tuple[str, dict[str, Any]]:
    """``(DataType name, add_field arguments)`` storing an Arrow field, or SchemaMismatch."""
    typ = field.type
    if vector:
        return "FLOAT_VECTOR", {"dim": typ.list_size}
    plain = _element(typ)
    if plain is not None:
        return plain
    if pa.types.is_timestamp(typ) or pa.types.is_date64(typ):
        return "INT64", {}
    if pa.types.is_date32(typ):
        return "INT32", {}
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        return "ARRAY", {"element_type": "VARCHAR", "max_capacity": MAX_CAPACITY,
                         "max_length": MAX_VARCHAR}
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        elem = _element(typ.value_type)
        if elem is not None:
            return "ARRAY", {"element_type": elem[0], "max_capacity": MAX_CAPACITY, **elem[1]}
    raise SchemaMismatch(f"table {table!r}, column {field.name!r}: Arrow type {typ} is not "
                         f"supported by the Milvus backend; supported: {SUPPORTED}")


def key_field(table: str, field: pa.Field) -> tuple[str, dict[str, Any]]:
    """A primary key is INT64 or VARCHAR in Milvus."""
    typ = field.type
    if pa.types.is_integer(typ) and not pa.types.is_uint64(typ):
        return "INT64", {}
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return "VARCHAR", {"max_length": MAX_VARCHAR}
    raise SchemaMismatch(f"table {table!r}: key column {field.name!r} is {typ}; Milvus keys "
                         "are integers or strings")


def check_info(info: TableInfo) -> None:
    """Raise SchemaMismatch for a table this backend cannot store."""
    for f in info.schema:
        check_column_name(info.name, f.name)
        if f.name == info.key:
            key_field(info.name, f)
        else:
            milvus_field(info.name, f, vector=f.name in info.vectors)


def hidden_fields(info: TableInfo) -> list[str]:
    out = [has_field(v) for v in info.vectors]
    if info.key is None:
        out.insert(0, ROW_ID)
    if not info.vectors:
        out.append(PAD)
    return out


# --------------------------------------------------------------------------- Arrow -> Milvus


def _utf8_check(info: TableInfo, name: str, arr: pa.Array) -> None:
    if not len(arr):
        return
    lengths = pc.binary_length(arr.cast(pa.large_binary()))
    longest = pc.max(lengths).as_py()
    if longest is not None and longest > MAX_VARCHAR:
        row = pc.index(lengths, longest).as_py()
        raise SchemaMismatch(f"table {info.name!r}, column {name!r}, row {row}: a string of "
                             f"{longest:,} bytes; Milvus holds at most {MAX_VARCHAR:,}")


def _list_values(info: TableInfo, name: str, arr: pa.Array) -> list[Any]:
    flat = pc.list_flatten(arr)
    if flat.null_count:
        raise SchemaMismatch(f"table {info.name!r}, column {name!r}: a list holds a null "
                             "element, which Milvus arrays cannot store")
    lengths = pc.list_value_length(arr)
    longest = pc.max(lengths).as_py() if len(arr) else None
    if longest is not None and longest > MAX_CAPACITY:
        row = pc.index(lengths, longest).as_py()
        raise SchemaMismatch(f"table {info.name!r}, column {name!r}, row {row}: a list of "
                             f"{longest:,} elements; Milvus arrays hold at most {MAX_CAPACITY:,}")
    typ = arr.type.value_type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        _utf8_check(info, name, flat)
    if pa.types.is_unsigned_integer(typ):
        arr = arr.cast(pa.list_(pa.int64()))
    return arr.to_pylist()


def _binary_values(info: TableInfo, name: str, arr: pa.Array) -> list[Any]:
    out: list[Any] = []
    for i, value in enumerate(arr.to_pylist()):
        if value is None:
            out.append(None)
            continue
        chunks = [base64.b64encode(value[s:s + _B64_CHUNK]).decode("ascii")
                  for s in range(0, len(value), _B64_CHUNK)] or [""]
        if len(chunks) > MAX_CAPACITY:
            raise SchemaMismatch(f"table {info.name!r}, column {name!r}, row {i}: "
                                 f"{len(value):,} bytes; the Milvus backend stores at most "
                                 f"{MAX_CAPACITY * _B64_CHUNK:,} per value")
        out.append(chunks)
    return out


def column_values(info: TableInfo, name: str, arr: pa.Array) -> list[Any]:
    """The values of one conformed column in the form Milvus stores (see module docstring)."""
    typ = arr.type
    if pa.types.is_timestamp(typ) or pa.types.is_date64(typ):
        return arr.cast(pa.int64()).to_pylist()
    if pa.types.is_date32(typ):
        return arr.cast(pa.int32()).to_pylist()
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        return _binary_values(info, name, arr)
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return _list_values(info, name, arr)
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        _utf8_check(info, name, arr)
    return arr.to_pylist()


def vector_values(arr: pa.Array, dim: int) -> tuple[np.ndarray, list[bool]]:
    """``(n, dim)`` float32 rows (zeros for nulls) and the has-a-vector flags."""
    n = len(arr)
    valid = np.ones(n, dtype=bool) if arr.null_count == 0 else \
        np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    if n == 0:
        return np.zeros((0, dim), np.float32), []
    filled = arr if arr.null_count == 0 else arr.fill_null(pa.scalar([0.0] * dim, arr.type))
    flat = filled.flatten() if filled.offset == 0 else pc.list_flatten(filled)
    mat = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32).reshape(n, dim)
    return mat, valid.tolist()


def to_rows(info: TableInfo, table: pa.Table | pa.RecordBatch) -> list[dict[str, Any]]:
    """Milvus row dicts for rows already conformed to ``info`` (every column present)."""
    names: list[str] = []
    cols: list[Sequence[Any]] = []
    n = table.num_rows
    for name in table.schema.names:
        arr = table.column(name)
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        vec = info.vectors.get(name)
        if vec is not None:
            mat, flags = vector_values(arr, vec.dim)
            names += [name, has_field(name)]
            cols += [list(mat), flags]
        else:
            names.append(name)
            cols.append(column_values(info, name, arr))
    if not info.vectors:
        names.append(PAD)
        cols.append([[0.0] * PAD_DIM] * n)
    return [dict(zip(names, values, strict=True)) for values in zip(*cols, strict=True)]


# --------------------------------------------------------------------------- Milvus -> Arrow


def _decode_binary(values: list[Any]) -> list[bytes | None]:
    return [None if v is None else b"".join(base64.b64decode(c) for c in v) for v in values]


def decode_column(values: list[Any], field: pa.Field, flags: list[Any] | None = None
                  ) -> pa.Array:
    """An Arrow array of ``field``'s type from the values Milvus returned for it."""
    typ = field.type
    if flags is not None:  # a vector column
        dim = typ.list_size
        valid = np.asarray([bool(f) for f in flags], dtype=bool)
        n = len(values)
        mat = np.zeros((n, dim), dtype=np.float32)
        if n and valid.any():
            rows = [v for v, ok in zip(values, valid, strict=True) if ok]
            mat[valid] = np.asarray(rows, dtype=np.float32).reshape(-1, dim)
        mask = pa.array(~valid) if not valid.all() else None
        return pa.FixedSizeListArray.from_arrays(pa.array(mat.reshape(-1)), dim, mask=mask)
    if pa.types.is_timestamp(typ) or pa.types.is_date64(typ):
        return pa.array(values, pa.int64()).cast(typ)
    if pa.types.is_date32(typ):
        return pa.array(values, pa.int32()).cast(typ)
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        return pa.array(_decode_binary(values), typ)
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return pa.array([None if v is None else list(v) for v in values], typ)
    return pa.array(values, typ)


def from_rows(rows: list[dict[str, Any]], fields: Sequence[pa.Field], info: TableInfo
              ) -> pa.RecordBatch:
    """A record batch of ``fields`` from Milvus result rows (dicts, or hits' entities)."""
    arrays = []
    for f in fields:
        values = [r.get(f.name) for r in rows]
        flags = [r.get(has_field(f.name)) for r in rows] if f.name in info.vectors else None
        arrays.append(decode_column(values, f, flags))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(list(fields)))


def output_fields(info: TableInfo, columns: Sequence[str]) -> list[str]:
    """The Milvus fields to request for these columns (a vector's has-flag with it)."""
    out: list[str] = []
    for c in columns:
        out.append(c)
        if c in info.vectors:
            out.append(has_field(c))
    return out
