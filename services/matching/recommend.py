"""Bulk recommendations: every customer scored against every product, top-N written back.

The score of customer ``x`` for product ``p`` is ``x . p`` (dot columns) or their cosine
(cosine columns), the seed's "recommendation = customer . product". Customers stream from the
store in blocks; each block is one matrix product with the products matrix and an
``argpartition`` per row, so the cost is that of a plain blocked numpy matmul plus the scan.
Results go back as ``rec_products`` (list<string>) and ``rec_scores`` (list<float32>), best first.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from ingest.datamodel import META_RECOMMEND
from vectorstore import Metric, VectorStore, prefetch
from vectorstore.schema import MetadataPatch

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
    check_shared_space,
    resolve_column,
    vector_matrix,
)

REC_PRODUCTS = "rec_products"
REC_SCORES = "rec_scores"
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
    mode: str = "all"
    """``all`` (every customer scored) or ``stale`` (only those new or changed since)."""


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


REC_FIELDS = (pa.field(REC_PRODUCTS, pa.list_(pa.string())),
              pa.field(REC_SCORES, pa.list_(pa.float32())))
OUTPUT = "rec"
META_KEY = META_RECOMMEND


def write_recommendations(store: VectorStore, table: str, out: list[pa.RecordBatch],
                          write_rows: int = 1_048_576,
                          metadata: MetadataPatch | None = None) -> None:
    """Write keyed ``rec_products``/``rec_scores`` batches and ``metadata`` (a patch, e.g.
    the recommender the lists came from) in one commit: the two columns are added if missing
    and attached fragment by fragment (vectors and other columns are not rewritten); a
    failure writes nothing. ``write_rows`` is kept for callers."""
    with store.transaction(table) as tx:
        names = tx.info.schema.names
        missing = [f for f in REC_FIELDS if f.name not in names]
        if missing and out:
            tx.add_columns(missing)
        if out:
            tx.update(out, key=CUSTOMER_KEY)
        if metadata:
            tx.set_metadata(metadata)


def digest(*arrays: Any) -> str:
    """A short checksum of what recommendations were computed against (products, items)."""
    import hashlib

    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes() if isinstance(a, np.ndarray)
                 else str(a).encode())
    return h.hexdigest()[:16]


def lists(idx: np.ndarray, scores: np.ndarray, names: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Per row: the item names and scores of the finite entries of (rows, n) top-n arrays."""
    keep = np.isfinite(scores)
    offs = pa.array(np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32))
    return (pa.ListArray.from_arrays(offs, names.take(pa.array(idx[keep]))),
            pa.ListArray.from_arrays(offs, pa.array(scores[keep].astype(np.float32))))


def recommend(store: VectorStore, *, vector_column: str | None = None, top_n: int = 10,
              exclude_held: bool = False, write: bool = True, table: str = CUSTOMERS,
              products_table: str = PRODUCTS, batch_size: int = BLOCK_ROWS,
              write_rows: int = 1_048_576, stale_only: bool = False,
              progress: Progress | None = None, runner: Any = None) -> RecommendSummary:
    """Score customers for every product and write each customer's top ``top_n``.

    ``vector_column`` must exist in both tables (one shared space, e.g. ``vec_behavior``).
    ``exclude_held`` leaves out products the customer already holds. With ``write=False``
    nothing is written (for timing). Customers without a vector keep their old values (and
    stay stale). ``stale_only``: only customers new or changed since (their vector or
    holdings), when the products and options are those the column was written with.
    Results, their stamps and ``metadata["recommend"]`` are one commit; a failed write-back
    writes nothing. ``progress(rows scored, total rows)`` is called after each batch.
    """
    from ingest.derived import FRESH, TALLY, write_output

    if not isinstance(top_n, int) or top_n <= 0:
        raise MatchingError(f"top_n must be a positive integer, got {top_n!r}")
    info = store.table_info(table)
    column = resolve_column(info, vector_column)
    metric = info.vectors[column].metric
    if metric is Metric.L2:
        raise MatchingError(f"column {column!r} uses l2: bulk recommendation scores by dot "
                            "product or cosine")
    pids, P = load_products(store, column, products_table)
    check_shared_space(store, column, table=table, products_table=products_table)
    dim = info.vectors[column].dim
    if P.shape[1] != dim:
        raise MatchingError(f"{products_table}.{column} has dimension {P.shape[1]}, "
                            f"{table}.{column} has {dim}")
    cosine = metric is Metric.COSINE
    if cosine:
        P = _normalise(P)
    PT = np.ascontiguousarray(P, dtype=np.float32)
    n = min(top_n, len(pids))
    options = {"method": "vector", "vector_column": column, "top_n": top_n,
               "exclude_held": exclude_held,
               "products": digest(np.asarray(pids.to_pylist(), dtype=str), PT)}
    has_old = all(f.name in info.schema.names for f in REC_FIELDS)
    def compute(batch: pa.RecordBatch) -> dict[str, Any]:
        vec = batch.column(column)
        valid = np.asarray(vec.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        X = vector_matrix(vec.fill_null(pa.scalar([0.0] * dim, vec.type)), dim)
        mask = _held_mask(batch, pids) if exclude_held else None
        idx, scores = score_block(X, PT, n, mask)
        if cosine:  # a row's order does not depend on |x|: divide only the kept scores
            norms = np.linalg.norm(X, axis=1, keepdims=True)
            scores = scores / np.where(norms > 0, norms, 1.0)
        rec_p, rec_s = lists(idx, scores, pids)
        if not valid.all():  # no vector yet: the old values stay, the row stays stale
            keep = pa.array(valid)
            old_p = batch.column(REC_PRODUCTS) if has_old else pa.nulls(len(valid), rec_p.type)
            old_s = batch.column(REC_SCORES) if has_old else pa.nulls(len(valid), rec_s.type)
            rec_p, rec_s = pc.if_else(keep, rec_p, old_p), pc.if_else(keep, rec_s, old_s)
        return {REC_PRODUCTS: rec_p, REC_SCORES: rec_s, FRESH: valid,
                TALLY: {"scored": int(valid.sum())}}

    inputs = [column, *([HOLDINGS] if exclude_held else []),
              *([REC_PRODUCTS, REC_SCORES] if has_old else [])]
    t0 = time.perf_counter()
    if not write:
        tally = Tally(progress, store.count(table) if progress is not None else None)
        scored = 0
        for b in prefetch(store.scan(table, columns=[CUSTOMER_KEY, *inputs],
                                     batch_size=batch_size)):
            scored += compute(b)[TALLY]["scored"]
            tally.add(b.num_rows)
        return RecommendSummary(vector_column=column, customers=scored, products=len(pids),
                                top_n=n, exclude_held=exclude_held, written=False,
                                seconds_scoring=time.perf_counter() - t0, seconds_writing=0.0)
    old = info.metadata.get(META_KEY) or {}
    same = {k: old.get(k) for k in options} == options
    with store.transaction(table) as tx:
        run = write_output(tx, OUTPUT, inputs, compute, fields=REC_FIELDS,
                           stale_only=stale_only and same, batch_size=batch_size,
                           progress=progress, runner=runner)
        if run.rows or not same:
            tx.set_metadata({META_KEY: {**options, "rows": run.rows + run.skipped,
                                        "refreshed_at": _now()}})
    return RecommendSummary(vector_column=column, customers=run.tally.get("scored", 0),
                            products=len(pids), top_n=n, exclude_held=exclude_held,
                            written=run.rows > 0,
                            seconds_scoring=time.perf_counter() - t0, seconds_writing=0.0,
                            mode=run.mode)


def _now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
