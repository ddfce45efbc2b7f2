"""A Lance table's Kindred description (key, vector columns, metadata), kept in the schema's
metadata so that it changes in the same commit as the data."""

from __future__ import annotations

import json

import pyarrow as pa

from ..schema import TableInfo, VectorColumn

DESCRIPTION_KEY = b"kindred"


def describe(info: TableInfo) -> bytes:
    """The description kept in the table's schema metadata."""
    return json.dumps({"key": info.key, "vectors": [v.to_dict() for v in info.vectors.values()],
                       "metadata": info.metadata}, sort_keys=True, default=str).encode()


def read_description(name: str, schema: pa.Schema) -> TableInfo:
    """TableInfo from a Lance schema and its metadata (a table made outside Kindred: every
    float32 fixed-size-list column is a cosine vector column)."""
    raw = (schema.metadata or {}).get(DESCRIPTION_KEY)
    plain = schema.remove_metadata()
    if raw is None:
        vectors = {f.name: VectorColumn(f.name, f.type.list_size) for f in plain
                   if pa.types.is_fixed_size_list(f.type) and pa.types.is_float32(f.type.value_type)}
        return TableInfo(name=name, schema=plain, vectors=vectors)
    desc = json.loads(raw)
    vectors = {v["name"]: VectorColumn.from_dict(v) for v in desc.get("vectors", [])
               if v["name"] in plain.names}
    return TableInfo(name=name, schema=plain, key=desc.get("key"), vectors=vectors,
                     metadata=desc.get("metadata", {}))


