"""Table descriptions shared by every backend: vector columns, metrics, table info, capabilities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pyarrow as pa

from .errors import DimensionMismatch, SchemaMismatch
from .names import check_name


class Metric(StrEnum):
    """How vectors are compared.

    ``cosine`` and ``dot`` are similarities: the ``score`` column of a search is higher for
    closer rows. ``l2`` is a Euclidean distance: the search returns it in a ``distance``
    column, lower is closer. No column is ever both.
    """

    COSINE = "cosine"
    DOT = "dot"
    L2 = "l2"

    @property
    def result_column(self) -> str:
        """Name of the column a search adds: ``score`` (similarity) or ``distance`` (l2)."""
        return "distance" if self is Metric.L2 else "score"

    @property
    def higher_is_closer(self) -> bool:
        return self is not Metric.L2


@dataclass(frozen=True)
class VectorColumn:
    """A fixed-size float32 vector column: its name, dimension and metric."""

    name: str
    dim: int
    metric: Metric = Metric.COSINE

    def __post_init__(self) -> None:
        check_name(self.name, "vector column name")
        if not isinstance(self.dim, int) or self.dim <= 0:
            raise SchemaMismatch(f"vector column {self.name!r}: dimension must be > 0, got {self.dim!r}")
        object.__setattr__(self, "metric", Metric(self.metric))

    @property
    def arrow_type(self) -> pa.DataType:
        return pa.list_(pa.float32(), self.dim)

    def field(self) -> pa.Field:
        return pa.field(self.name, self.arrow_type)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim, "metric": str(self.metric)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VectorColumn:
        return cls(name=d["name"], dim=int(d["dim"]), metric=Metric(d["metric"]))


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports beyond the common interface."""

    versions: bool = False
    """``versions()`` and ``restore()`` work."""
    ann_index: bool = True
    """``create_vector_index`` builds an approximate index."""
    scalar_index: bool = True
    prefilter: bool = True
    """Filtered searches apply the filter before top-k."""
    index_types: tuple[str, ...] = ()
    """Accepted ``index_type`` values for :meth:`VectorStore.create_vector_index`."""
    partitions: bool = False
    """The table has several independently stageable partitions (Lance fragments) that
    another process can scan and stage (:meth:`VectorStore.stage_partition`)."""


MetadataPatch = Mapping[str | tuple[str, ...], Any]
"""Metadata updates: a top-level key, or a path of keys into nested dicts, to a new value
(None removes it)."""


def patch_metadata(metadata: dict[str, Any], updates: MetadataPatch) -> dict[str, Any]:
    """``metadata`` with ``updates`` applied in order (the input is not changed).

    ``{"owner": "crm"}`` replaces a top-level key; ``{("embedders", "vec_x"): entry}`` sets
    one entry of a nested dict (created when missing) and leaves its other entries alone,
    so two writers patching different paths never overwrite each other's values.
    """
    import copy
    import json

    out = copy.deepcopy(metadata)
    for key, value in updates.items():
        path = (key,) if isinstance(key, str) else tuple(key)
        if not path or not all(isinstance(p, str) for p in path):
            raise TypeError(f"metadata key must be a string or a tuple of strings, got {key!r}")
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                if value is None:
                    break
                child = node[part] = {}
            node = child
        else:
            if value is None:
                node.pop(path[-1], None)
            else:
                node[path[-1]] = copy.deepcopy(value)
    json.dumps(out)  # fail early on values JSON cannot hold
    return out


@dataclass(frozen=True)
class TableInfo:
    """What a backend knows about a table: Arrow schema, key, vector columns and metadata.

    ``metadata`` is a JSON-compatible dict owned by the layers above (embedders record their
    kind, model and checksum there); the store keeps it with the table.
    """

    name: str
    schema: pa.Schema
    key: str | None = None
    vectors: dict[str, VectorColumn] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    def vector(self, column: str | None = None) -> VectorColumn:
        """The named vector column, or the only one when ``column`` is None."""
        from .errors import ColumnNotFound

        if column is None:
            if len(self.vectors) == 1:
                return next(iter(self.vectors.values()))
            if not self.vectors:
                raise ColumnNotFound(f"table {self.name!r} has no vector column")
            raise ColumnNotFound(
                f"table {self.name!r} has several vector columns {sorted(self.vectors)}: name one"
            )
        try:
            return self.vectors[column]
        except KeyError:
            raise ColumnNotFound(
                f"table {self.name!r} has no vector column {column!r}; "
                f"vector columns: {sorted(self.vectors) or 'none'}"
            ) from None

    def with_metadata(self, updates: MetadataPatch) -> TableInfo:
        """A copy with ``updates`` merged into the metadata (see :func:`patch_metadata`)."""
        return TableInfo(self.name, self.schema, self.key, self.vectors,
                         patch_metadata(self.metadata, updates))

    def check_columns(self, columns: Sequence[str] | None) -> None:
        """Raise ColumnNotFound naming the first column that is not in the schema."""
        from .errors import ColumnNotFound

        if columns is None:
            return
        names = set(self.schema.names)
        for c in columns:
            if c not in names:
                raise ColumnNotFound(
                    f"table {self.name!r} has no column {c!r}; columns: {', '.join(self.schema.names)}"
                )


def check_vector_array(table: str, column: VectorColumn, arr: pa.Array | pa.ChunkedArray) -> None:
    """Raise DimensionMismatch if ``arr`` does not hold vectors of ``column.dim`` floats."""
    t = arr.type
    if pa.types.is_fixed_size_list(t):
        if t.list_size != column.dim:
            raise DimensionMismatch(
                f"table {table!r}, column {column.name!r}: vectors have {t.list_size} dimensions, "
                f"expected {column.dim}"
            )
        return
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        import pyarrow.compute as pc

        lengths = pc.list_value_length(arr)
        bad = pc.and_(pc.is_valid(lengths), pc.not_equal(lengths, column.dim))
        if pc.any(bad).as_py():
            idx = pc.index(bad, True).as_py()
            raise DimensionMismatch(
                f"table {table!r}, column {column.name!r}, row {idx}: vector has "
                f"{lengths[idx].as_py()} dimensions, expected {column.dim}"
            )
        return
    raise SchemaMismatch(
        f"table {table!r}, column {column.name!r}: expected a list of {column.dim} floats, got {t}"
    )


def new_table_info(name: str, schema: pa.Schema, *, key: str | None,
                   vectors: Sequence[VectorColumn], metadata: dict[str, Any] | None) -> TableInfo:
    """Check the parts of a ``create_table`` call and put them together.

    Names must be plain identifiers, vector columns already in ``schema`` must have the vector
    type and the others are appended, and the key must be a column.
    """
    from .errors import ColumnNotFound

    check_name(name, "table name")
    for fld in schema:
        check_name(fld.name, "column name")
    fields = list(schema.remove_metadata())
    present = {f.name: f for f in fields}
    for v in vectors:
        if v.name not in present:
            fields.append(v.field())
        elif present[v.name].type != v.arrow_type:
            raise SchemaMismatch(f"table {name!r}: column {v.name!r} is {present[v.name].type}, "
                                 f"vector column needs {v.arrow_type}")
    if key is not None and key not in {f.name for f in fields}:
        raise ColumnNotFound(f"table {name!r}: key column {key!r} is not in the schema")
    return TableInfo(name=name, schema=pa.schema(fields), key=key,
                     vectors={v.name: v for v in vectors}, metadata=dict(metadata or {}))
