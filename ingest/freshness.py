"""Which rows a derived column has not caught up with: change stamps, written with the data.

Every row of an entity table (customers, products) carries ``row_stamp`` (int64): a fresh
value is set by every write that inserts the row or changes its source columns (ingest,
consolidation), through the store's ``touch`` (rows a write leaves as they were keep their
stamp), in the same commit as the change. A derived output (a vector column, the risk
scores, a product's propensity, the recommendations) has a companion ``stamp_<output>``: the
``row_stamp`` its value was computed from, written in the same commit as the value. The same
source writes also set every ``stamp_*`` column of the rows they change to null.

A row is *stale* for an output when ``stamp_<output>`` is null or differs from its
``row_stamp``; refreshing recomputes exactly those rows. Two properties follow:

- cheap to ask: the stale rows of an output are those whose stamp is null (``store.null_count``,
  counted per fragment and remembered on LanceDB), and a refresh finds them by scanning two
  int64 columns;
- right under concurrency: a refresh writes the stamp it *read*. A row changed while the
  refresh runs gets a new ``row_stamp`` (and a null output stamp) from the other writer, so
  whichever commits last the two stamps differ and the row stays stale; it is never marked
  fresh with values computed from its old data. (On LanceDB the two commits touch the same
  stamp column of the same fragment, so the refresh that commits second fails with
  ``ConcurrentWriteError`` and writes nothing; on PostgreSQL the refresh's stamp lands and the
  equality test still sees the row as stale.)

*Aging* features (``recency_days``, ``frequency``) are measured to the consolidation's
``as_of`` and change for every customer as time passes, so derived outputs leave them out by
default (``first_seen``/``last_seen`` carry the same information without aging); an output
that is told to read one is recomputed in full whenever ``as_of`` moves.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vectorstore import TableInfo, VectorStore, check_name
from vectorstore.errors import KindredWarning

ROW_STAMP = "row_stamp"
STAMP_PREFIX = "stamp_"
STAMP_TYPE = pa.int64()
AGING_FEATURES = ("recency_days", "frequency")
"""Consolidation features measured to ``as_of``: they change with time, not with data."""
DERIVED_PREFIXES = ("text_hash_", STAMP_PREFIX, "risk_", "rec_", "propensity_")
BOOKKEEPING = (ROW_STAMP, "consolidation_run")
"""Columns Kindred writes to track its own runs: never customer attributes."""


def is_derived(name: str) -> bool:
    """True for columns Kindred derives or keeps for bookkeeping (never model inputs)."""
    return name.startswith(DERIVED_PREFIXES) or name in BOOKKEEPING


def new_stamp() -> int:
    """A fresh change stamp: milliseconds since the epoch in the high bits, 20 random bits
    below (two writers in the same millisecond still differ), positive int64."""
    return (time.time_ns() // 1_000_000) << 20 | secrets.randbits(20)


def stamp_time(stamp: int | None) -> float | None:
    """The epoch seconds a stamp was made at (None for none)."""
    return None if stamp is None else (int(stamp) >> 20) / 1000.0


def stamp_column(output: str) -> str:
    """The stamp column of a derived output (``stamp_<output>``; a long name is shortened
    with a digest so the result is a valid column name)."""
    name = STAMP_PREFIX + output
    if len(name) > 63:
        name = f"{name[:46]}_{hashlib.sha256(output.encode()).hexdigest()[:16]}"
    return check_name(name, "stamp column name")


def stamp_fields(info: TableInfo, outputs: Iterable[str]) -> list[pa.Field]:
    """The stamp columns of ``outputs`` (and ``row_stamp``) that ``info``'s table lacks."""
    want = [ROW_STAMP, *(stamp_column(o) for o in outputs)]
    return [pa.field(c, STAMP_TYPE) for c in dict.fromkeys(want) if c not in info.schema.names]


def source_touch(info: TableInfo, stamp: int | None = None) -> dict[str, Any]:
    """What a write of source columns touches on the rows it changes: a new ``row_stamp``
    and a null stamp for every derived output (they are all stale now)."""
    out: dict[str, Any] = {ROW_STAMP: new_stamp() if stamp is None else stamp}
    out.update({c: None for c in info.schema.names if c.startswith(STAMP_PREFIX)})
    return out


def stamps_of(batch: pa.RecordBatch | pa.Table) -> np.ndarray:
    """The ``row_stamp`` of each row, 0 for rows written before stamps existed."""
    if ROW_STAMP not in batch.schema.names:
        return np.zeros(batch.num_rows, np.int64)
    col = batch.column(ROW_STAMP)
    return np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), dtype=np.int64)


def stale_mask(batch: pa.RecordBatch | pa.Table, stamp: str) -> np.ndarray:
    """Rows whose ``stamp`` column is null or differs from their ``row_stamp``."""
    if stamp not in batch.schema.names:
        return np.ones(batch.num_rows, dtype=bool)
    col = batch.column(stamp)
    have = np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False), dtype=bool)
    seen = np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), dtype=np.int64)
    return ~have | (seen != stamps_of(batch))


@dataclass(frozen=True)
class Freshness:
    """How far a derived output is behind its table."""

    output: str
    rows: int
    stale: int
    """Rows changed (or added) since the output was written for them."""
    missing: int | None
    """Rows without a value (None when the output has no single value column)."""
    refreshed_at: str | None


def stale_count(store: VectorStore, table: str, output: str, *,
                info: TableInfo | None = None) -> int:
    """Rows of ``table`` stale for ``output``: its stamp is null (cheap: ``null_count``).
    A table without the stamp column is stale in every row."""
    info = info or store.table_info(table)
    col = stamp_column(output)
    if col not in info.schema.names:
        return store.count(table)
    return store.null_count(table, col)


def freshness(store: VectorStore, table: str, output: str, value_column: str | None,
              refreshed_at: str | None, *, info: TableInfo | None = None) -> Freshness:
    info = info or store.table_info(table)
    rows = store.count(table)
    missing = None
    if value_column is not None and value_column in info.schema.names:
        missing = store.null_count(table, value_column)
    return Freshness(output, rows, stale_count(store, table, output, info=info), missing,
                     refreshed_at)


def derived_outputs(info: TableInfo) -> list[tuple[str, str | None, str | None]]:
    """The derived outputs recorded in a table's metadata: (output, value column, last
    refreshed), in the order a refresh brings them up to date."""
    meta = info.metadata or {}
    out: list[tuple[str, str | None, str | None]] = []
    embedders = meta.get("embedders") or {}
    for column, entry in embedders.items():
        if isinstance(entry, dict) and column in info.vectors and not entry.get("space_of"):
            out.append((column, column, entry.get("refreshed_at") or entry.get("created_at")))
    risk = meta.get("risk") or {}
    if risk.get("model_id") and "risk_score" in info.schema.names:
        out.append(("risk", "risk_score", risk.get("refreshed_at") or risk.get("scored_at")))
    for entry in (meta.get("propensity") or {}).values():
        if isinstance(entry, dict) and entry.get("column") in info.schema.names:
            out.append((entry["column"], entry["column"],
                        entry.get("refreshed_at") or entry.get("scored_at")))
    rec = meta.get("recommend") or {}
    if rec and "rec_products" in info.schema.names:
        out.append(("rec", "rec_products", rec.get("refreshed_at")))
    return out


class StaleColumnWarning(KindredWarning):
    """A command read a derived column that has stale or empty rows."""


def check_fresh(store: VectorStore, table: str, column: str | None,
                output: str | None = None) -> str | None:
    """Warn (one line, :class:`StaleColumnWarning`) when ``column`` of ``table`` has rows
    without a value or rows changed since it was written for them (``output``: the derived
    output whose stamp says so, default the column itself); returns the message (None when
    the column is fresh). Cheap: two null counts."""
    if column is None or not store.has_table(table):
        return None
    info = store.table_info(table)
    if column not in info.schema.names:
        return None
    missing = store.null_count(table, column)
    stamp = stamp_column(output or column)
    stale = 0
    if stamp in info.schema.names and ROW_STAMP in info.schema.names:
        stale = max(store.null_count(table, stamp) - missing, 0)
    if not (missing or stale):
        return None
    parts = []
    if stale:
        parts.append(f"{stale:,} row(s) changed since it was written (old values used)")
    if missing:
        parts.append(f"{missing:,} row(s) have no value (left out)")
    message = (f"{table}.{column}: {' and '.join(parts)} of {store.count(table):,}; "
               "run `kindred refresh` to bring it up to date")
    warnings.warn(message, StaleColumnWarning, stacklevel=2)
    return message


__all__ = [
    "AGING_FEATURES",
    "BOOKKEEPING",
    "DERIVED_PREFIXES",
    "ROW_STAMP",
    "STAMP_PREFIX",
    "Freshness",
    "StaleColumnWarning",
    "check_fresh",
    "derived_outputs",
    "freshness",
    "is_derived",
    "new_stamp",
    "source_touch",
    "stale_count",
    "stale_mask",
    "stamp_column",
    "stamp_fields",
    "stamps_of",
]
