"""Bring incoming data to a table's schema, batch by batch, with errors that say where.

Shared by every backend so that all of them accept and refuse exactly the same data.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import KeyConflict, SchemaMismatch
from .schema import TableInfo, check_vector_array


def iter_batches(data: object) -> Iterator[pa.RecordBatch]:
    """Record batches from a Table, RecordBatch, RecordBatchReader or iterable of batches."""
    if isinstance(data, pa.Table):
        yield from data.to_batches()
    elif isinstance(data, pa.RecordBatch):
        yield data
    elif isinstance(data, pa.RecordBatchReader):
        yield from data
    elif isinstance(data, Iterable):
        for b in data:
            if isinstance(b, pa.Table):
                yield from b.to_batches()
            elif isinstance(b, pa.RecordBatch):
                yield b
            else:
                raise SchemaMismatch(f"expected Arrow record batches, got {type(b).__name__}")
    else:
        raise SchemaMismatch(
            f"expected a pyarrow Table, RecordBatch or RecordBatchReader, got {type(data).__name__}"
        )


def _cast_column(info: TableInfo, name: str, arr: pa.Array, target: pa.Field) -> pa.Array:
    vec = info.vectors.get(name)
    if vec is not None:
        check_vector_array(info.name, vec, arr)
    if arr.type == target.type:
        out = arr
    else:
        try:
            out = arr.cast(target.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise SchemaMismatch(
                f"table {info.name!r}, column {name!r}: cannot store {arr.type} values as "
                f"{target.type}: {exc}"
            ) from exc
    if vec is not None and len(out):
        flat = out.values if out.offset == 0 else out.flatten()
        flat_np = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float32)
        bad = ~np.isfinite(flat_np)
        if out.null_count and out.offset == 0:  # a null vector's slots are not values
            bad = bad[:len(out) * vec.dim] & np.repeat(
                out.is_valid().to_numpy(zero_copy_only=False), vec.dim)
        if bad.any():
            row = int(np.argmax(bad) // vec.dim)
            raise SchemaMismatch(
                f"table {info.name!r}, column {name!r}, row {row}: vector contains NaN or "
                "infinite values"
            )
    if not target.nullable and out.null_count:
        row = pc.index(pc.is_null(out), True).as_py()
        raise SchemaMismatch(f"table {info.name!r}, column {name!r}, row {row}: null in a "
                             "column that does not allow nulls")
    return out


def conform_batch(info: TableInfo, batch: pa.RecordBatch, *, partial: bool = False,
                  require_key: bool = False) -> pa.RecordBatch:
    """Cast ``batch`` to the table schema.

    With ``partial=False`` the result has every table column (missing ones null). With
    ``partial=True`` it keeps only the columns the batch has (for updates by key), in table
    order. Extra columns, bad casts, wrong vector dimensions, NaN vectors and (with
    ``require_key``) null keys are errors.
    """
    schema = info.schema
    names = set(schema.names)
    extra = [c for c in batch.schema.names if c not in names]
    if extra:
        raise SchemaMismatch(
            f"table {info.name!r} has no column {extra[0]!r}; columns: {', '.join(schema.names)} "
            "(add new columns with add_columns first)"
        )
    if len(set(batch.schema.names)) != len(batch.schema.names):
        raise SchemaMismatch(f"table {info.name!r}: incoming data repeats a column name")
    fields, arrays = [], []
    for fld in schema:
        idx = batch.schema.get_field_index(fld.name)
        if idx < 0:
            if partial:
                continue
            if info.key == fld.name and require_key:
                raise KeyConflict(f"table {info.name!r}: incoming data has no key column {fld.name!r}")
            if not fld.nullable:
                raise SchemaMismatch(f"table {info.name!r}: incoming data lacks column {fld.name!r}")
            arrays.append(pa.nulls(batch.num_rows, fld.type))
        else:
            arrays.append(_cast_column(info, fld.name, batch.column(idx), fld))
        fields.append(fld)
    out_schema = pa.schema(fields, metadata=schema.metadata)
    out = pa.RecordBatch.from_arrays(arrays, schema=out_schema)
    if require_key and info.key is not None:
        keys = out.column(info.key)
        if keys.null_count:
            row = pc.index(pc.is_null(keys), True).as_py()
            raise KeyConflict(f"table {info.name!r}, row {row}: key column {info.key!r} is null")
    return out


def conform(info: TableInfo, data: object, *, partial: bool = False,
            require_key: bool = False, unique_key: bool = False) -> Iterator[pa.RecordBatch]:
    """Stream ``data`` cast to the table schema (see :func:`conform_batch`).

    With ``unique_key`` a key value that repeats within the data is a KeyConflict, raised
    after the last batch (still before any writer commits); only the key column is kept.
    """
    key_chunks: list[pa.Array] = []
    for batch in iter_batches(data):
        out = conform_batch(info, batch, partial=partial, require_key=require_key)
        if unique_key and info.key is not None:
            key_chunks.append(out.column(info.key))
        yield out
    if key_chunks:
        keys = pa.chunked_array(key_chunks)
        counts = pc.value_counts(keys)
        dup = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
        if len(dup):
            first = pc.index(keys, dup[0]).as_py()
            raise KeyConflict(
                f"table {info.name!r}: key {info.key!r} value {dup[0].as_py()!r} appears more "
                f"than once in the data written (first at row {first})"
            )
