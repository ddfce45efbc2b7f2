"""What a consolidation computes: its configuration, its result, the feature types and
names, and the metadata key and change stamp it records (:mod:`ingest.consolidate`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

from vectorstore import check_name

from .datamodel import CUSTOMER_ID, CUSTOMERS, EVENTS, META_CONSOLIDATION
from .freshness import stamp_column

TS_TYPE = pa.timestamp("us", "UTC")
BASE_FEATURES: dict[str, pa.DataType] = {
    "n_events": pa.int64(), "frequency": pa.float64(), "monetary": pa.float64(),
    "recency_days": pa.float64(), "first_seen": TS_TYPE, "last_seen": TS_TYPE,
    "holdings": pa.list_(pa.string()), "consolidation_run": pa.int64(),
}
METADATA_KEY = META_CONSOLIDATION
EXACT = "DECIMAL(38, 10)"
"""Amounts are summed in this type: exact, so any order or split of the events gives the same
sums (a run on one machine and one on a cluster write the same features)."""
DEFAULT_MAX_VALUES = 200
STEP = "consolidation"
CONSOLIDATED = stamp_column(STEP)
"""``stamp_consolidation``: the row's stamp when consolidation last wrote it (a later source
write sets it to null, so the next run recomputes the customer)."""


@dataclass(frozen=True)
class ConsolidationConfig:
    """What to compute and where to find it.

    Only ``key`` and ``ts`` must be columns of the events table. ``amount`` names the amount
    column, ``categories`` the columns whose values give one feature each (``spend_<value>``,
    the sum of amounts, or ``count_<value>``, the number of events, when there is no amount)
    and ``channels`` the columns whose values give ``count_<value>`` features. Left as None,
    each is what the previous run used when it was given explicitly, else ``amount``,
    ``category`` and ``channel`` when the events table has them; the features of an absent
    column are skipped and said so in :attr:`ConsolidationResult.notes`.

    ``spend`` / ``count`` (advanced; they override ``categories`` / ``channels``) map an events
    column to the prefix of the features built from its values (``{"category": "spend"}``
    gives ``spend_groceries``...). ``values`` fixes the values of a dimension (others are
    ignored); by default every value seen becomes a column, up to ``max_values`` per
    dimension (the most frequent first; later values beyond the limit get no column).
    """

    customers: str = CUSTOMERS
    events: str = EVENTS
    key: str = CUSTOMER_ID
    amount: str | None = None
    categories: Sequence[str] | None = None
    channels: Sequence[str] | None = None
    spend: dict[str, str] | None = None
    count: dict[str, str] | None = None
    values: dict[str, Sequence[str]] = field(default_factory=dict)
    max_values: int | None = None
    """None: what an earlier run was given, else 200."""
    holding_kinds: tuple[str, ...] = ("transaction", "purchase")
    watermark_column: str = "ts"
    as_of: dt.datetime | None = None
    on_unknown: Literal["insert", "skip", "error"] = "insert"
    in_filter_limit: int = 2_000
    """Up to this many customers are read with an ``IN`` filter; more with one full scan."""
    write_rows: int = 100_000
    """Rows per aggregate batch staged."""


@dataclass(frozen=True)
class ConsolidationResult:
    customers: int
    """Customers whose features were recomputed."""
    updated: int
    inserted: int
    skipped: int
    events_scanned: int
    run: int
    watermark: str | None
    as_of: str | None
    feature_columns: tuple[str, ...]
    notes: tuple[str, ...] = ()
    """Features skipped and why (a column the events table lacks, values beyond the limit)."""
    created_table: bool = False
    """The customers table did not exist and was created from the events."""
    aged: int = 0
    """Rows whose ``recency_days``/``frequency`` moved to a later ``as_of`` (:func:`age`)."""


def feature_name(prefix: str, value: str) -> str:
    """``prefix`` + ``_`` + ``value`` made a plain identifier (lower case, ``_`` separators)."""
    slug = re.sub(r"[^a-z0-9]+", "_", str(value).lower()).strip("_") or "unknown"
    return check_name(f"{prefix}_{slug}", "feature column name")


def _iso(t: dt.datetime | None) -> str | None:
    return None if t is None else t.astimezone(dt.UTC).isoformat()


def _parse_iso(s: str | None) -> dt.datetime | None:
    return None if s is None else dt.datetime.fromisoformat(s).astimezone(dt.UTC)


def _from_us(us: int | None) -> dt.datetime | None:
    if us is None:
        return None
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=int(us))


__all__ = ["BASE_FEATURES", "CONSOLIDATED", "DEFAULT_MAX_VALUES", "EXACT", "METADATA_KEY", "STEP",
           "TS_TYPE", "ConsolidationConfig", "ConsolidationResult", "feature_name"]
