"""The Milvus backend's catalogue: one row of ``_kindred_catalog`` per physical collection.

A row holds the table's description (exact Arrow schema, key, vector columns, metadata,
index definitions) as JSON split into VARCHAR chunks, so a description of any size fits
Milvus' 65,535-byte strings. Commit locks on a server keep their leases here too
(``lock:<table>`` rows, see :mod:`vectorstore.milvus.conn`).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..schema import TableInfo, VectorColumn
from . import types as mt
from .filter import quote_string

CATALOG = "_kindred_catalog"
PHYSICAL = "__kindred_"
"""What a physical collection's name holds between the table name and its random suffix."""


@dataclass(frozen=True)
class Described:
    """A table as committed: its description, physical collection and index definitions."""

    info: TableInfo
    physical: str
    indexes: dict[str, dict[str, Any]] = field(default_factory=dict)


def describe_text(info: TableInfo, indexes: dict[str, dict[str, Any]]) -> str:
    """The catalogue text of a description (JSON; the Arrow schema as base64 IPC)."""
    return json.dumps({
        "key": info.key, "vectors": [v.to_dict() for v in info.vectors.values()],
        "metadata": info.metadata, "indexes": indexes,
        "arrow_schema": base64.b64encode(info.schema.serialize().to_pybytes()).decode("ascii"),
    }, sort_keys=True, default=str)


def parse_description(name: str, physical: str, text: str) -> Described:
    """The inverse of :func:`describe_text`, for table ``name`` held in ``physical``."""
    d = json.loads(text)
    schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(d["arrow_schema"])))
    vectors = {v["name"]: VectorColumn.from_dict(v) for v in d.get("vectors", [])}
    info = TableInfo(name, schema, d.get("key"), vectors, d.get("metadata", {}))
    return Described(info, physical, dict(d.get("indexes") or {}))


def _chunks(text: str) -> list[str]:
    return [text[i:i + mt.MAX_VARCHAR] for i in range(0, len(text), mt.MAX_VARCHAR)] or [""]


def catalog_schema() -> Any:
    """The catalogue collection's Milvus schema (a pad vector: Milvus needs one)."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("collection", DataType.VARCHAR, is_primary=True, max_length=255)
    schema.add_field("table_name", DataType.VARCHAR, max_length=255)
    schema.add_field("description", DataType.ARRAY, element_type=DataType.VARCHAR,
                     max_capacity=mt.MAX_CAPACITY, max_length=mt.MAX_VARCHAR)
    schema.add_field("created_us", DataType.INT64)
    schema.add_field(mt.PAD, DataType.FLOAT_VECTOR, dim=mt.PAD_DIM)
    return schema


def get_row(client: Any, pk: str) -> str | None:
    rows = client.query(CATALOG, filter=f"collection == {quote_string(pk)}",
                        output_fields=["description"])
    return "".join(rows[0]["description"]) if rows else None


def get_stamp(client: Any, pk: str) -> int | None:
    """When the description row of collection ``pk`` was last written (None: no row)."""
    rows = client.query(CATALOG, filter=f"collection == {quote_string(pk)}",
                        output_fields=["created_us"])
    return int(rows[0]["created_us"]) if rows else None


def put_row(client: Any, pk: str, table: str, text: str) -> None:
    client.upsert(CATALOG, [{
        "collection": pk, "table_name": table, "description": _chunks(text),
        "created_us": time.time_ns() // 1000, mt.PAD: [0.0] * mt.PAD_DIM}])


def delete_row(client: Any, pk: str) -> None:
    client.delete(CATALOG, filter=f"collection == {quote_string(pk)}")
