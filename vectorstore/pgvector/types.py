"""The Arrow -> PostgreSQL type map of the pgvector backend, and the exact Arrow schema kept as
text in the catalogue (so a table reads back with the types it was written with).
"""

from __future__ import annotations

import base64

import pyarrow as pa

from ..errors import SchemaMismatch
from .filter import plain_pg_type

SUPPORTED_TYPES = ("bool, int8/16/32/64, uint8/16/32, float32/64, string, large_string, binary, "
                   "large_binary, timestamp (with or without zone), date32/64, list of "
                   "string/int/float/bool, fixed_size_list<float32> (vector)")


def pg_type(field: pa.Field, table: str = "?") -> str:
    """The PostgreSQL column type storing an Arrow field, or SchemaMismatch naming the type."""
    typ = field.type
    base = plain_pg_type(typ)
    if base is not None:
        return base
    if pa.types.is_binary(typ) or pa.types.is_large_binary(typ):
        return "bytea"
    if pa.types.is_timestamp(typ):
        return "timestamptz" if typ.tz is not None else "timestamp"
    if pa.types.is_date32(typ) or pa.types.is_date64(typ):
        return "date"
    if pa.types.is_fixed_size_list(typ) and pa.types.is_float32(typ.value_type):
        return f"vector({typ.list_size})"
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        elem = plain_pg_type(typ.value_type)
        if elem is not None:
            return f"{elem}[]"
    raise SchemaMismatch(
        f"table {table!r}, column {field.name!r}: Arrow type {typ} is not supported by the "
        f"PostgreSQL backend; supported: {SUPPORTED_TYPES}"
    )


def _schema_to_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def _schema_from_text(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))
