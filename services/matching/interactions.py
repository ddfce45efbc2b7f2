"""Events as a customer x item matrix for the recommender: counts, days, repeat flags, the
last-day split, recency-weighted shares and same-day co-occurrence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from ingest.datamodel import EVENTS
from vectorstore import VectorStore

from ..errors import MatchingError, NotEnoughData
from ._data import CUSTOMER_KEY, PRODUCT_KEY, PRODUCTS

ITEM_COLUMNS = ("product_id", "category")
REPEAT_RATE = 0.3


@dataclass
class Interactions:
    """Events as arrays: customer index, item index and day of every (customer, item, day)."""

    customers: pa.Array
    items: list[str]
    cust: np.ndarray
    item: np.ndarray
    day: np.ndarray
    count: np.ndarray

    def subset(self, keep: np.ndarray) -> Interactions:
        return Interactions(self.customers, self.items, self.cust[keep], self.item[keep],
                            self.day[keep], self.count[keep])

    def matrices(self) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
        """(event counts, distinct days) per customer x item, and active days per customer."""
        shape = (len(self.customers), len(self.items))
        counts = sp.csr_matrix((self.count.astype(np.float32), (self.cust, self.item)),
                               shape=shape)
        days = sp.csr_matrix((np.ones(len(self.cust), np.float32), (self.cust, self.item)),
                             shape=shape)
        counts.sum_duplicates()
        days.sum_duplicates()
        cd = np.unique(self.cust.astype(np.int64) * (1 << 32) + self.day.astype(np.int64))
        active = np.bincount((cd >> 32).astype(np.int64), minlength=shape[0]).astype(np.float64)
        return counts, days, active


def read_interactions(store: VectorStore, *, events: str = EVENTS,
                      item_columns: Sequence[str] = ITEM_COLUMNS,
                      batch_size: int = 262_144, filter: Any = None,
                      ids: pa.Array | None = None) -> Interactions:
    """Every (customer, item, day) of the events table with its event count, one streamed
    pass (memory: the distinct triples); ``ids``: only these customers' events."""
    only = ids
    if only is not None and filter is None and len(only) <= 2_000:
        from vectorstore.filters import In

        filter, only = In(CUSTOMER_KEY, tuple(only.to_pylist()) or ("",)), None
    if not store.has_table(events):
        raise MatchingError(f"behaviour recommendations need an {events!r} table")
    info = store.table_info(events)
    cols = [c for c in item_columns if c in info.schema.names]
    if not cols or "ts" not in info.schema.names:
        raise MatchingError(f"table {events!r} needs a ts column and one of "
                            f"{', '.join(item_columns)}")
    who: list[pa.Array] = []
    items: list[pa.Array] = []
    days: list[np.ndarray] = []
    for b in store.scan(events, columns=[CUSTOMER_KEY, "ts", *cols], batch_size=batch_size,
                        filter=filter):
        if only is not None:
            b = b.filter(pc.fill_null(pc.is_in(b.column(CUSTOMER_KEY), value_set=only), False))
        day = pc.cast(pc.cast(b.column("ts"), pa.timestamp("s", "UTC")), pa.int64())
        day = np.asarray(day.to_numpy(zero_copy_only=False), dtype=np.int64) // 86_400
        for c in cols:
            v = pc.cast(b.column(c), pa.string())
            if c != PRODUCT_KEY:
                v = pc.binary_join_element_wise(f"{c}:", v, "")
            ok = pc.is_valid(v)
            who.append(pc.filter(b.column(CUSTOMER_KEY), ok))
            items.append(pc.filter(v, ok))
            days.append(day[ok.to_numpy(zero_copy_only=False)])
    if not who:
        raise NotEnoughData(f"table {events!r} has no events with an item")
    cust_enc = pc.dictionary_encode(pa.chunked_array(who, pa.string())).combine_chunks()
    item_enc = pc.dictionary_encode(pa.chunked_array(items, pa.string())).combine_chunks()
    cust = np.asarray(cust_enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    item = np.asarray(item_enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    day = np.concatenate(days)
    n_items = len(item_enc.dictionary)
    span = int(day.max() - day.min() + 1) if len(day) else 1
    key = (cust * n_items + item) * span + (day - day.min())
    uniq, count = np.unique(key, return_counts=True)
    d = uniq % span + day.min()
    ci = uniq // span
    return Interactions(cust_enc.dictionary, item_enc.dictionary.to_pylist(),
                        (ci // n_items).astype(np.int32), (ci % n_items).astype(np.int32),
                        d.astype(np.int64), count.astype(np.int32))


def repeat_flags(store: VectorStore, inter: Interactions,
                 products_table: str = PRODUCTS) -> np.ndarray:
    """Per item: repeatable (the products table's ``repeatable`` column, else the data)."""
    _, days, _ = inter.matrices()
    had = np.asarray((days > 0).sum(axis=0)).ravel()
    again = np.asarray((days >= 2).sum(axis=0)).ravel()
    flags = again >= REPEAT_RATE * np.maximum(had, 1)
    if store.has_table(products_table) and \
            "repeatable" in store.table_info(products_table).schema.names:
        t = store.to_arrow(products_table, columns=[PRODUCT_KEY, "repeatable"])
        declared = dict(zip(t.column(PRODUCT_KEY).to_pylist(), t.column("repeatable").to_pylist(),
                            strict=True))
        for j, item in enumerate(inter.items):
            if declared.get(item) is not None:
                flags[j] = bool(declared[item])
    return flags


def last_day_split(inter: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """Masks over the triples: each customer's last active day (test) and the rest (train)."""
    last = np.full(len(inter.customers), -1, np.int64)
    np.maximum.at(last, inter.cust, inter.day)
    test = inter.day == last[inter.cust]
    return ~test, test


def decayed_shares(inter: Interactions, R: np.ndarray, half_life: float) -> np.ndarray:
    """The classes' item shares of ``inter``'s item-days (the EM's M-step for the fixed
    posteriors ``R``, its smoothing included) with each day weighted ``0.5 ** (age /
    half_life)``, ``age`` in days before the last day of ``inter``: what each class has
    *lately*, when item shares drift (new products, seasons, a campaign)."""
    n, n_items = R.shape[0], len(inter.items)
    if np.isfinite(half_life) and len(inter.day):
        w = 0.5 ** ((int(inter.day.max()) - inter.day) / half_life)
    else:
        w = np.ones(len(inter.day))
    X = sp.csr_matrix((w, (inter.cust, inter.item)), shape=(n, n_items))
    theta = np.asarray(X.T @ R).T + 0.1 * (w.sum() / max(len(w), 1))
    return theta / theta.sum(axis=1, keepdims=True)


def cooccurrence(inter: Interactions) -> sp.csr_matrix:
    """``C[i, j]``: the share of the customer-days with item ``j`` that also have item ``i``."""
    n_items = len(inter.items)
    key = inter.cust.astype(np.int64) * (int(inter.day.max() - inter.day.min()) + 1 if
                                         len(inter.day) else 1) + (inter.day - inter.day.min()
                                                                    if len(inter.day) else 0)
    _, row = np.unique(key, return_inverse=True)
    D = sp.csr_matrix((np.ones(len(row)), (row.ravel(), inter.item)),
                      shape=(int(row.max()) + 1 if len(row) else 0, n_items))
    D.data[:] = 1.0
    co = (D.T @ D).tocsr()
    per_day = np.maximum(co.diagonal(), 1.0)
    co = co.multiply(1.0 / per_day[None, :]).tocsr()
    co.sort_indices()
    return co.astype(np.float32)
