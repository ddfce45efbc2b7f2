"""Bulk recommendations: every customer scored against every product, top-N written back.

The score of customer ``x`` for product ``p`` is ``x . p`` (dot columns) or their cosine
(cosine columns), the seed's "recommendation = customer . product". Customers stream from the
store in blocks; each block is one matrix product with the products matrix and an
``argpartition`` per row, so the cost is that of a plain blocked numpy matmul plus the scan.
Results go back as ``rec_products`` (list<string>) and ``rec_scores`` (list<float32>), best first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from ingest.runner import PartitionContext, Runner, runner_for
from vectorstore import Metric, Partition, Transaction, VectorStore

from ..errors import MatchingError
from ._data import (
    BLOCK_ROWS,
    CUSTOMER_KEY,
    CUSTOMERS,
    HOLDINGS,
    PRODUCT_KEY,
    PRODUCTS,
    Progress,
    Tally,
    resolve_column,
    vector_matrix,
)

REC_PRODUCTS = "rec_products"
REC_SCORES = "rec_scores"
REC_FIELDS = (pa.field(REC_PRODUCTS, pa.list_(pa.string())),
              pa.field(REC_SCORES, pa.list_(pa.float32())))
# rows per matrix product: the (rows, products) score matrix and argpartition's index matrix
# stay ~100 MB at 1,000 products instead of growing with the scan's batch
SCORE_ROWS = 8_192


class RecommendSummary(BaseModel):
    vector_column: str
    customers: int
    products: int
    top_n: int
    exclude_held: bool
    written: bool
    seconds_scoring: float
    seconds_writing: float


def top_n_scores(X: np.ndarray, P: np.ndarray, n: int,
                 mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Indices and scores of the ``n`` best columns of ``X @ P.T`` per row, best first.

    ``mask`` (same shape as the scores, True = excluded) removes pairs before ranking.
    """
    S = X @ P.T
    if mask is not None:
        S[mask] = -np.inf
    n = min(n, S.shape[1])
    idx = np.argpartition(-S, n - 1, axis=1)[:, :n] if n < S.shape[1] else \
        np.broadcast_to(np.arange(S.shape[1]), S.shape).copy()
    top = np.take_along_axis(S, idx, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(top, order, axis=1)


def score_block(X: np.ndarray, P: np.ndarray, n: int, mask: np.ndarray | None = None,
                rows: int = SCORE_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_n_scores` over ``rows``-row slices of ``X`` (bounded temporary memory)."""
    if len(X) <= rows:
        return top_n_scores(X, P, n, mask)
    parts = [top_n_scores(X[i:i + rows], P, n, None if mask is None else mask[i:i + rows])
             for i in range(0, len(X), rows)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _normalise(M: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(M, axis=1, keepdims=True)
    return M / np.where(norms > 0, norms, 1.0)


def load_products(store: VectorStore, column: str,
                  products_table: str = PRODUCTS) -> tuple[pa.Array, np.ndarray]:
    """Product ids and their vectors in ``column`` (products without one are left out)."""
    if not store.has_table(products_table):
        raise MatchingError(f"bulk recommendation needs a {products_table!r} table with vectors")
    info = store.table_info(products_table)
    if column not in info.vectors:
        raise MatchingError(f"table {products_table!r} has no vector column {column!r}; "
                            f"vector columns: {sorted(info.vectors)}")
    rows = store.to_arrow(products_table, columns=[PRODUCT_KEY, column])
    rows = rows.filter(pc.is_valid(rows.column(column)))
    if rows.num_rows == 0:
        raise MatchingError(f"no product in {products_table!r} has a {column!r} vector")
    ids = rows.column(PRODUCT_KEY).combine_chunks()
    return ids, vector_matrix(rows.column(column), info.vectors[column].dim)


def _held_mask(batch: pa.RecordBatch, product_ids: pa.Array) -> np.ndarray:
    """(rows, products) boolean matrix: the customer already holds the product."""
    col = batch.column(HOLDINGS)
    mask = np.zeros((batch.num_rows, len(product_ids)), dtype=bool)
    parents = pc.list_parent_indices(col).to_numpy()
    which = pc.index_in(pc.list_flatten(col), value_set=product_ids)
    ok = pc.is_valid(which).to_numpy(zero_copy_only=False)
    mask[parents[ok], which.to_numpy(zero_copy_only=False)[ok].astype(np.int64)] = True
    return mask


def write_recommendations(store: VectorStore, table: str, out: list[pa.RecordBatch],
                          write_rows: int = 1_048_576) -> None:
    """Write keyed ``rec_products``/``rec_scores`` batches in one commit: the two columns are
    added if missing and attached fragment by fragment (vectors and other columns are not
    rewritten); a failure writes nothing. ``write_rows`` is kept for callers; the write is
    one step whatever its size."""
    with store.transaction(table) as tx:
        _ensure_rec_columns(tx)
        tx.update(out, key=CUSTOMER_KEY)


def _ensure_rec_columns(tx: Transaction) -> None:
    names = tx.info.schema.names
    missing = [f for f in REC_FIELDS if f.name not in names]
    if missing:
        tx.add_columns(missing)


@dataclass
class _RecWork:
    """The broadcast state of bulk recommendation: the products and how to score them."""

    column: str
    dim: int
    pids: pa.Array
    PT: np.ndarray
    n: int
    cosine: bool
    exclude_held: bool
    write: bool
    batch_size: int


def rec_lists(X: np.ndarray, w: _RecWork, batch: pa.RecordBatch) -> tuple[pa.Array, pa.Array]:
    """``rec_products`` and ``rec_scores`` of the customers whose vectors are ``X``."""
    n, pids = w.n, w.pids
    mask = _held_mask(batch, pids) if w.exclude_held else None
    idx, scores = score_block(X, w.PT, n, mask)
    if w.cosine:  # a row's order does not depend on |x|: divide only the kept scores
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        scores = scores / np.where(norms > 0, norms, 1.0)
    b = len(idx)
    offsets = pa.array(np.arange(0, b * n + 1, n, dtype=np.int32))
    rec_p = pa.ListArray.from_arrays(offsets, pids.take(pa.array(idx.ravel())))
    rec_s = pa.ListArray.from_arrays(offsets, pa.array(scores.ravel().astype(np.float32)))
    if mask is not None and not np.isfinite(scores).all():
        keep = np.isfinite(scores)
        lens = keep.sum(axis=1)
        offs = pa.array(np.concatenate([[0], np.cumsum(lens)]).astype(np.int32))
        rec_p = pa.ListArray.from_arrays(offs, pids.take(pa.array(idx[keep])))
        rec_s = pa.ListArray.from_arrays(offs, pa.array(scores[keep].astype(np.float32)))
    return rec_p, rec_s


def _recommend_partition(ctx: PartitionContext, part: Partition) -> int:
    """Score one partition's customers (those with a vector) against the broadcast products
    and stage their lists; returns the customers scored."""
    w: _RecWork = ctx.shared
    cols = [CUSTOMER_KEY, w.column, *([HOLDINGS] if w.exclude_held else [])]
    keys, prods, scores, rows = [], [], [], []
    offset = 0
    for batch in ctx.scan(part, columns=cols, batch_size=w.batch_size):
        vec = batch.column(w.column)
        valid = pc.is_valid(vec).to_numpy(zero_copy_only=False) if vec.null_count else None
        if valid is not None:
            batch = batch.filter(pa.array(valid))
        if batch.num_rows:
            X = vector_matrix(batch.column(w.column), w.dim)
            rec_p, rec_s = rec_lists(X, w, batch)
            keys.append(pa.concat_arrays([batch.column(CUSTOMER_KEY)]))  # own buffers
            prods.append(rec_p)
            scores.append(rec_s)
            rows.append(offset + (np.arange(batch.num_rows) if valid is None
                                  else np.flatnonzero(valid)))
        offset += len(vec)
        ctx.progress(len(vec))
    done = sum(len(k) for k in keys)
    if w.write and done:
        ctx.stage(part, pa.table({CUSTOMER_KEY: pa.concat_arrays(keys),
                                  REC_PRODUCTS: pa.concat_arrays(prods),
                                  REC_SCORES: pa.concat_arrays(scores)}),
                  rows=None if done == part.rows else np.concatenate(rows))
    return done


def recommend(store: VectorStore, *, vector_column: str | None = None, top_n: int = 10,
              exclude_held: bool = False, write: bool = True, table: str = CUSTOMERS,
              products_table: str = PRODUCTS, batch_size: int = BLOCK_ROWS,
              write_rows: int = 1_048_576, progress: Progress | None = None,
              runner: Runner | str | None = None) -> RecommendSummary:
    """Score every customer for every product and write each customer's top ``top_n``.

    ``vector_column`` must exist in both tables (one shared space, e.g. ``vec_behavior``).
    ``exclude_held`` leaves out products the customer already holds. With ``write=False``
    nothing is written (for timing). Customers without a vector keep their old values.
    The products are broadcast to the runner's workers, each partition of customers is
    scored and staged where it is read, and the lists are written in one commit; a failure
    writes nothing. ``progress(rows scored, total rows)`` is called as partitions finish.
    """
    if not isinstance(top_n, int) or top_n <= 0:
        raise MatchingError(f"top_n must be a positive integer, got {top_n!r}")
    info = store.table_info(table)
    column = resolve_column(info, vector_column)
    metric = info.vectors[column].metric
    if metric is Metric.L2:
        raise MatchingError(f"column {column!r} uses l2: bulk recommendation scores by dot "
                            "product or cosine")
    pids, P = load_products(store, column, products_table)
    if P.shape[1] != info.vectors[column].dim:
        raise MatchingError(f"{products_table}.{column} has dimension {P.shape[1]}, "
                            f"{table}.{column} has {info.vectors[column].dim}")
    cosine = metric is Metric.COSINE
    if cosine:
        P = _normalise(P)
    work = _RecWork(column, info.vectors[column].dim, pids,
                    np.ascontiguousarray(P, dtype=np.float32), min(top_n, len(pids)), cosine,
                    exclude_held, write, batch_size)
    run = runner_for(store, runner, step="recommend")
    t0 = time.perf_counter()
    tally = Tally(progress, store.count(table) if progress is not None else None)
    if write and store.null_count(table, column) == store.count(table):
        work.write = False  # no customer has a vector: nothing to write, no columns to add
    with store.transaction(table) as tx:
        if work.write:
            _ensure_rec_columns(tx)
        rows = sum(run.map_partitions(tx, _recommend_partition, shared=work,
                                      partitions=[p for p in tx.partitions() if p.rows],
                                      progress=tally.add))
        tally.finish()
        t_score = time.perf_counter() - t0
        t1 = time.perf_counter()
    return RecommendSummary(vector_column=column, customers=rows, products=len(pids),
                            top_n=work.n, exclude_held=exclude_held, written=write and rows > 0,
                            seconds_scoring=t_score, seconds_writing=time.perf_counter() - t1)
