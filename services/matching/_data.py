"""Reading vectors and holdings out of the store in bounded blocks (shared by matching code)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.datamodel import CUSTOMER_ID, CUSTOMERS, META_EMBEDDERS, PRODUCT_ID, PRODUCTS
from ingest.progress import Progress
from vectorstore import ColumnNotFound, TableInfo, VectorStore
from vectorstore.filters import Filter, Has, parse_filter, to_mask

from ..errors import MatchingError

CUSTOMER_KEY = CUSTOMER_ID
PRODUCT_KEY = PRODUCT_ID
HOLDINGS = "holdings"
BLOCK_ROWS = 65_536

# A labeller maps one record batch to 1 (positive), 0 (negative) or -1 (leave out) per row.
Labeller = Callable[[pa.RecordBatch], np.ndarray]


class Tally:
    """Counts rows done toward a ``progress`` callback (no-op without one)."""

    def __init__(self, progress: Progress | None, total: int | None) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def add(self, rows: int) -> None:
        self.done += rows
        if self.progress is not None:
            self.progress(self.done, self.total)

    def finish(self) -> None:
        """Report completion (rows skipped at the end, e.g. without a vector, count as done)."""
        if self.progress is not None and self.total is not None and self.done < self.total:
            self.done = self.total
            self.progress(self.done, self.total)


@dataclass(frozen=True)
class Block:
    """One scanned batch: the rows that have a vector, their vectors and the whole batch."""

    batch: pa.RecordBatch
    vectors: np.ndarray
    scanned: int = 0
    """Rows read from the store for this block, including rows without a vector before it."""

    @property
    def num_rows(self) -> int:
        return self.batch.num_rows


def vector_matrix(arr: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    """A fixed-size-list column without nulls as a ``(n, dim)`` float32 matrix (no copy if possible)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=np.float32).reshape(-1, dim)


def iter_blocks(store: VectorStore, table: str, column: str, *, columns: Sequence[str] = (),
                filter: Filter | None = None, batch_size: int = BLOCK_ROWS) -> Iterator[Block]:
    """Stream the rows that have a vector in ``column``, with ``columns`` alongside."""
    info = store.table_info(table)
    dim = info.vector(column).dim
    wanted = list(dict.fromkeys([*columns, column]))
    scanned = 0
    for batch in store.scan(table, columns=wanted, filter=filter, batch_size=batch_size):
        scanned += batch.num_rows
        vec = batch.column(column)
        if vec.null_count:
            batch = batch.filter(pc.is_valid(vec))
            vec = batch.column(column)
        if batch.num_rows:
            yield Block(batch, vector_matrix(vec, dim), scanned)
            scanned = 0


def resolve_column(info: TableInfo, column: str | None) -> str:
    """The vector column to use: the one named, or the table's only one."""
    try:
        return info.vector(column).name
    except ColumnNotFound as exc:
        raise MatchingError(str(exc)) from exc


def as_filter(info: TableInfo, filter: Filter | str | None) -> Filter | None:
    """A user filter (text or model) checked against the table's schema."""
    if filter is None or not isinstance(filter, str):
        return filter
    return parse_filter(filter, info.schema)


def holds(batch: pa.RecordBatch | pa.Table, product: str,
          holdings: str = HOLDINGS) -> np.ndarray:
    """Boolean mask: rows whose holdings list contains ``product`` (null lists are False)."""
    tbl = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    return np.asarray(to_mask(Has(holdings, product), tbl), dtype=bool)


def in_ids(batch: pa.RecordBatch, ids: pa.Array | None, key: str = CUSTOMER_KEY) -> np.ndarray:
    """Boolean mask: rows whose key is in ``ids``."""
    if ids is None or len(ids) == 0:
        return np.zeros(batch.num_rows, dtype=bool)
    return np.asarray(pc.fill_null(pc.is_in(batch.column(key), value_set=ids), False), dtype=bool)


def holdings_labeller(product: str, hidden: pa.Array | None = None,
                      holdings: str = HOLDINGS) -> Labeller:
    """Holders of ``product`` are positives, everyone else negative; ``hidden`` holders count
    as non-holders (the holdout evaluation hides them)."""

    def label(batch: pa.RecordBatch) -> np.ndarray:
        pos = holds(batch, product, holdings) & ~in_ids(batch, hidden)
        return pos.astype(np.int8)

    return label


def population_mean(store: VectorStore, table: str, column: str, *,
                    remember: bool = True) -> np.ndarray:
    """The mean of a vector column, from ``metadata["embedders"][column]["mean"]``.

    When the embedder did not record it, it is computed in one streamed pass and cached there
    with ``mean_rows``, the row count it was computed on; a cached mean is recomputed once the
    table's row count moved by more than 10% from that. ``remember=False`` (read-only
    callers such as ``match``) computes it without storing it.
    """
    info = store.table_info(table)
    dim = info.vector(column).dim
    entry: dict[str, Any] = dict((info.metadata.get(META_EMBEDDERS) or {}).get(column) or {})
    mean = entry.get("mean")
    cached_rows = entry.get("mean_rows")  # set only by this function
    fresh = cached_rows is None or abs(store.count(table) - cached_rows) <= 0.1 * cached_rows
    if isinstance(mean, list) and len(mean) == dim and fresh:
        return np.asarray(mean, dtype=np.float64)
    total = np.zeros(dim, dtype=np.float64)
    n = 0
    for block in iter_blocks(store, table, column):
        total += block.vectors.sum(axis=0, dtype=np.float64)
        n += block.num_rows
    if n == 0:
        raise MatchingError(f"table {table!r}: vector column {column!r} holds no vectors yet")
    mean_arr = total / n
    if not remember:
        return mean_arr
    # two path patches: this entry's mean only, so a concurrent writer's entries (another
    # column's embedder, or this column's own re-embedding) are never overwritten
    store.set_metadata(table, {(META_EMBEDDERS, column, "mean"): [float(x) for x in mean_arr],
                               (META_EMBEDDERS, column, "mean_rows"): n})
    return mean_arr


def check_shared_space(store: VectorStore, column: str, *, table: str = CUSTOMERS,
                       products_table: str = PRODUCTS) -> None:
    """MatchingError unless ``table.column`` and ``products_table.column`` come from the same
    fit, when both record their embedder: ``embed behavior`` commits the products' vectors,
    then the customers', so a run killed between the two leaves products of the new fit
    beside customers of the old one until it is run again; scoring one against the other
    would be silently wrong."""
    entries = []
    for name in (table, products_table):
        entry = (store.table_info(name).metadata.get(META_EMBEDDERS) or {}).get(column)
        entries.append(entry.get("state_artifact") if isinstance(entry, dict) else None)
    mine, theirs = entries
    if mine is not None and theirs is not None and mine != theirs:
        raise MatchingError(
            f"{products_table}.{column} and {table}.{column} come from different fits "
            f"({theirs} and {mine}): an `embed behavior` run was interrupted between its two "
            f"commits; run `kindred embed behavior` again to finish it")

