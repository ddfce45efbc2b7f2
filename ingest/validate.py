"""Row-level validation: bring each source batch to the target table's columns and types.

A value that does not fit (wrong type, missing id, duplicate id within the load, unparseable
date, vector of the wrong length or with NaN) becomes a :class:`RowError` naming the source,
row number (and file line for text files), column, value and what was expected. Bad rows are
found with Arrow compute and numpy masks over whole columns; Python only touches the rows
that are reported.

The plan (:func:`make_plan`) decides the output columns once, from the mapping, the first
batch and the existing table: existing columns keep their type, declared types win for new
columns, text columns from CSV/JSON are typed from the first batch's values.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vectorstore import TableInfo

from .errors import MappingError, SchemaEvolutionError
from .identity import DIGEST_COLUMN, KeyDigests, Occurrences, event_digest, hash_rows, replays
from .mapping import Mapping
from .names import check_collisions, check_strict, is_plain, safe_name
from .sources import Chunk

_INT_RE = r"^[+-]?\d+$"
_FLOAT_RE = r"(?i)^[+-]?(\d+\.?\d*([e][+-]?\d+)?|\.\d+([e][+-]?\d+)?|inf|infinity|nan)$"
_SAMPLE = 1024  # values tried first when inferring a text column's type
_BOOL_TRUE = ["true", "t", "yes", "y", "1"]
_BOOL_FALSE = ["false", "f", "no", "n", "0"]
_ISO_FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M",
                "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d %H:%M:%S%z")
UTC_TS = pa.timestamp("us", tz="UTC")


# ---------------------------------------------------------------------------------- errors
@dataclass(frozen=True)
class RowError:
    """One value that does not fit: where it is, what it is, what was expected."""

    source: str
    row: int
    line: int | None
    column: str | None
    value: str | None
    expected: str

    def location(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where} (row {self.row})"

    def __str__(self) -> str:
        col = f", column {self.column!r}" if self.column else ""
        val = "missing" if self.value is None else repr(_short(self.value))
        return f"{self.location()}{col}: value {val}; expected {self.expected}"


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------- casting
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


# ---------------------------------------------------------------------------------- plan
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


@dataclass
class ColumnPlan:
    """One output column: its name, the raw source column it comes from, type and format."""

    name: str
    source: str
    type: pa.DataType
    fmt: str | None = None


@dataclass
class Plan:
    """What a load writes: key, columns, holdings; and what it changes in the table."""

    table: str
    key: str
    id_source: str | None
    generate_id: bool
    columns: list[ColumnPlan]
    flags: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)
    list_column: str | None = None
    separator: str = "|"
    holdings: bool = False
    new_fields: list[pa.Field] = field(default_factory=list)
    vectors: dict[str, int] = field(default_factory=dict)
    source_names: dict[str, str] = field(default_factory=dict)
    """Table column -> source column, for columns whose name the load changed."""
    occurrences: bool = False
    """Generated ids carry the occurrence number of identical rows (:mod:`ingest.identity`)."""
    digest: bool = False
    """Events with explicit ids: write ``event_digest`` and refuse an id with other content."""

    @property
    def schema(self) -> pa.Schema:
        fields = [pa.field(self.key, pa.string())]
        fields += [pa.field(c.name, c.type) for c in self.columns]
        if self.digest:
            fields.append(pa.field(DIGEST_COLUMN, pa.int64()))
        if self.holdings:
            fields.append(pa.field("holdings", pa.list_(pa.string())))
        return pa.schema(fields)


def _find(raw_names: Sequence[str], mapping: Mapping, name: str, what: str) -> str:
    for raw in raw_names:
        if raw == name or mapping.resolve(raw) == name:
            return raw
    raise MappingError(f"{what} {name!r} is not in the source; its columns: {', '.join(raw_names)}")


def _check_renames(raw: Sequence[str], mapping: Mapping) -> None:
    """MappingError when a rename makes two source columns one table column (``--rename
    region=age`` on a source that already has ``age``), or names no column. Names that
    collide by normalisation alone are reported together by the plan's collision check."""
    by_target: dict[str, str] = {}
    for r in raw:
        target = mapping.resolve(r)
        other = by_target.get(target)
        if other is not None and (r in mapping.rename or other in mapping.rename):
            renamed = r if r in mapping.rename else other
            kept = other if renamed == r else r
            raise MappingError(
                f"rename {renamed}={target}: the source already has a column {kept!r}, so two "
                f"columns would be called {target!r}; rename or drop {kept!r} as well")
        by_target[target] = r
    missing = [old for old in mapping.rename if old not in raw and old not in by_target]
    if missing:
        raise MappingError(f"rename {missing[0]}={mapping.rename[missing[0]]}: the source has "
                           f"no column {missing[0]!r}; its columns: {', '.join(raw)}")


def make_plan(mapping: Mapping, first: pa.RecordBatch, existing: TableInfo | None, *,
              text_source: bool) -> Plan:
    """Decide the output columns and types of a load (see the module docstring)."""
    raw = list(first.schema.names)
    key = mapping.key
    _check_renames(raw, mapping)
    used: set[str] = set()
    id_source: str | None = None
    generate = mapping.generate_id
    if mapping.id_column:
        id_source = _find(raw, mapping, mapping.id_column, "id column")
    elif not generate:
        id_source = next((r for r in raw if mapping.resolve(r) == key), None)
        if id_source is None:
            if mapping.table != "events":
                raise MappingError(
                    f"the source has no {key!r} column: name the id column (id_column) or "
                    "set generate_id = true for a stable id from each row's content")
            generate = True  # events without an id: the content hash, per the data model
    if id_source:
        used.add(id_source)
    flags = []
    for f in mapping.holdings.flag_list():
        col = _find(raw, mapping, f.column, f"holding column for {f.product!r}")
        flags.append((f.product, col, f.values))
        if not mapping.holdings.keep_flag_columns:
            used.add(col)
    list_col = None
    if mapping.holdings.list_column:
        list_col = _find(raw, mapping, mapping.holdings.list_column, "holdings list column")
        used.add(list_col)
    # a dropped name is a source column's own name when one has it (so that "a b" drops only
    # that column even though "a_b" normalises alike), else a table name
    used |= {d for d in mapping.drop if d in raw}
    dropped = {mapping.resolve(d) for d in mapping.drop if d not in raw}
    wanted = None
    if mapping.attributes is not None:
        wanted = {mapping.resolve(a) for a in mapping.attributes} | {
            mapping.resolve(t) for t in mapping.text_columns}
        if mapping.table == "events":
            wanted |= {"customer_id", "ts", "kind", "product_id", "category", "amount", "channel"}
        for w in sorted(wanted):
            if mapping.table != "events" or w in {mapping.resolve(r) for r in raw}:
                _find(raw, mapping, w, "column")
    for t in mapping.text_columns:
        _find(raw, mapping, t, "text column")
    existing_types = {f.name: f.type for f in existing.schema} if existing else {}
    vectors: dict[str, Any] = dict(existing.vectors) if existing else {}
    kept = _kept_columns(raw, mapping, used, dropped, wanted)
    columns: list[ColumnPlan] = []
    new_fields: list[pa.Field] = []
    for r, name in kept:
        if name == "holdings" and (flags or list_col):
            raise MappingError("the source has a 'holdings' column and holdings are also "
                               "derived from flags or a list column: rename or drop one")
        src_type = first.schema.field(r).type
        declared = mapping.declared_type(name)
        fmt = mapping.timestamp_format(name)
        is_text = text_source and pa.types.is_string(src_type)
        if name in existing_types:
            typ = existing_types[name]
            if declared is not None and declared != typ and not is_lossless(declared, typ):
                raise SchemaEvolutionError(
                    f"column {name!r} is {typ} in table {mapping.table!r} but the mapping "
                    f"declares {declared}: that change would lose data; load it under another "
                    "column name (rename) or declare a compatible type")
            if not is_text and not is_lossless(_normalise(src_type, r), typ) and not (
                    pa.types.is_string(src_type) and fmt):
                raise SchemaEvolutionError(
                    f"column {name!r} is {typ} in table {mapping.table!r} but the source has "
                    f"{src_type}: storing it as {typ} could lose data; load it under another "
                    "column name (rename) or convert it first")
        elif declared is not None:
            typ = declared
        elif is_text:
            typ = infer_text_type(first.column(r))
        else:
            typ = _normalise(src_type, r)
        if name not in existing_types:
            new_fields.append(pa.field(name, typ))
        if pa.types.is_fixed_size_list(typ) and pa.types.is_floating(typ.value_type):
            vectors.setdefault(name, typ.list_size)
        columns.append(ColumnPlan(name, r, typ, fmt))
    digest = mapping.table == "events" and id_source is not None
    if mapping.table == "events":
        have = {c.name for c in columns}
        missing = [c for c in ("customer_id", "ts") if c not in have]
        if missing:
            raise MappingError(f"an events source needs columns {', '.join(missing)} "
                               "(rename the source's columns to them)")
        if DIGEST_COLUMN in have:
            raise MappingError(f"{DIGEST_COLUMN!r} is written by the load itself (see "
                               "ingest.identity): rename or drop the source's column")
        if digest and DIGEST_COLUMN not in existing_types:
            new_fields.append(pa.field(DIGEST_COLUMN, pa.int64()))
    holdings = bool(flags or list_col)
    if holdings and "holdings" not in existing_types:
        new_fields.append(pa.field("holdings", pa.list_(pa.string())))
    if existing is not None and existing.key not in (None, key):
        raise SchemaEvolutionError(f"table {mapping.table!r} has key {existing.key!r}, "
                                   f"expected {key!r}")
    vec_dims = {k: (v.dim if hasattr(v, "dim") else int(v)) for k, v in vectors.items()}
    return Plan(table=mapping.table, key=key, id_source=id_source, generate_id=generate,
                columns=columns, flags=flags, list_column=list_col,
                separator=mapping.holdings.separator, holdings=holdings,
                new_fields=new_fields if existing is not None else [], vectors=vec_dims,
                source_names={n: r for r, n in kept if n != r},
                occurrences=generate and not mapping.dedupe, digest=digest)


def _kept_columns(raw: Sequence[str], mapping: Mapping, used: set[str], dropped: set[str],
                  wanted: set[str] | None) -> list[tuple[str, str]]:
    """(source name, table name) of each source column the load keeps as a column.

    Names are made safe (:mod:`ingest.names`) unless ``strict_names``, which instead refuses
    every name that is not a plain identifier in one error; two columns that would share a
    name are refused together too.
    """
    kept: list[tuple[str, str]] = []
    for pos, r in enumerate(raw, start=1):
        name = mapping.resolve(r)
        if r in used or name in dropped or (wanted is not None and name not in wanted):
            continue
        if name == mapping.key:
            continue
        if not mapping.strict_names and not is_plain(name):
            name = safe_name(r, pos)
        kept.append((r, name))
    if mapping.strict_names:
        check_strict([n for _, n in kept], "strict column names")
    check_collisions(kept, "column names")
    return kept


# ---------------------------------------------------------------------------------- ids
def content_hash(batch: pa.RecordBatch) -> pa.Array:
    """sha256 (hex) of each row's content: column names sorted, values as text, nulls marked.

    Stable across loads and column order; computed by DuckDB's vectorised sha256 (Arrow has
    no hash kernel).
    """
    names = sorted(batch.schema.names)
    if not names:
        raise MappingError("cannot hash rows with no columns")
    parts = []
    for n in names:
        q = '"' + n.replace('"', '""') + '"'
        label = n.replace("'", "''")
        parts.append(f"coalesce('{label}=' || CAST({q} AS VARCHAR), '{label}\\N')")
    sql = "SELECT sha256(concat_ws(chr(31), " + ", ".join(parts) + ")) AS h FROM t"
    arrays = [a.cast(pa.float32()) if pa.types.is_float16(a.type) else a for a in batch.columns]
    batch = pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)
    try:
        return hash_rows(sql, batch).cast(pa.string())
    except duckdb.Error:  # a type DuckDB cannot read: hash the rows' JSON text instead
        import hashlib

        rows = batch.select(names).to_pylist()
        return pa.array([hashlib.sha256(json.dumps(r, sort_keys=True, default=str).encode()
                                        ).hexdigest() for r in rows], pa.string())


_HASH_BLOCK = 1 << 22  # key bytes hashed at a time (bounds the uint64 temporaries)
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_POS_WEIGHTS: dict[int, np.ndarray] = {}


_WEIGHT_CHUNK = 1024


def _weights(seed: int, n: int) -> np.ndarray:
    """Fixed pseudo-random odd 64-bit weights, one per byte position (grown on demand).

    Grown by appending chunks, each from its own seeded generator, so the weight of a
    position never changes: a key hashes the same before and after a longer key was seen
    (sets of hashes built across batches stay consistent).
    """
    w = _POS_WEIGHTS.get(seed)
    if w is None or len(w) < n:
        parts = [] if w is None else [w]
        for k in range(0 if w is None else len(w) // _WEIGHT_CHUNK,
                       max(1, -(-n // _WEIGHT_CHUNK))):
            c = np.random.default_rng([seed, k]).integers(0, 2**63, _WEIGHT_CHUNK,
                                                          dtype=np.uint64)
            parts.append(c * np.uint64(2) + np.uint64(1))
        w = np.concatenate(parts)
        _POS_WEIGHTS[seed] = w
    return w


def _splitmix(h: np.ndarray) -> np.ndarray:
    h = (h ^ (h >> np.uint64(30))) * _MIX[0]
    h = (h ^ (h >> np.uint64(27))) * _MIX[1]
    return h ^ (h >> np.uint64(31))


def key_hash(keys: pa.Array, seed: int = 0) -> np.ndarray:
    """A 64-bit hash of each string key, computed with numpy over the Arrow buffers.

    Each byte (plus one) times a fixed random weight for its position, summed mod 2^64, mixed
    with the length. Equal keys hash equal; two different keys collide with probability about
    2^-57 per ``seed`` (the weights are random, so no crafted family of strings collides).
    Nulls hash as the empty string. No Python loop over rows.
    """
    if pa.types.is_dictionary(keys.type):
        keys = keys.dictionary_decode()
    if not pa.types.is_string(keys.type):
        keys = keys.cast(pa.string())
    n = len(keys)
    out = np.empty(n, dtype=np.uint64)
    if n == 0:
        return out
    offs = np.frombuffer(keys.buffers()[1], dtype=np.int32)[keys.offset: keys.offset + n + 1]
    offs = offs.astype(np.int64)
    lens = np.diff(offs)
    if keys.null_count:
        lens[~_valid_mask(keys)] = 0
    data_buf = keys.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else \
        np.zeros(0, np.uint8)
    weights = _weights(seed, int(lens.max()) if n else 0)
    start = 0
    while start < n:
        # rows [start, stop) hold at most _HASH_BLOCK bytes (at least one row)
        stop = int(np.searchsorted(offs, offs[start] + _HASH_BLOCK, side="right")) - 1
        stop = min(max(stop, start + 1), n)
        lo, hi = int(offs[start]), int(offs[stop])
        part_lens = lens[start:stop]
        starts = offs[start:stop] - lo
        pos = np.arange(hi - lo, dtype=np.int32) - np.repeat(starts.astype(np.int32),
                                                             part_lens) \
            if part_lens.sum() == hi - lo else None  # int32: a slice is < _HASH_BLOCK bytes
        if pos is None:  # nulls with data behind them: gather only the live bytes
            idx = np.concatenate([np.arange(s, s + ln) for s, ln in
                                  zip(starts.tolist(), part_lens.tolist(), strict=True)]
                                 ) if part_lens.sum() else np.zeros(0, np.int64)
            live = data[lo:hi][idx.astype(np.int64)]
            pos = idx - np.repeat(starts, part_lens)
        else:
            live = data[lo:hi]
        contrib = (live.astype(np.uint64) + np.uint64(1)) * weights[pos]
        csum = np.zeros(len(contrib) + 1, dtype=np.uint64)
        np.cumsum(contrib, out=csum[1:])
        ends = np.cumsum(part_lens)
        h = csum[ends] - csum[ends - part_lens]
        out[start:stop] = _splitmix(h ^ (part_lens.astype(np.uint64) * _MIX[1]))
        start = stop
    return out


def _key_hashes(keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Two independent 64-bit hashes of each key (see :func:`key_hash`)."""
    return key_hash(keys, 0), key_hash(keys, 1)


class KeySet:
    """The set of keys seen in a load, as pairs of 64-bit hashes in sorted runs.

    16 bytes per key whatever its length (5M keys: 80 MB), membership by binary search. Runs
    are merged log-structured so adding n keys costs O(n log^2 n). A false "seen" needs both
    hashes to collide (probability ~2^-128 per pair).
    """

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(a) for a, _ in self._runs)

    def contains(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        hit = np.zeros(len(a), dtype=bool)
        for ra, rb in self._runs:
            lo = np.searchsorted(ra, a, side="left")
            hi = np.searchsorted(ra, a, side="right")
            cand = lo < hi
            if not cand.any():
                continue
            idx = np.nonzero(cand)[0]
            for pos_lo, pos_hi, i in zip(lo[idx], hi[idx], idx, strict=True):
                # runs of equal first hashes are almost always of length one
                if (rb[pos_lo:pos_hi] == b[i]).any():
                    hit[i] = True
        return hit

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        if not len(a):
            return
        order = np.argsort(a, kind="stable")
        self._runs.append((a[order], b[order]))
        while len(self._runs) > 1 and len(self._runs[-1][0]) * 2 >= len(self._runs[-2][0]):
            (a2, b2), (a1, b1) = self._runs.pop(), self._runs.pop()
            ma, mb = np.concatenate([a1, a2]), np.concatenate([b1, b2])
            order = np.argsort(ma, kind="stable")
            self._runs.append((ma[order], mb[order]))

    def add_keys(self, keys: pa.Array) -> None:
        self.add(*_key_hashes(keys))


class _Positions:
    """Row (or line) numbers of the kept keys, stored as a start when they are consecutive."""

    def __init__(self) -> None:
        self._parts: list[int | np.ndarray] = []
        self._sizes: list[int] = []

    def add(self, values: np.ndarray | None, n: int) -> None:
        if values is None:
            self._parts.append(-1)
        elif n and int(values[-1]) - int(values[0]) == n - 1 and \
                bool((np.diff(values) == 1).all()):
            self._parts.append(int(values[0]))
        else:
            self._parts.append(np.asarray(values, dtype=np.int64))
        self._sizes.append(n)

    def at(self, part: int, i: int) -> int | None:
        v = self._parts[part]
        if isinstance(v, np.ndarray):
            return int(v[i])
        return None if v == -1 else v + i


class DeferredKeys:
    """The keys of a load, checked for duplicates once at the end (``fail`` mode).

    Per batch this costs one 64-bit hash of the keys (:func:`key_hash`), sorted while the
    writer works; the end check merges the sorted runs and compares neighbours. The key arrays
    are kept (memory: the id column plus 8 bytes per key), so a shared hash is confirmed on
    the key text, and each repeated id is reported with its row and line.
    """

    def __init__(self) -> None:
        self._keys: list[pa.Array] = []
        self._hashes: list[np.ndarray] = []  # each batch's hashes, sorted
        self._rows = _Positions()
        self._lines = _Positions()

    def __len__(self) -> int:
        return sum(len(h) for h in self._hashes)

    def add(self, keys: pa.Array, rows: np.ndarray, lines: np.ndarray | None) -> None:
        if not len(keys):
            return
        self._keys.append(keys)
        self._hashes.append(np.sort(key_hash(keys)))
        self._rows.add(rows, len(keys))
        self._lines.add(lines, len(keys))

    def duplicates(self) -> list[tuple[int, int | None, str, int]]:
        """(row, line, key, row of its first occurrence) of every repeated key, by row."""
        if not self._hashes:
            return []
        merged = np.sort(np.concatenate(self._hashes), kind="stable")  # merges sorted runs
        if not (merged[1:] == merged[:-1]).any():
            return []
        h = np.concatenate([key_hash(k) for k in self._keys])  # load order, for positions
        order = np.argsort(h, kind="stable")
        sh = h[order]
        eq = sh[1:] == sh[:-1]
        if not eq.any():
            return []
        cand_mask = np.zeros(len(h), dtype=bool)
        cand_mask[1:] |= eq
        cand_mask[:-1] |= eq
        cand = np.sort(order[cand_mask])  # global positions, in load order
        keys = pa.chunked_array(self._keys).take(pa.array(cand))
        codes = np.asarray(pc.dictionary_encode(keys.combine_chunks()).indices.to_numpy(
            zero_copy_only=False), dtype=np.int64)
        _, first = np.unique(codes, return_index=True)
        first_of_code = np.empty(codes.max() + 1, dtype=np.int64)
        first_of_code[codes[first]] = cand[first]
        later = np.ones(len(cand), dtype=bool)
        later[first] = False
        bounds = np.cumsum([0, *self._rows._sizes])
        out = []
        texts = keys.to_pylist()
        for j in np.nonzero(later)[0].tolist():
            g = int(cand[j])
            part = int(np.searchsorted(bounds, g, side="right")) - 1
            orig = int(first_of_code[codes[j]])
            opart = int(np.searchsorted(bounds, orig, side="right")) - 1
            out.append((self._rows.at(part, g - bounds[part]) or 0,
                        self._lines.at(part, g - bounds[part]), texts[j],
                        self._rows.at(opart, orig - bounds[opart]) or 0))
        return out


def first_occurrence_dups(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mask of rows whose (a, b) pair already appeared earlier in the same arrays."""
    if len(a) < 2:
        return np.zeros(len(a), dtype=bool)
    order = np.lexsort((b, a))  # stable: equal pairs keep their original order
    sa, sb = a[order], b[order]
    same = np.zeros(len(a), dtype=bool)
    same[1:] = (sa[1:] == sa[:-1]) & (sb[1:] == sb[:-1])
    out = np.zeros(len(a), dtype=bool)
    out[order[same]] = True
    return out


# ---------------------------------------------------------------------------------- batches
@dataclass
class Checked:
    """A validated batch: good rows in the target form, and the rejected rows with reasons."""

    good: pa.RecordBatch
    errors: list[RowError]
    rejected: pa.RecordBatch
    """The rejected rows as read from the source (for quarantine)."""
    rejected_rows: np.ndarray
    rejected_lines: np.ndarray | None
    duplicates: int = 0
    """Rows dropped because their key was already loaded (events, de-duplicated silently)."""


def _holdings(batch: pa.RecordBatch, plan: Plan) -> pa.Array:
    """list<string> of products held, from yes/no flag columns and/or a list column."""
    n = batch.num_rows
    parts_rows: list[np.ndarray] = []
    parts_vals: list[pa.Array] = []
    if plan.flags:
        held = np.zeros((n, len(plan.flags)), dtype=bool)
        for j, (_, col, values) in enumerate(plan.flags):
            arr = batch.column(col)
            text = pc.utf8_lower(pc.utf8_trim_whitespace(arr.cast(pa.string())))
            held[:, j] = _np(pc.is_in(text, value_set=pa.array(list(values))))
        rows, cols = np.nonzero(held)  # row-major: each row's products in declaration order
        products = pa.array([p for p, _, _ in plan.flags])
        parts_rows.append(rows.astype(np.int64))
        parts_vals.append(products.take(pa.array(cols)))
    if plan.list_column:
        arr = batch.column(plan.list_column)
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            arr = pc.split_pattern(pc.utf8_trim_whitespace(arr.cast(pa.string())),
                                   plan.separator)
        flat = pc.utf8_trim_whitespace(pc.list_flatten(arr).cast(pa.string()))
        parents = np.asarray(pc.list_parent_indices(arr).to_numpy(zero_copy_only=False),
                             dtype=np.int64)
        keep = _np(pc.and_(pc.is_valid(flat), pc.not_equal(flat, "")))
        parts_rows.append(parents[keep])
        parts_vals.append(flat.filter(pa.array(keep)))
    rows = np.concatenate(parts_rows) if parts_rows else np.zeros(0, dtype=np.int64)
    values = pa.concat_arrays(parts_vals) if parts_vals else pa.array([], pa.string())
    order = np.argsort(rows, kind="stable")
    rows, values = rows[order], values.take(pa.array(order))
    offsets = np.zeros(n + 1, dtype=np.int32)
    offsets[1:] = np.cumsum(np.bincount(rows, minlength=n), dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values.cast(pa.string()))


_NO_NUL = "text without NUL (\\x00) characters, which no store keeps reliably"


def _nul_mask(arr: pa.Array) -> np.ndarray | None:
    """Rows of a string (or list of strings) column holding a NUL character, or None."""
    typ = arr.type
    if pa.types.is_list(typ) and pa.types.is_string(typ.value_type):
        flat = pc.list_flatten(arr)
        if not len(flat):
            return None
        hit = _np(pc.match_substring(flat, "\x00"))
        if not hit.any():
            return None
        parents = np.asarray(pc.list_parent_indices(arr).to_numpy(zero_copy_only=False))
        out = np.zeros(len(arr), dtype=bool)
        out[parents[hit]] = True
        return out
    if not pa.types.is_string(typ) or not len(arr):
        return None
    hit = _np(pc.match_substring(arr, "\x00"))
    return hit if hit.any() else None


class Validator:
    """Validates the chunks of one load against a :class:`Plan`.

    ``seen`` holds the keys loaded so far (and, for events, the keys already in the table), so
    duplicates are caught across batches: an error for customers and products, a silent
    de-duplication for events. With ``defer_duplicates`` (customers and products in ``fail``
    mode, where any duplicate aborts the load) the keys are only hashed per batch and checked
    once by :meth:`duplicate_errors` at the end of the load.

    ``stored`` (events on a table whose id has a scalar index): called with each batch's ids,
    it returns the stored rows among them (id and digest), which are added to ``seen``
    before the batch is checked; then ``seen`` holds the load's ids and the stored ids the
    load hit, never every stored id.
    """

    stored: Callable[[pa.Array], tuple[pa.Array, pa.Array | None]] | None = None

    def __init__(self, plan: Plan, source_name: str, *, dedupe: bool = False,
                 defer_duplicates: bool = False) -> None:
        self.plan = plan
        self.source = source_name
        self.dedupe = dedupe
        self.seen: KeySet | KeyDigests = KeyDigests() if dedupe else KeySet()
        self.occurrences = Occurrences()
        self.deferred = DeferredKeys() if defer_duplicates and not dedupe else None
        self.schema = plan.schema

    def _remember(self, a: np.ndarray, b: np.ndarray, d: np.ndarray | None) -> None:
        if isinstance(self.seen, KeyDigests):
            self.seen.add(a, b, d)
        else:
            self.seen.add(a, b)

    def duplicate_errors(self) -> list[RowError]:
        """Ids repeated in the load (deferred mode), as errors on their later occurrences."""
        if self.deferred is None:
            return []
        col = self.plan.id_source or self.plan.key
        return [RowError(self.source, row, line, col, key,
                         f"an id not already used earlier in this load (row {first} has it)")
                for row, line, key, first in self.deferred.duplicates()]

    def check(self, chunk: Chunk) -> Checked:
        batch = chunk.batch
        n = batch.num_rows
        rows = chunk.rows()
        plan = self.plan
        problems: list[tuple[str | None, np.ndarray, pa.Array | None, str]] = []
        arrays: list[pa.Array] = []

        # key
        if plan.generate_id:
            keys = content_hash(batch)
            if plan.occurrences:
                keys = self.occurrences.ids(keys)
        else:
            raw_key = batch.column(plan.id_source)
            keys, bad, _ = convert(raw_key, pa.string())
            keys = _blank_to_null(keys)
            missing = ~_valid_mask(keys) & ~bad
            problems.append((plan.id_source, bad | missing, raw_key,
                             f"a non-empty id ({plan.key})"))
        arrays.append(keys)
        if not chunk.nul_free:
            nul = _nul_mask(keys)
            if nul is not None:
                problems.append((plan.id_source or plan.key, nul, keys, _NO_NUL))
        for c in plan.columns:
            out, bad, expected = convert(batch.column(c.source), c.type, c.fmt)
            if bad.any():
                problems.append((c.source, bad, batch.column(c.source), expected))
            if not chunk.nul_free:
                nul = _nul_mask(out)
                if nul is not None:
                    problems.append((c.source, nul & ~bad, batch.column(c.source), _NO_NUL))
            if plan.table == "events" and c.name in ("customer_id", "ts"):
                absent = ~_valid_mask(out) & ~bad
                if absent.any():
                    problems.append((c.source, absent, batch.column(c.source),
                                     f"a {c.name} for every event"))
            arrays.append(out)
        digests = None
        if plan.digest:
            digest_arr = event_digest(pa.RecordBatch.from_arrays(
                arrays[1:], names=[c.name for c in plan.columns]))
            arrays.append(digest_arr)
            digests = np.asarray(pc.fill_null(digest_arr, -1).to_numpy(zero_copy_only=False),
                                 dtype=np.int64)
        if plan.holdings:
            arrays.append(_holdings(batch, plan))

        rejected = np.zeros(n, dtype=bool)
        for _, mask, _, _ in problems:
            rejected |= mask
        # duplicates among the rows that are otherwise fine
        duplicates = 0
        ok_idx = np.nonzero(~rejected)[0]
        if self.deferred is not None:
            if len(ok_idx) == n:
                self.deferred.add(keys, rows, chunk.lines)
            elif len(ok_idx):
                self.deferred.add(keys.take(pa.array(ok_idx)), rows[ok_idx],
                                  None if chunk.lines is None else chunk.lines[ok_idx])
        elif len(ok_idx):
            ok_keys = keys.take(pa.array(ok_idx))
            a, b = _key_hashes(ok_keys)
            clash = None
            if self.stored is not None and isinstance(self.seen, KeyDigests):
                self.seen.add_keys(*self.stored(ok_keys))
            if digests is not None and isinstance(self.seen, KeyDigests):
                d = digests[ok_idx]
                dup, clash = replays(self.seen, a, b, d)
            else:
                d = None
                dup = first_occurrence_dups(a, b) | self.seen.contains(a, b)
            if clash is not None and clash.any():
                clash_mask = np.zeros(n, dtype=bool)
                clash_mask[ok_idx[clash]] = True
                problems.append((plan.id_source or plan.key, clash_mask, keys,
                                 "the same event as the one already stored or loaded under "
                                 "this id (its customer_id, ts, kind, product_id, category, "
                                 "amount or channel differ; a changed event needs a new id)"))
                rejected |= clash_mask
                dup = dup | clash
            if dup.any():
                dup_mask = np.zeros(n, dtype=bool)
                dup_mask[ok_idx[dup & ~clash if clash is not None else dup]] = True
                if self.dedupe:
                    duplicates = int(dup_mask.sum())
                    rejected |= dup_mask
                    dup_mask[:] = False
                else:
                    problems.append((plan.id_source or plan.key, dup_mask, keys,
                                     "an id not already used earlier in this load"))
                    rejected |= dup_mask
                keep = ~dup
                self._remember(a[keep], b[keep], None if d is None else d[keep])
            else:
                self._remember(a, b, d)
        out = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        errors = self._errors(problems, rows, chunk.lines) if problems else []
        if rejected.any():
            keep_mask = pa.array(~rejected)
            good = out.filter(keep_mask)
            rej_src = np.zeros(n, dtype=bool)
            for _, mask, _, _ in problems:
                rej_src |= mask
            idx = pa.array(np.nonzero(rej_src)[0])
            return Checked(good, errors, batch.take(idx), rows[rej_src],
                           chunk.lines[rej_src] if chunk.lines is not None else None, duplicates)
        empty = batch.slice(0, 0)
        return Checked(out, errors, empty, np.zeros(0, dtype=np.int64),
                       None if chunk.lines is None else np.zeros(0, dtype=np.int64), duplicates)

    def _errors(self, problems: list[tuple[str | None, np.ndarray, pa.Array | None, str]],
                rows: np.ndarray, lines: np.ndarray | None) -> list[RowError]:
        out: list[RowError] = []
        for column, mask, values, expected in problems:
            idx = np.nonzero(mask)[0]
            if not len(idx):
                continue
            vals: list[Any] = [None] * len(idx)
            if values is not None:
                taken = values.take(pa.array(idx))
                vals = [_text(v) for v in taken.to_pylist()]
            for i, v in zip(idx.tolist(), vals, strict=True):
                out.append(RowError(self.source, int(rows[i]),
                                    int(lines[i]) if lines is not None else None,
                                    column, v, expected))
        out.sort(key=lambda e: e.row)
        return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def rows_as_json(batch: pa.RecordBatch) -> list[str]:
    """Each row of a (small) batch of rejected rows as JSON text."""
    return [json.dumps(r, default=str, ensure_ascii=False) for r in batch.to_pylist()]
