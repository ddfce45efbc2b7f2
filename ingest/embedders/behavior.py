"""Behaviour embedder: customers and products in one space from a weighted interaction matrix.

The matrix ``X`` (customers x items) is built with ``scipy.sparse`` from Arrow columns in one
streamed pass over each source: the customers' ``holdings`` list column (each holding counts
``holdings_weight``) and the ``events`` table, where every non-null value of each column in
``event_items`` is an item (``product_id`` values are product ids; other columns' values are
prefixed, e.g. ``category:travel``) and counts once (``value="count"``) or by its ``amount``
(``value="spend"``). Cells are weighted BM25-style (default; ``k1``, ``b``) or by TF-IDF,
with ``log1p`` damping of the raw counts/spend, then factorised by randomized truncated SVD
(``sklearn.utils.extmath.randomized_svd``, seeded): ``X ~ U S V^T``.

Scaling: customer vectors are ``x V S^-1/2`` (``U S^1/2`` for an exact SVD; written to
``customers.<column>``) and item vectors
``V S^1/2`` (written to ``products.<column>`` for items that are rows of ``products``), so
``customer . product`` equals ``x V V^T``, the projection of the customer's weighted row onto
the top-``dim`` item subspace (the rank-``dim`` reconstruction of ``X[customer, product]``):
the recommendation score. Both columns use the ``dot`` metric.
Customers without any interaction get the zero vector (score 0 for every product).
A new customer is folded in with the fitted state: ``x V S^-1/2`` (:meth:`transform`), which
gives exactly the written vectors for the rows the model was fitted on.

Memory: the sparse matrix (12 bytes per distinct customer-item pair, plus the customer id
index) and ``U`` (``4 * dim`` bytes per customer) are held while fitting: SVD needs the whole
matrix. The fitted state kept with the table is ``V``, ``S``, the IDF weights and item ids:
``n_items * (4 * dim + 8)`` bytes plus the ids (about 0.5 MB for 2,000 items and 64 dims).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from vectorstore import Metric, TableInfo, VectorStore

from ..datamodel import EVENTS
from ..freshness import ROW_STAMP, stamps_of
from .base import (
    Embedder,
    check_columns,
    register,
    to_vector_array,
)
from .data import FitData, as_fit_data
from .errors import EmbeddingError, EmptyInputError

_FLUSH = 8_000_000  # coalesce the COO chunks once this many entries are pending


class _Vocab:
    """Item id -> column index, growing as new items stream past."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.array = pa.array([], pa.string())

    def index(self, values: pa.Array) -> np.ndarray:
        uniq = pc.drop_null(pc.unique(values))
        new = pc.filter(uniq, pc.invert(pc.is_in(uniq, value_set=self.array)))
        if len(new):
            self.ids += sorted(new.to_pylist())
            self.array = pa.array(self.ids, pa.string())
        idx = pc.index_in(values, value_set=self.array, skip_nulls=True)  # null: not an item
        return idx.fill_null(-1).to_numpy(zero_copy_only=False)


def item_names(batch: pa.RecordBatch | pa.Table, column: str) -> pa.Array | pa.ChunkedArray:
    """The item names of an event column: product ids as they are, other columns' values
    prefixed with the column (``category:groceries``), so the two never collide."""
    v = batch.column(column)
    if not (pa.types.is_string(v.type) or pa.types.is_large_string(v.type)):
        v = pc.cast(v, pa.string())
    if column != "product_id":
        v = pc.binary_join_element_wise(f"{column}:", v, "")
    return v


def _fold_projection(item_vectors: np.ndarray, singular_values: np.ndarray) -> np.ndarray:
    """``V S^-1/2`` from the stored ``V S^1/2`` and ``S``: computed from the state alone, so a
    fitted embedder and one loaded from its state fold rows in with the same bits."""
    root = np.sqrt(singular_values.astype(np.float64))
    return (item_vectors / np.where(root > 0, root, 1.0) ** 2).astype(np.float32)


@register
class BehaviorEmbedder(Embedder):
    """Truncated SVD of the weighted customers x items matrix (holdings + events)."""

    kind: ClassVar[str] = "behavior"
    metric: ClassVar[Metric] = Metric.DOT
    version_libs: ClassVar[tuple[str, ...]] = ("numpy", "scipy", "scikit-learn")
    default_column: ClassVar[str] = "vec_behavior"

    def __init__(self, dim: int = 64, *, events: str | None = EVENTS,
                 holdings_column: str | None = "holdings", holdings_weight: float = 3.0,
                 event_items: Sequence[str] = ("product_id", "category"),
                 value: str = "count", amount_column: str = "amount",
                 weighting: str = "bm25", k1: float = 1.2, b: float = 0.75,
                 n_iter: int = 5, seed: int = 0) -> None:
        if value not in ("count", "spend"):
            raise EmbeddingError(f"value must be 'count' or 'spend', got {value!r}")
        if weighting not in ("bm25", "tfidf"):
            raise EmbeddingError(f"weighting must be 'bm25' or 'tfidf', got {weighting!r}")
        if not isinstance(dim, int) or dim <= 0:
            raise EmbeddingError(f"dim must be a positive integer, got {dim!r}")
        self.dim = dim
        self.events = events
        self.holdings_column = holdings_column
        self.holdings_weight = holdings_weight
        self.event_items = list(event_items)
        self.value = value
        self.amount_column = amount_column
        self.weighting = weighting
        self.k1 = k1
        self.b = b
        self.n_iter = n_iter
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        return {"dim": self.dim, "events": self.events, "holdings_column": self.holdings_column,
                "holdings_weight": self.holdings_weight, "event_items": self.event_items,
                "value": self.value, "amount_column": self.amount_column,
                "weighting": self.weighting, "k1": self.k1, "b": self.b, "n_iter": self.n_iter,
                "seed": self.seed}

    def input_columns(self, info: TableInfo) -> list[str]:
        return [self.holdings_column] if self.holdings_column else []

    @property
    def model_name(self) -> str:
        return f"{self.weighting}+truncated-svd"

    # ------------------------------------------------------------------ matrix
    def related_tables(self) -> list[str]:
        return [self.events] if self.events else []

    def _event_columns(self, info: TableInfo | None) -> list[str]:
        if not self.events or info is None:
            return []
        cols = ["customer_id", *self.event_items]
        if self.value == "spend":
            cols.append(self.amount_column)
        check_columns(info, cols, "events")
        return cols

    def build_matrix(self, data: Any, table: str | None = None, *, batch_size: int = 262_144
                     ) -> tuple[sp.csr_matrix, pa.Array, list[str]]:
        """Raw (unweighted) interaction matrix, customer ids in row order, item ids, from
        :class:`~ingest.embedders.data.FitData` (or a store and a table name)."""
        data = as_fit_data(data, table, batch_size=batch_size, related=self.related_tables())
        info = data.info
        table = info.name
        key = info.key
        if key is None:
            raise EmbeddingError(f"table {table!r} has no key column: vectors are written "
                                 "back by key")
        if self.holdings_column:
            check_columns(info, [self.holdings_column], "holdings")
        events = data.table(self.events) if self.events else None
        ev_cols = self._event_columns(events.info if events else None)
        vocab = _Vocab()
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        pending = 0
        acc: sp.csr_matrix | None = None
        id_chunks: list[pa.Array] = []
        n = 0

        def flush(n_rows: int) -> None:
            nonlocal acc, pending
            if not rows:
                return
            m = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(n_rows, max(len(vocab.ids), 1)), dtype=np.float32)
            if acc is not None:
                acc.resize((n_rows, max(len(vocab.ids), 1)))
                m = m + acc
            m.sum_duplicates()
            acc = m
            rows.clear()
            cols.clear()
            vals.clear()
            pending = 0

        read = [key] + ([self.holdings_column] if self.holdings_column else [])
        stamped = ROW_STAMP in info.schema.names
        stamps: list[np.ndarray] = []
        for bt in data.batches(read + ([ROW_STAMP] if stamped else []), batch_size):
            id_chunks.append(bt.column(key))
            stamps.append(stamps_of(bt))
            if self.holdings_column:
                h = bt.column(self.holdings_column)
                flat = pc.list_flatten(h)
                if len(flat):
                    parent = pc.list_parent_indices(h).to_numpy() + n
                    j = vocab.index(flat)
                    ok = j >= 0
                    rows.append(parent[ok].astype(np.int32))
                    cols.append(j[ok].astype(np.int32))
                    vals.append(np.full(int(ok.sum()), self.holdings_weight, np.float32))
                    pending += int(ok.sum())
            n += bt.num_rows
        ids = pa.concat_arrays(id_chunks) if id_chunks else pa.array([], pa.string())
        self.row_stamps_ = np.concatenate(stamps) if stamps else np.zeros(0, np.int64)
        index = pd.Index(ids.to_numpy(zero_copy_only=False))
        self.unknown_customers_ = 0
        if ev_cols:
            assert events is not None
            for bt in events.batches(ev_cols, batch_size):
                r = index.get_indexer(bt.column("customer_id").to_numpy(zero_copy_only=False))
                known = r >= 0
                self.unknown_customers_ += int((~known).sum())
                amount = None
                if self.value == "spend":
                    amount = np.abs(pc.fill_null(pc.cast(bt.column(self.amount_column),
                                                         pa.float64()), 0.0).to_numpy())
                for c in self.event_items:
                    v = item_names(bt, c)
                    j = vocab.index(v)
                    ok = known & (j >= 0)
                    if amount is not None:
                        ok &= amount > 0
                    rows.append(r[ok].astype(np.int32))
                    cols.append(j[ok].astype(np.int32))
                    vals.append(amount[ok].astype(np.float32) if amount is not None
                                else np.ones(int(ok.sum()), np.float32))
                    pending += int(ok.sum())
                if pending > _FLUSH:
                    flush(n)
        flush(n)
        if acc is None or acc.nnz == 0:
            raise EmptyInputError(f"no interactions: neither {table}.{self.holdings_column} nor "
                                  f"{self.events} gives any customer an item")
        return acc.tocsr(), ids, list(vocab.ids)

    def _weight(self, x: sp.csr_matrix, *, fit: bool) -> sp.csr_matrix:
        """log1p damping, then BM25 or TF-IDF weights (IDF and mean length learnt when fitting)."""
        x = x.tocsr(copy=True)
        x.data = np.log1p(x.data).astype(np.float32)
        if fit:
            n = x.shape[0]
            df = np.bincount(x.indices, minlength=x.shape[1]).astype(np.float64)
            if self.weighting == "bm25":
                self.idf_ = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
            else:
                self.idf_ = (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)
            self.avg_len_ = float(np.asarray(x.sum(axis=1)).mean())
        if self.weighting == "bm25":
            length = np.asarray(x.sum(axis=1)).ravel()
            norm = self.k1 * (1 - self.b + self.b * length / max(self.avg_len_, 1e-12))
            row_norm = np.repeat(norm, np.diff(x.indptr)).astype(np.float32)
            x.data = x.data * (self.k1 + 1) / (x.data + row_norm)
        x.data *= self.idf_[x.indices]
        return x

    # ------------------------------------------------------------------ fit / transform
    def _fit(self, data: FitData) -> BehaviorEmbedder:
        from sklearn.utils.extmath import randomized_svd

        raw, ids, items = self.build_matrix(data, batch_size=max(data.batch_size, 262_144))
        x = self._weight(raw, fit=True)
        k = min(self.dim, min(x.shape) - 1)
        if k < 1:
            raise EmptyInputError(f"the interaction matrix is {x.shape}: too small for an SVD")
        u, s, vt = randomized_svd(x, n_components=k, n_iter=self.n_iter,
                                  random_state=self.seed)
        root = np.sqrt(s)
        self.items_ = np.asarray(items, dtype=str)
        self.singular_values_ = s.astype(np.float32)
        self.item_vectors_ = (vt.T * root).astype(np.float32)
        self._projection = _fold_projection(self.item_vectors_, self.singular_values_)
        self.customer_ids_ = ids
        # fold every customer in with V S^-1/2 (= U S^1/2 for an exact SVD): the written vectors
        # are exactly what transform() gives the same rows, now and for new customers later
        self.customer_vectors_ = np.asarray(x @ self._projection, dtype=np.float32)
        del u
        self.n_customers_fit_ = int(x.shape[0])
        self.nnz_ = int(raw.nnz)
        self.dim_ = int(k)
        return self

    def transform(self, batch: pa.RecordBatch) -> pa.FixedSizeListArray:
        """Fold customers in: ``items`` (list<string> of item ids, e.g. ``category:travel``) and
        optional ``weights`` (list<float>, the raw count/spend per item; 1 each by default)."""
        self._check_fitted()
        check_columns(TableInfo("batch", batch.schema), ["items"])
        items = batch.column("items")
        flat = pc.list_flatten(items)
        parent = pc.list_parent_indices(items).to_numpy()
        j = pc.index_in(flat, value_set=pa.array(self.items_.tolist(), pa.string()))
        j = j.fill_null(-1).to_numpy(zero_copy_only=False)
        if "weights" in batch.schema.names:
            w = pc.list_flatten(batch.column("weights")).to_numpy(zero_copy_only=False)
        else:
            w = np.ones(len(j), np.float32)
        ok = j >= 0
        x = sp.csr_matrix((w[ok].astype(np.float32), (parent[ok], j[ok])),
                          shape=(batch.num_rows, len(self.items_)))
        x.sum_duplicates()
        vec = np.asarray(self._weight(x, fit=False) @ self._projection)
        return to_vector_array(vec)

    # ------------------------------------------------------------------ new rows
    def prepare(self, store: VectorStore, table: str, keys: pa.Array | None) -> pa.Table:
        """The event items of the customers ``keys`` (all when None), as flat
        (``customer_id``, ``item``, ``weight``) rows summed per customer and item, counted
        or valued as :meth:`build_matrix` does: what :meth:`transform_rows` folds in."""
        from vectorstore.filters import In

        empty = pa.table({"customer_id": pa.array([], pa.string()),
                          "item": pa.array([], pa.string()),
                          "weight": pa.array([], pa.float64())})
        if not self.events or not store.has_table(self.events) or \
                (keys is not None and len(keys) == 0):
            return empty
        cols = self._event_columns(store.table_info(self.events) if self.events else None)
        flt = In("customer_id", tuple(keys.to_pylist())) \
            if keys is not None and len(keys) <= 2_000 else None
        parts = []
        for bt in store.scan(self.events, columns=cols, filter=flt, batch_size=262_144):
            if keys is not None and flt is None:
                bt = bt.filter(pc.fill_null(pc.is_in(bt.column("customer_id"),
                                                     value_set=keys), False))
            if bt.num_rows == 0:
                continue
            weight = pa.array(np.ones(bt.num_rows))
            ok = None
            if self.value == "spend":
                amount = np.abs(pc.fill_null(pc.cast(bt.column(self.amount_column),
                                                     pa.float64()), 0.0).to_numpy())
                weight, ok = pa.array(amount), amount > 0
            for c in self.event_items:
                v = item_names(bt, c)
                keep = pc.is_valid(v).to_numpy(zero_copy_only=False)
                if ok is not None:
                    keep &= ok
                mask = pa.array(keep)
                parts.append(pa.table({"customer_id": pc.cast(bt.column("customer_id").filter(
                    mask), pa.string()), "item": pc.cast(v.filter(mask), pa.string()),
                    "weight": weight.filter(mask)}))
        if not parts:
            return empty
        t = pa.concat_tables(parts).group_by(["customer_id", "item"]).aggregate(
            [("weight", "sum")])
        return t.rename_columns(["customer_id", "item", "weight"])

    def transform_rows(self, batch: pa.RecordBatch, context: Any = None
                       ) -> pa.FixedSizeListArray:
        """Vectors of customer rows: their holdings (``holdings_weight`` each) and their
        event items from :meth:`prepare`, folded in as :meth:`transform` does."""
        n = batch.num_rows
        keys = pc.cast(batch.column(batch.schema.names[0]), pa.string())
        parents, items, weights = [], [], []
        if self.holdings_column and self.holdings_column in batch.schema.names:
            h = batch.column(self.holdings_column)
            flat = pc.list_flatten(h)
            parents.append(pc.list_parent_indices(h).to_numpy())
            items.append(pc.cast(flat, pa.string()))
            weights.append(np.full(len(flat), self.holdings_weight, np.float64))
        if context is not None and context.num_rows:
            pos = pc.index_in(context.column("customer_id"), value_set=keys)
            hit = pc.is_valid(pos)
            parents.append(pos.filter(hit).to_numpy(zero_copy_only=False).astype(np.int64))
            items.append(context.column("item").filter(hit).combine_chunks())
            weights.append(context.column("weight").filter(hit).to_numpy())
        if not parents:
            return self.transform(pa.record_batch({"items": pa.nulls(n, pa.list_(pa.string()))}))
        parent = np.concatenate(parents).astype(np.int64)
        order = np.argsort(parent, kind="stable")
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(np.bincount(parent, minlength=n), out=offsets[1:])
        item = pa.concat_arrays(items).take(pa.array(order))
        w = pa.array(np.concatenate(weights)[order].astype(np.float32))
        return self.transform(pa.record_batch({
            "items": pa.ListArray.from_arrays(pa.array(offsets), item),
            "weights": pa.ListArray.from_arrays(pa.array(offsets), w)}))

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"items": self.items_, "singular_values": self.singular_values_,
                  "item_vectors": self.item_vectors_, "idf": self.idf_}
        return arrays, {"avg_len": self.avg_len_, "n_customers_fit": self.n_customers_fit_,
                        "nnz": self.nnz_}

    def _load_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.items_ = arrays["items"].astype(str)
        self.singular_values_ = arrays["singular_values"]
        self.item_vectors_ = arrays["item_vectors"]
        self.idf_ = arrays["idf"]
        self._projection = _fold_projection(self.item_vectors_, self.singular_values_)
        self.avg_len_ = float(info["avg_len"])
        self.n_customers_fit_ = int(info["n_customers_fit"])
        self.nnz_ = int(info["nnz"])


def __getattr__(name: str) -> Any:
    """``embed_behavior`` kept importable from here (it lives in :mod:`.behavior_run`)."""
    if name == "embed_behavior":
        from .behavior_run import embed_behavior

        return embed_behavior
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
