"""Row-level validation: bring each source batch to the target table's columns and types.

A value that does not fit (wrong type, missing id, duplicate id within the load, unparseable
date, vector of the wrong length or with NaN) becomes a :class:`RowError` naming the source,
row number (and file line for text files), column, value and what was expected. Bad rows are
found with Arrow compute and numpy masks over whole columns; Python only touches the rows
that are reported.

The plan (:func:`make_plan`) decides the output columns once, from the mapping, the first
batch and the existing table: existing columns keep their type, declared types win for new
columns, text columns from CSV/JSON are typed from the first batch's values.

One module per job:

- :mod:`~ingest.validate.cast`: :func:`convert`, a column to its table type, bad rows flagged.
- :mod:`~ingest.validate.infer`: table types of source types, :func:`is_lossless`,
  :func:`infer_text_type`.
- :mod:`~ingest.validate.plan`: :class:`Plan`, :class:`ColumnPlan`, :func:`make_plan`.
- :mod:`~ingest.validate.hashing`: :func:`content_hash` (sha256 of a row), :func:`key_hash`
  (64-bit numpy hash of keys).
- :mod:`~ingest.validate.keyset`: :class:`KeySet`, :class:`DeferredKeys`,
  :func:`first_occurrence_dups` (duplicate ids).
- :mod:`~ingest.validate.holdings`: the holdings list from flag or list columns.
- :mod:`~ingest.validate.validator`: :class:`Validator`, :class:`Checked`, :class:`RowError`;
  :func:`convert_chunk` (the per-batch map a runner may run on a worker).
"""

from .cast import UTC_TS, convert
from .hashing import content_hash, key_hash
from .infer import infer_text_type, is_lossless
from .keyset import DeferredKeys, KeySet, first_occurrence_dups
from .plan import ColumnPlan, Plan, make_plan
from .validator import (
    Checked,
    Converted,
    RowError,
    Validator,
    convert_chunk,
    rows_as_json,
)

__all__ = [
    "UTC_TS",
    "Checked",
    "ColumnPlan",
    "Converted",
    "DeferredKeys",
    "KeySet",
    "Plan",
    "RowError",
    "Validator",
    "content_hash",
    "convert",
    "convert_chunk",
    "first_occurrence_dups",
    "infer_text_type",
    "is_lossless",
    "key_hash",
    "make_plan",
    "rows_as_json",
]
