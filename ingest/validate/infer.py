"""Column types: the table type of a native source type, whether one type holds another
without loss, and the narrowest type every value of a text column parses as."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from ..errors import MappingError
from .cast import (
    _FLOAT_RE,
    _INT_RE,
    UTC_TS,
    _blank_to_null,
    _cast_rows,
    _needs_json,
    _parse_timestamp,
    _valid_mask,
)

_SAMPLE = 1024  # values tried first when inferring a text column's type


def is_lossless(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether every value of ``source`` type fits ``target`` type without loss."""
    if source == target or pa.types.is_null(source):
        return True
    if pa.types.is_dictionary(source):
        return is_lossless(source.value_type, target)
    if pa.types.is_string(target) and (pa.types.is_string(source) or pa.types.is_large_string(source)
                                       or pa.types.is_integer(source)
                                       or pa.types.is_boolean(source)):
        return True
    if pa.types.is_integer(source) and pa.types.is_integer(target):
        if pa.types.is_signed_integer(target):
            return target.bit_width > source.bit_width or (
                target.bit_width == source.bit_width and pa.types.is_signed_integer(source))
        return pa.types.is_unsigned_integer(source) and target.bit_width >= source.bit_width
    if pa.types.is_floating(target):
        if pa.types.is_integer(source):
            return target.bit_width == 64
        if pa.types.is_floating(source):
            return target.bit_width >= source.bit_width
    if pa.types.is_timestamp(target) and (pa.types.is_timestamp(source) or pa.types.is_date(source)):
        return True
    if pa.types.is_fixed_size_list(target) and pa.types.is_floating(target.value_type):
        return pa.types.is_list(source) or pa.types.is_large_list(source) or \
            pa.types.is_fixed_size_list(source)
    if pa.types.is_list(target) and (pa.types.is_list(source) or pa.types.is_large_list(source)):
        return is_lossless(source.value_type, target.value_type)
    return pa.types.is_large_string(source) and pa.types.is_string(target)


def _normalise(t: pa.DataType, column: str = "?") -> pa.DataType:
    """The table type for a native source type: 64-bit numbers, UTC timestamps, plain
    strings; decimals and half floats as float64, unsigned 64-bit as int64 (checked per value),
    nested values (objects, maps, lists of lists) as JSON text, times of day as text. A type
    no store can hold (durations, intervals) is refused here, at ingest, not later in a
    migration."""
    if pa.types.is_dictionary(t):
        return _normalise(t.value_type, column)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t) or pa.types.is_null(t):
        return pa.string()
    if pa.types.is_integer(t):
        return pa.int64()
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return pa.float64()
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_date(t):
        return pa.date32()
    if pa.types.is_time(t):
        return pa.string()
    if pa.types.is_fixed_size_list(t) and pa.types.is_floating(t.value_type):
        return t  # a vector
    if _needs_json(t):
        return pa.string()
    if pa.types.is_large_list(t) or pa.types.is_list(t) or pa.types.is_fixed_size_list(t):
        return pa.list_(_normalise(t.value_type, column))
    if pa.types.is_fixed_size_binary(t) or pa.types.is_large_binary(t) or \
            pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_boolean(t) or pa.types.is_binary(t) or pa.types.is_string(t):
        return t
    raise MappingError(f"source column {column!r} has type {t}, which Kindred cannot store; "
                       "convert it in the source (e.g. a duration to seconds) or leave it out "
                       "(drop)")


def _all_match(text: pa.Array, regex: str) -> bool:
    """Whether every non-null value matches; the first values are tried alone first, so a
    text column is ruled out without matching the whole batch."""
    def matches(values: pa.Array) -> bool:
        found = pc.all(pc.match_substring_regex(values, regex), skip_nulls=True).as_py()
        return found is not False  # None: no value to test

    if not matches(text.slice(0, _SAMPLE)):
        return False
    return len(text) <= _SAMPLE or matches(text)


def infer_text_type(arr: pa.Array) -> pa.DataType:
    """int64, float64, UTC timestamp or string: the narrowest type every value parses as."""
    text = _blank_to_null(arr)
    if text.null_count == len(text):
        return pa.string()
    for regex, typ in ((_INT_RE, pa.int64()), (_FLOAT_RE, pa.float64())):
        if not _all_match(text, regex):
            continue
        if typ == pa.int64() and not _cast_rows(text, typ)[1].any():
            return typ
        if typ == pa.float64():
            return typ
    present = _valid_mask(text)
    if _all_match(text, r"^\d{4}-\d{2}-\d{2}") and \
            (_valid_mask(_parse_timestamp(text, None)) | ~present).all():
        return UTC_TS
    return pa.string()
