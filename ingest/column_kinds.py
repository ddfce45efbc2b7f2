"""Is a column a number or a category? One decision, shared by the tabular embedder and the
propensity model, so both read an attribute the same way.

The rule (:func:`column_kind`), first match wins:

1. A declared kind wins: ``--type COL=category`` (or ``numeric``) on ``embed``; at ``ingest``
   ``--type COL=category`` stores the column as text, so it is a category from then on.
2. Text, dictionary and list-free string columns are categories.
3. An **integer code**: an integer column with at most :data:`CODE_MAX_LEVELS` distinct values
   whose name says it is a code (a word such as ``type``, ``code``, ``class``, ``group``,
   ``segment``, ``region``, ``zone``, ``area``, ``branch``, ``status``, ``kind``, ``cat``,
   ``category``, ``id``, ``zip``; as a whole word of the name or, for words of four letters or
   more, at the start or end of one: ``customer_type``, ``MOSTYPE``, ``region_code``,
   ``branchId``). Cardinality alone cannot tell a code from a count (41 customer types and
   48 distinct campaign contact counts look alike), and treating a count as a category loses
   its order while treating a code as a number invents one; so a low-cardinality integer is
   read as a code only when its name says so, and every other integer stays a number.
   Declare the others with ``--type COL=category``.
4. Other numbers, booleans, dates and timestamps are numeric; anything else has no kind (None).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from vectorstore import VectorStore

Kind = Literal["numeric", "category"]
KINDS: tuple[str, ...] = ("numeric", "category")
CODE_MAX_LEVELS = 50
_CODE_WORDS = ("type", "code", "class", "group", "segment", "region", "zone", "area", "branch",
               "status", "kind", "category", "district", "postcode", "cat", "id", "zip")
_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def _is_numeric(t: pa.DataType) -> bool:
    return (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
            or pa.types.is_decimal(t) or pa.types.is_timestamp(t) or pa.types.is_date(t))


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t)


def named_like_code(name: str) -> bool:
    """Whether a column name says it holds codes (see the module docs, rule 3)."""
    for word in (w.lower() for w in _SPLIT.split(name) if w):
        for code in _CODE_WORDS:
            if word == code or (len(code) >= 4 and (word.startswith(code) or
                                                   word.endswith(code))):
                return True
    return False


def is_code_candidate(name: str, t: pa.DataType) -> bool:
    """An integer column whose name says it is a code: its distinct values decide (rule 3)."""
    return pa.types.is_integer(t) and named_like_code(name)


def column_kind(name: str, t: pa.DataType, *, declared: str | None = None,
                n_distinct: int | None = None) -> Kind | None:
    """``"numeric"``, ``"category"`` or None (not an attribute either reader can use).

    ``declared``: a kind the user gave; ``n_distinct``: the column's distinct non-null values
    (needed only for an integer code candidate; unknown counts as too many).
    """
    if declared is not None:
        if declared not in KINDS:
            raise ValueError(f"column {name!r}: unknown kind {declared!r}; expected one of "
                             f"{', '.join(KINDS)}")
        if declared == "numeric" and not _is_numeric(t):
            raise ValueError(f"column {name!r} is {t}: it cannot be read as numeric")
        return declared  # type: ignore[return-value]
    if _is_text(t):
        return "category"
    if is_code_candidate(name, t) and n_distinct is not None and n_distinct <= CODE_MAX_LEVELS:
        return "category"
    if _is_numeric(t):
        return "numeric"
    return None


def parse_kinds(items: Iterable[str] | Mapping[str, str] | None) -> dict[str, Kind]:
    """``["COL=category", ...]`` (or a dict) -> {column: kind}, checked."""
    if not items:
        return {}
    pairs = items.items() if isinstance(items, Mapping) else (
        i.partition("=")[::2] for i in items)
    out: dict[str, Kind] = {}
    for col, kind in pairs:
        col, kind = col.strip(), kind.strip().lower()
        if not col or kind not in KINDS:
            raise ValueError(f"type {col}={kind}: expected COLUMN=category or COLUMN=numeric")
        out[col] = kind  # type: ignore[assignment]
    return out


def count_levels(store: VectorStore, table: str, columns: Sequence[str], *,
                 limit: int = CODE_MAX_LEVELS, batch_size: int = 262_144) -> dict[str, int]:
    """Distinct non-null values per column, counted up to ``limit + 1`` (one streamed pass
    over just these columns; stops early once every column passed the limit)."""
    if not columns:
        return {}
    return count_levels_in(store.scan(table, columns=list(columns), batch_size=batch_size),
                           columns, limit=limit)


def count_levels_in(batches: Iterable[pa.RecordBatch], columns: Sequence[str], *,
                    limit: int = CODE_MAX_LEVELS) -> dict[str, int]:
    """:func:`count_levels` over record batches holding ``columns``."""
    seen: dict[str, set] = {c: set() for c in columns}
    if not columns:
        return {}
    for batch in batches:
        open_cols = [c for c in columns if len(seen[c]) <= limit]
        if not open_cols:
            break
        for c in open_cols:
            seen[c].update(pc.unique(batch.column(c).drop_null()).to_pylist())
    return {c: len(v) for c, v in seen.items()}


def decide_kinds(store: VectorStore, table: str, fields: Sequence[pa.Field], *,
                 declared: Mapping[str, str] | None = None) -> dict[str, Kind | None]:
    """:func:`column_kind` for each field, counting the levels of integer code candidates."""
    declared = dict(declared or {})
    candidates = [f.name for f in fields
                  if f.name not in declared and is_code_candidate(f.name, f.type)]
    levels = count_levels(store, table, candidates)
    return {f.name: column_kind(f.name, f.type, declared=declared.get(f.name),
                                n_distinct=levels.get(f.name)) for f in fields}


def numeric_values(arr: pa.Array) -> np.ndarray:
    """A numeric-like column as float64 with NaN for nulls (timestamps/dates in days), as the
    embedder reads it (explanations read attributes the same way)."""
    t = arr.type
    if pa.types.is_timestamp(t):
        arr = pc.divide(pc.cast(pc.cast(arr, pa.timestamp("s", t.tz)), pa.int64()).cast(
            pa.float64()), 86_400.0)
    elif pa.types.is_date(t):
        arr = pc.cast(pc.cast(arr, pa.date32()), pa.int32())
    return pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
