"""Casting a source column to its table type: values that do not fit become null and are
flagged, with what was expected (text to numbers, booleans and dates; numbers without loss;
decimals; vectors; nested values as JSON text).

Bad rows are found with Arrow compute and numpy masks over whole columns; rows are only
bisected where no vectorised test exists.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_INT_RE = r"^[+-]?\d+$"
_FLOAT_RE = r"(?i)^[+-]?(\d+\.?\d*([e][+-]?\d+)?|\.\d+([e][+-]?\d+)?|inf|infinity|nan)$"
_BOOL_TRUE = ["true", "t", "yes", "y", "1"]
_BOOL_FALSE = ["false", "f", "no", "n", "0"]
_ISO_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M",
                "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z")
UTC_TS = pa.timestamp("us", tz="UTC")


def _valid_mask(arr: pa.Array) -> np.ndarray:
    return np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), dtype=bool)


def _np(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def _needs_trim(arr: pa.Array) -> bool:
    """Whether any string is empty or may start or end with whitespace (a byte test over the
    first and last byte of each value: ASCII whitespace, or any non-ASCII byte)."""
    if not pa.types.is_string(arr.type) or arr.null_count == len(arr):
        return True
    n = len(arr)
    offs = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset: arr.offset + n + 1]
    lens = np.diff(offs)
    valid = _valid_mask(arr) if arr.null_count else None
    live = lens > 0 if valid is None else (lens > 0) | ~valid
    if not live.all():
        return True
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    ends = np.concatenate([data[offs[:-1]], data[offs[1:] - 1]]) if valid is None else \
        np.concatenate([data[offs[:-1][valid]], data[offs[1:][valid] - 1]])
    return bool(((ends <= 32) | (ends >= 127)).any())


def _blank_to_null(arr: pa.Array) -> pa.Array:
    if not _needs_trim(arr):
        return arr
    trimmed = pc.utf8_trim_whitespace(arr)
    return pc.if_else(pc.equal(trimmed, ""), pa.scalar(None, pa.string()), trimmed)


def _parse_timestamp(arr: pa.Array, fmt: str | None) -> pa.Array:
    """UTC timestamps from text; values that do not parse become null."""
    if fmt is not None:
        return _checked_strptime(arr, fmt)
    try:
        out = arr.cast(pa.timestamp("us"))
        return out.cast(UTC_TS)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    result = pa.nulls(len(arr), UTC_TS)
    for f in _ISO_FORMATS:
        result = pc.coalesce(result, _checked_strptime(arr, f))
    return result


def _checked_strptime(arr: pa.Array, fmt: str) -> pa.Array:
    """strptime that also refuses dates that do not exist (2024-02-31 would roll over).

    The parsed value is formatted back and compared with the input, leading zeros and case
    aside; a mismatch means the input was normalised, so it is not a real date.
    """
    out = pc.strptime(arr, format=fmt, unit="us", error_is_null=True)
    if "%z" not in fmt and "%Z" not in fmt and out.null_count < len(out):
        back = pc.strftime(out.cast(pa.timestamp("s"), safe=False), format=fmt)

        def canon(x: pa.Array) -> pa.Array:
            return pc.replace_substring_regex(pc.utf8_lower(x), r"(^|\D)0+(\d)", r"\1\2")

        same = pc.equal(canon(back), canon(arr))
        out = pc.if_else(pc.fill_null(same, False), out, pa.scalar(None, out.type))
    return out.cast(UTC_TS)


def _cast_rows(arr: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray]:
    """Cast with safe checks; rows that cannot be cast are located by bisection and nulled.

    Used where no vectorised test exists (overflowing integers, exotic types); it costs one
    cast when every value fits.
    """
    try:
        return arr.cast(target, safe=True), np.zeros(len(arr), dtype=bool)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    bad = np.zeros(len(arr), dtype=bool)

    def visit(start: int, stop: int) -> None:
        try:
            arr.slice(start, stop - start).cast(target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            if stop - start == 1:
                bad[start] = True
                return
            mid = (start + stop) // 2
            visit(start, mid)
            visit(mid, stop)

    visit(0, len(arr))
    kept = pc.if_else(pa.array(bad), pa.scalar(None, arr.type), arr) if bad.any() else arr
    try:
        return kept.cast(target, safe=True), bad
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return pa.nulls(len(arr), target), _valid_mask(arr)


def convert(arr: pa.Array, target: pa.DataType, fmt: str | None = None,
            ) -> tuple[pa.Array, np.ndarray, str]:
    """Cast ``arr`` to ``target``: (values with bad ones null, bad-row mask, what was expected)."""
    expected = str(target)
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.string())
    if pa.types.is_float16(arr.type):  # no compute kernels for half floats: widen (lossless)
        arr = arr.cast(pa.float32())
    no_bad = np.zeros(len(arr), dtype=bool)
    if pa.types.is_decimal(arr.type) and (pa.types.is_floating(target) or
                                           pa.types.is_integer(target)):
        return _convert_decimal(arr, target)
    if pa.types.is_string(target) and _needs_json(arr.type):
        return _to_json_text(arr), no_bad, expected
    if pa.types.is_fixed_size_list(target) and pa.types.is_floating(target.value_type):
        return _convert_vector(arr, target)
    if arr.type == target:
        return arr, no_bad, expected
    if pa.types.is_string(arr.type) and not pa.types.is_string(target):
        text = _blank_to_null(arr)
        present = _valid_mask(text)
        if pa.types.is_integer(target):
            ok = _np(pc.match_substring_regex(text, _INT_RE))
            out, bad = _cast_rows(pc.if_else(pa.array(ok), text, pa.scalar(None, pa.string())),
                                  target)
            return out, (present & ~ok) | bad, f"an integer ({target})"
        if pa.types.is_floating(target):
            ok = _np(pc.match_substring_regex(text, _FLOAT_RE))
            out, bad = _cast_rows(pc.if_else(pa.array(ok), text, pa.scalar(None, pa.string())),
                                  target)
            return out, (present & ~ok) | bad, f"a number ({target})"
        if pa.types.is_boolean(target):
            low = pc.utf8_lower(text)
            yes = _np(pc.is_in(low, value_set=pa.array(_BOOL_TRUE)))
            no = _np(pc.is_in(low, value_set=pa.array(_BOOL_FALSE)))
            out = pc.if_else(pa.array(present & (yes | no)), pa.array(yes), pa.scalar(None, pa.bool_()))
            return out, present & ~(yes | no), "a boolean (true/false, yes/no, 1/0)"
        if pa.types.is_timestamp(target) or pa.types.is_date(target):
            parsed = _parse_timestamp(text, fmt)
            bad = present & ~_valid_mask(parsed)
            what = f"a date/time in the format {fmt!r}" if fmt else "an ISO-8601 date/time"
            if pa.types.is_date(target):
                parsed = parsed.cast(pa.timestamp("us")).cast(target)
            elif target.tz is None:
                parsed = parsed.cast(pa.timestamp(target.unit))
            else:
                parsed = parsed.cast(target)
            return parsed, bad, what
        out, bad = _cast_rows(text, target)
        return out, bad, expected
    if pa.types.is_string(target):
        if pa.types.is_nested(arr.type):
            return pa.nulls(len(arr), target), _valid_mask(arr), "a text value"
        out, bad = _cast_rows(arr, target)
        return out, bad, expected
    if (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)) and \
            (pa.types.is_integer(target) or pa.types.is_floating(target)):
        # lossless iff the value survives a round trip (catches overflow, fractions, NaN -> int)
        out = arr.cast(target, safe=False)
        back = out.cast(arr.type, safe=False)
        same = _np(pc.equal(back, arr))
        if pa.types.is_integer(arr.type) and pa.types.is_integer(target) and \
                pa.types.is_unsigned_integer(arr.type) != pa.types.is_unsigned_integer(target):
            # a wrap-around survives the round trip bit for bit: compare the signs too
            if pa.types.is_unsigned_integer(arr.type):
                same &= ~_np(pc.less(out, pa.scalar(0, out.type)))
            else:
                same &= ~_np(pc.less(arr, pa.scalar(0, arr.type)))
        if pa.types.is_floating(arr.type) and pa.types.is_floating(target):
            same |= _np(pc.is_nan(arr))
        bad = _valid_mask(arr) & ~same
        if bad.any():
            out = pc.if_else(pa.array(bad), pa.scalar(None, target), out)
        return out, bad, f"{target} without loss"
    if pa.types.is_timestamp(arr.type) and pa.types.is_timestamp(target):
        src = arr if arr.type.tz is not None or target.tz is None else arr.cast(
            pa.timestamp(arr.type.unit, tz="UTC"))
        out, bad = _cast_rows(src, target)
        return out, bad, expected
    out, bad = _cast_rows(arr, target)
    return out, bad, expected


def _needs_json(t: pa.DataType) -> bool:
    """Nested values (objects, maps, lists of lists or objects) are stored as JSON text."""
    if pa.types.is_struct(t) or pa.types.is_map(t) or pa.types.is_union(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) or \
            pa.types.is_list_view(t):
        return _needs_json(t.value_type) or not _plain_list_value(t.value_type)
    return False


def _plain_list_value(t: pa.DataType) -> bool:
    return (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
            or pa.types.is_floating(t) or pa.types.is_boolean(t) or pa.types.is_null(t)
            or pa.types.is_dictionary(t))


def _to_json_text(arr: pa.Array) -> pa.Array:
    """Nested values as compact JSON text (nulls stay null). A row-wise path: nested source
    columns are rare and small next to the rest of a load."""
    values = arr.to_pylist()
    return pa.array([None if v is None else json.dumps(v, default=str, ensure_ascii=False,
                                                       separators=(",", ":"))
                     for v in values], pa.string())


def _convert_decimal(arr: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray, str]:
    """Decimals as float64 (or integers) where the value survives the round trip exactly."""
    try:
        out = arr.cast(target, safe=False)
        back = out.cast(arr.type, safe=False)
        same = _np(pc.equal(back, arr))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        out, bad = _cast_rows(arr, target)
        return out, bad, f"a decimal that {target} holds exactly"
    bad = _valid_mask(arr) & ~same
    if bad.any():
        out = pc.if_else(pa.array(bad), pa.scalar(None, target), out)
    return out, bad, f"a decimal that {target} holds exactly (at most 15 significant digits)"


def _convert_vector(arr: pa.Array, target: pa.DataType) -> tuple[pa.Array, np.ndarray, str]:
    dim = target.list_size
    expected = f"a vector of {dim} finite numbers"
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)
            or pa.types.is_fixed_size_list(arr.type)):
        return pa.nulls(len(arr), target), _valid_mask(arr), expected
    lengths = pc.list_value_length(arr)
    bad = _valid_mask(arr) & ~_np(pc.equal(lengths, dim))
    flat = pc.list_flatten(arr)
    if len(flat):
        parents = np.asarray(pc.list_parent_indices(arr).to_numpy(zero_copy_only=False))
        vals = flat.cast(pa.float64(), safe=False) if not pa.types.is_floating(flat.type) else flat
        nonfinite = ~_np(pc.is_finite(vals)) | ~_valid_mask(vals)
        if nonfinite.any():
            bad[np.unique(parents[nonfinite])] = True
    if bad.any():
        arr = pc.if_else(pa.array(bad), pa.scalar(None, arr.type), arr)
    values = pc.list_flatten(arr).cast(pa.float32())
    valid = pa.array(_valid_mask(arr))
    out = pa.FixedSizeListArray.from_arrays(_pad_values(arr, values, dim), dim,
                                            mask=pc.invert(valid))
    return out, bad, expected


def _pad_values(arr: pa.Array, values: pa.Array, dim: int) -> pa.Array:
    """Flattened values with ``dim`` zeros in place of each null vector (slot keeping)."""
    valid = _valid_mask(arr)
    if valid.all():
        return values
    out = np.zeros((len(arr), dim), dtype=np.float32)
    out[valid] = np.asarray(values.to_numpy(zero_copy_only=False),
                            dtype=np.float32).reshape(-1, dim)
    return pa.array(out.reshape(-1))
