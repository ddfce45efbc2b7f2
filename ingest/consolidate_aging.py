"""Aging of consolidated features: ``recency_days`` and ``frequency`` are measured to the
consolidation's ``as_of``, so they change as it moves even for customers without new events.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vectorstore import TableInfo, VectorStore
from vectorstore.rows import values_equal

from .consolidate_config import (
    METADATA_KEY,
    TS_TYPE,
    ConsolidationConfig,
    _parse_iso,
)
from .freshness import AGING_FEATURES


def aged(last_seen: Any, first_seen: Any, n_events: Any, as_of: dt.datetime
         ) -> tuple[pa.Array, pa.Array]:
    """``recency_days`` and ``frequency`` of customers measured to ``as_of`` (null where the
    customer has no events): the features that age with time."""
    last = pc.cast(last_seen, TS_TYPE).to_numpy(zero_copy_only=False).astype("datetime64[us]")
    first = pc.cast(first_seen, TS_TYPE).to_numpy(zero_copy_only=False).astype("datetime64[us]")
    ref = np.datetime64(as_of.astimezone(dt.UTC).replace(tzinfo=None), "us")
    day = np.timedelta64(86_400_000_000, "us")
    recency = (ref - last) / day
    span = np.maximum((ref - first) / day, 1.0)
    n = pc.cast(n_events, pa.float64()).to_numpy(zero_copy_only=False)
    freq = n / span * 30.0
    return (pa.array(recency, pa.float64(), from_pandas=True),
            pa.array(freq, pa.float64(), from_pandas=True))


def age(store: VectorStore, cfg: ConsolidationConfig | None = None) -> int:
    """Bring ``recency_days`` and ``frequency`` of every customer to the consolidation's
    ``as_of`` (they are measured to it, so they change as it moves even for customers without
    new events); returns the rows rewritten. One commit, positional (only the rows whose
    values change are written); source stamps are not touched: derived outputs leave these
    features out by default (:mod:`ingest.freshness`). Nothing is written when the table is
    already aged to ``as_of``."""
    cfg = cfg or ConsolidationConfig()
    if not store.has_table(cfg.customers):
        return 0
    info = store.table_info(cfg.customers)
    meta = info.metadata.get(METADATA_KEY) or {}
    as_of = _parse_iso(meta.get("as_of"))
    needed = ("last_seen", "first_seen", "n_events", *AGING_FEATURES)
    if as_of is None or meta.get("aged_as_of") == meta.get("as_of") or \
            any(c not in info.schema.names for c in needed):
        return 0
    assert info.key is not None  # consolidated customers are keyed
    written = 0
    with store.transaction(cfg.customers) as tx:
        for part in tx.partitions():
            if not part.rows:
                continue
            t = pa.concat_tables(pa.Table.from_batches([b]) for b in tx.scan(
                part, columns=[info.key, *needed], batch_size=262_144))
            recency, frequency = aged(t.column("last_seen"), t.column("first_seen"),
                                      t.column("n_events"), as_of)
            same = values_equal(recency, t.column("recency_days").combine_chunks()) & \
                values_equal(frequency, t.column("frequency").combine_chunks())
            rows = np.flatnonzero(~same)
            if len(rows):
                take = pa.array(rows)
                tx.stage(part, pa.table({info.key: t.column(info.key).take(take),
                                         "recency_days": recency.take(take),
                                         "frequency": frequency.take(take)}), rows=rows)
                written += len(rows)
        tx.set_metadata({(METADATA_KEY, "aged_as_of"): meta.get("as_of")})
    return written


def _stage_aging(store: VectorStore, tx: Any, info: TableInfo, as_of: dt.datetime,
                 written: list[pa.Array]) -> int:
    """Stage, keyed, ``recency_days``/``frequency`` at ``as_of`` for the customers this
    consolidation does not rewrite and whose values change; returns how many."""
    assert info.key is not None  # the customers table is keyed
    needed = ("last_seen", "first_seen", "n_events", *AGING_FEATURES)
    if any(c not in info.schema.names for c in needed):
        return 0
    done = pa.concat_arrays([pc.cast(a, info.schema.field(info.key).type) for a in written]) \
        if written else pa.array([], info.schema.field(info.key).type)
    staged = 0
    for batch in store.scan(info.name, columns=[info.key, *needed], batch_size=262_144):
        recency, frequency = aged(batch.column("last_seen"), batch.column("first_seen"),
                                  batch.column("n_events"), as_of)
        same = values_equal(recency, batch.column("recency_days")) & \
            values_equal(frequency, batch.column("frequency"))
        keep = pc.and_(pa.array(~same), pc.invert(pc.is_in(batch.column(info.key), done)))
        if not pc.any(keep).as_py():
            continue
        tx.update(pa.table({info.key: batch.column(info.key), "recency_days": recency,
                            "frequency": frequency}).filter(keep), key=info.key)
        staged += int(pc.sum(keep).as_py())
    return staged
