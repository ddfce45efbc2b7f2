"""Running the behaviour embedder over a store: fit on the events, customers' vectors staged
partition by partition on the runner, products' vectors written, one commit per table."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from vectorstore import TableInfo, Transaction, VectorColumn, VectorStore

from ..datamodel import CUSTOMERS, META_EMBEDDERS, PRODUCTS
from ..freshness import STAMP_TYPE, stamp_column
from .base import (
    EmbedResult,
    MeanAccumulator,
    Progress,
    check_table,
    check_target,
    library_versions,
    metadata_entry,
    save_state,
    to_vector_array,
)
from .behavior import BehaviorEmbedder
from .data import FitData
from .errors import EmbeddingError


@dataclass(frozen=True)
class _Vectors:
    """The broadcast customer vectors (and their change stamps) of a fitted behaviour
    embedder, by customer id."""

    ids: Any
    """pandas Index of the customer ids of ``vectors`` rows."""
    vectors: np.ndarray
    stamps: np.ndarray
    key: str
    column: str
    stamp: str
    batch_size: int
    key_type: Any = None


def _stage_vectors(ctx: Any, part: Any) -> int:
    """Stage one partition's customers' vectors and stamps (the customers the fit saw);
    returns how many (wherever the runner runs it)."""
    w: _Vectors = ctx.shared
    hits, rows, offset = [], [], 0
    for b in ctx.scan(part, columns=[w.key], batch_size=w.batch_size):
        pos = w.ids.get_indexer(b.column(w.key).to_numpy(zero_copy_only=False))
        hit = np.flatnonzero(pos >= 0)
        hits.append(pos[hit])
        rows.append(hit + offset)
        offset += b.num_rows
        ctx.progress(b.num_rows)
    idx = np.concatenate(hits) if hits else np.zeros(0, np.int64)
    if len(idx):
        ctx.stage(part, pa.table({w.key: pa.array(w.ids[idx].to_numpy(), w.key_type or pa.string()),
                                  w.column: to_vector_array(w.vectors[idx]),
                                  w.stamp: pa.array(w.stamps[idx], STAMP_TYPE)}),
                  rows=None if len(idx) == offset else np.concatenate(rows))
    return len(idx)


def embed_behavior(store: VectorStore, embedder: BehaviorEmbedder | None = None, *,
                   customers: str = CUSTOMERS, products: str | None = PRODUCTS,
                   column: str = "vec_behavior", batch_size: int = 65_536,
                   progress: Progress | None = None, runner: Any = None) -> EmbedResult:
    """Fit ``embedder`` and write customer vectors and product vectors into ``column``.

    Returns a summary whose ``extra`` holds the product rows written and the items that are
    not products. Checks (columns, empty tables, dimension conflicts) come before any write.
    ``progress(customers_staged, n_customers)`` is called after each staged batch. Each table
    gets its vectors, column and metadata in one commit: products first, then customers; a
    failure before the commits writes nothing to either table. A run killed between the two
    commits leaves the products' vectors of the new fit beside the customers' of the old one,
    which readers that score one against the other refuse
    (:func:`services.matching._data.check_shared_space`: both record their state artifact)
    until a re-run, which fits the same model again, completes it.

    The fit (the SVD) runs here; the customer vectors are broadcast and each partition of
    customers stages its rows' vectors and stamps on ``runner`` (:mod:`ingest.runner`).
    """

    from ..runner import runner_for

    t0 = time.perf_counter()
    emb = embedder or BehaviorEmbedder()
    info = check_table(store, customers)
    emb.fit(FitData.from_store(store, customers, batch_size=262_144,
                               related=emb.related_tables()))
    vc = VectorColumn(column, emb.dim_, emb.metric)
    check_target(info, column, vc.dim, vc.metric)
    pinfo = None
    if products:
        pinfo = store.table_info(products)
        if pinfo.key is None:
            raise EmbeddingError(f"table {products!r} has no key column")
        check_target(pinfo, column, vc.dim, vc.metric)
    with contextlib.ExitStack() as steps:  # commits products first, then customers
        tx = steps.enter_context(store.transaction(customers))
        ptx = steps.enter_context(store.transaction(products)) if products else None
        stamp = stamp_column(column)
        new = [pa.field(stamp, STAMP_TYPE)] if stamp not in tx.info.schema.names else []
        if column not in tx.info.vectors or new:
            tx.add_columns(new, vectors=[] if column in tx.info.vectors else [vc])
        key = info.key
        assert key is not None
        acc = MeanAccumulator(vc.dim)
        n = len(emb.customer_ids_)
        for s in range(0, n, batch_size):
            acc.add(emb.customer_vectors_[s:s + batch_size])
        run = runner_for(store, runner, step="embed behavior")
        work = _Vectors(pd.Index(emb.customer_ids_.to_numpy(zero_copy_only=False)),
                        emb.customer_vectors_, np.asarray(emb.row_stamps_), key, column,
                        stamp, batch_size, emb.customer_ids_.type)
        done = [0]

        def tick(rows: int) -> None:
            done[0] += rows
            if progress is not None:
                progress(min(done[0], n), n)

        for _ in run.map_partitions(tx, _stage_vectors, shared=work, progress=tick,
                                    partitions=[p for p in tx.partitions() if p.rows]):
            pass
        extra: dict[str, Any] = {"n_items": len(emb.items_), "nnz": emb.nnz_,
                                 "unknown_customer_events": emb.unknown_customers_}
        pmean = None
        if ptx is not None and pinfo is not None:
            pmean = _write_products(store, emb, ptx, pinfo, vc, extra)
        name, sha = save_state(store, customers, column, emb)
        tx.set_metadata({(META_EMBEDDERS, column): metadata_entry(
            customers, column, emb, name, sha, acc.mean,
            {"n_items": len(emb.items_), "nnz": emb.nnz_, "vectors": acc.n,
             "refreshed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
             "sources": {}})})
        if ptx is not None and pmean is not None:
            assert products is not None  # ptx is open only on a products table
            ptx.set_metadata({(META_EMBEDDERS, column): metadata_entry(
                products, column, emb, name, sha, pmean,
                {"space_of": f"{customers}.{column}"})})
    extra["versions"] = library_versions(emb.version_libs)
    return EmbedResult(customers, column, n, 0, vc.dim, time.perf_counter() - t0, sha, extra)


def _write_products(store: VectorStore, emb: BehaviorEmbedder, tx: Transaction,
                    pinfo: TableInfo, vc: VectorColumn, extra: dict[str, Any]) -> list[float]:
    """Stage the item vectors of the items that are products; returns their mean."""
    pkey = pinfo.key
    assert pkey is not None
    have = pa.concat_arrays([b.column(pkey) for b in store.scan(tx.name, columns=[pkey])]
                            or [pa.array([], pa.string())])
    items = pa.array(emb.items_.tolist(), pa.string())
    mask = pc.is_in(items, value_set=pc.cast(have, pa.string())).to_numpy(zero_copy_only=False)
    if vc.name not in tx.info.vectors:
        tx.add_columns([], vectors=[vc])
    pvec = emb.item_vectors_[mask]
    if mask.any():
        tx.update(pa.table({pkey: pc.filter(items, pa.array(mask)),
                            vc.name: to_vector_array(pvec)}))
    extra["products_written"] = int(mask.sum())
    extra["items_not_products"] = int((~mask).sum())
    return pvec.mean(axis=0).tolist() if mask.any() else [0.0] * vc.dim
