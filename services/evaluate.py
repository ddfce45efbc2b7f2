"""Measured matching quality: holdout of a product's consumers, or a label column.

Both evaluations rank candidate customers with a query fitted on training rows only and report,
for the positives among the candidates: ROC-AUC, precision@k, recall@k and lift@k (precision
over the base rate), where ``k`` is the top ``top_frac`` (default 10%) of the candidates. Two
baselines come in the same table: ``random`` (expected values: AUC 0.5, lift 1) and
``popularity``, an attribute-free ranking by how many other products the customer holds.
Every row is JSON-serialisable (``report.model_dump()``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from vectorstore import VectorStore
from vectorstore.filters import Filter, Has

from .errors import EvaluationError, NotEnoughData
from .matching._data import (
    CUSTOMER_KEY,
    CUSTOMERS,
    HOLDINGS,
    PRODUCTS,
    Labeller,
    Progress,
    Tally,
    holdings_labeller,
    holds,
    in_ids,
    iter_blocks,
)
from .matching.query import ProductQuery, fit_query


class MetricRow(BaseModel):
    vector_column: str
    method: str
    roc_auc: float
    precision_at_k: float
    recall_at_k: float
    lift_at_k: float
    k: int
    positives: int
    candidates: int


class EvaluationReport(BaseModel):
    """One table of metric rows (every vector column x method, plus baselines)."""

    kind: str
    target: str
    base_rate: float
    params: dict[str, Any]
    rows: list[MetricRow]

    def best(self) -> MetricRow:
        """The non-baseline row with the highest ROC-AUC."""
        rows = [r for r in self.rows if r.method not in ("random", "popularity")]
        if not rows:
            raise EvaluationError("the report has no method rows")
        return max(rows, key=lambda r: r.roc_auc)

    def to_markdown(self) -> str:
        head = "| vector column | method | ROC-AUC | precision@k | recall@k | lift@k | k |"
        lines = [head, "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            lines.append(f"| {r.vector_column} | {r.method} | {r.roc_auc:.4f} | "
                         f"{r.precision_at_k:.4f} | {r.recall_at_k:.4f} | {r.lift_at_k:.2f} "
                         f"| {r.k} |")
        return "\n".join(lines)


def ranking_metrics(y: np.ndarray, scores: np.ndarray, k: int) -> dict[str, float]:
    """ROC-AUC, precision@k, recall@k and lift@k of ``scores`` for binary labels ``y``."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=bool)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        raise EvaluationError(f"metrics need positives and negatives; got {n_pos} of {len(y)}")
    k = max(1, min(k, len(y)))
    top = np.argpartition(-np.asarray(scores, dtype=np.float64), k - 1)[:k]
    hits = int(y[top].sum())
    precision = hits / k
    return {"roc_auc": float(roc_auc_score(y, scores)), "precision_at_k": precision,
            "recall_at_k": hits / n_pos, "lift_at_k": precision / (n_pos / len(y))}


def _row(column: str, method: str, m: dict[str, float], k: int, y: np.ndarray) -> MetricRow:
    return MetricRow(vector_column=column, method=method, k=k, positives=int(y.sum()),
                     candidates=len(y), **m)


def _random_row(column: str, y: np.ndarray, k: int) -> MetricRow:
    base = float(y.mean())
    return _row(column, "random", {"roc_auc": 0.5, "precision_at_k": base,
                                   "recall_at_k": k / len(y), "lift_at_k": 1.0}, k, y)


def _score_candidates(store: VectorStore, table: str, query: ProductQuery, evaluator: Labeller,
                      columns: Sequence[str], product: str | None, tally: Tally | None = None,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Scores, labels and popularity (other holdings) of every candidate row (label >= 0)."""
    scores, labels, pops = [], [], []
    has_holdings = HOLDINGS in columns
    for block in iter_blocks(store, table, query.vector_column, columns=columns):
        if tally is not None:
            tally.add(block.scanned)
        lab = evaluator(block.batch)
        keep = lab >= 0
        scores.append(query.score(block.vectors[keep]))
        labels.append(lab[keep])
        if has_holdings:
            n = pc.fill_null(pc.list_value_length(block.batch.column(HOLDINGS)), 0)
            pop = n.to_numpy(zero_copy_only=False).astype(np.float64)
            if product is not None:
                pop = pop - holds(block.batch, product)
            pops.append(pop[keep])
    if not scores:
        raise EvaluationError(f"table {table!r} has no {query.vector_column!r} vectors")
    return (np.concatenate(scores), np.concatenate(labels).astype(bool),
            np.concatenate(pops) if has_holdings else None)


def _evaluate(store: VectorStore, table: str, columns: Sequence[str], methods: Sequence[str],
              trainer: Labeller, evaluator: Labeller, label_columns: Sequence[str], *,
              product: str | None, products_table: str, seed: int, top_frac: float,
              prefilter: Filter | None,
              k: int | None, baselines: bool, learned_options: dict[str, Any],
              progress: Progress | None = None,
              ) -> tuple[list[MetricRow], float]:
    rows: list[MetricRow] = []
    base_rate = math.nan
    # progress counts rows scored: one pass over the table per vector column and method
    tally = Tally(progress, store.count(table) * len(columns) * len(methods)
                  if progress is not None else None)
    for column in columns:
        first = True
        for method in methods:
            query = fit_query(store, table, column, method, trainer, label_columns,
                              product=product or "", seed=seed, products_table=products_table,
                              prefilter=prefilter, **learned_options)
            s, y, pop = _score_candidates(store, table, query, evaluator, label_columns, product,
                                          tally)
            kk = k if k is not None else max(1, round(top_frac * len(y)))
            if first:
                base_rate = float(y.mean())
                if baselines:
                    rows.append(_random_row(column, y, kk))
                    if pop is not None:
                        rows.append(_row(column, "popularity", ranking_metrics(y, pop, kk), kk, y))
                first = False
            rows.append(_row(column, method, ranking_metrics(y, s, kk), kk, y))
    tally.finish()
    return rows, base_rate


def _columns(store: VectorStore, table: str, vector_columns: Sequence[str] | None) -> list[str]:
    info = store.table_info(table)
    cols = list(vector_columns) if vector_columns else sorted(info.vectors)
    for c in cols:
        if c not in info.vectors:
            raise EvaluationError(f"table {table!r} has no vector column {c!r}; "
                                  f"vector columns: {sorted(info.vectors)}")
    if not cols:
        raise EvaluationError(f"table {table!r} has no vector columns to evaluate")
    return cols


def evaluate_holdout(store: VectorStore, product: str, *,
                     vector_columns: Sequence[str] | None = None,
                     methods: Sequence[str] = ("centroid", "learned"), holdout: float = 0.2,
                     seed: int = 0, top_frac: float = 0.1, k: int | None = None,
                     table: str = CUSTOMERS, products_table: str = PRODUCTS,
                     min_consumers: int = 20, baselines: bool = True,
                     progress: Progress | None = None,
                     **learned_options: Any) -> EvaluationReport:
    """Hide a seeded ``holdout`` fraction of the product's holders, fit each method on the
    rest, rank every non-holder plus the hidden ones, and measure how high the hidden rank.

    ``progress(rows scored, total)``: called per scanned block; the total is the table's rows
    times the vector columns times the methods (one scoring pass each).
    """
    if not 0 < holdout < 1:
        raise EvaluationError(f"holdout must be in (0, 1), got {holdout!r}")
    cols = _columns(store, table, vector_columns)
    if HOLDINGS not in store.table_info(table).schema.names:
        raise EvaluationError(f"table {table!r} has no {HOLDINGS!r} column")
    holders = store.to_arrow(table, columns=[CUSTOMER_KEY], filter=Has(HOLDINGS, product))
    ids = holders.column(CUSTOMER_KEY).combine_chunks()
    n_hidden = round(holdout * len(ids))
    if len(ids) - n_hidden < min_consumers or n_hidden < 1:
        raise NotEnoughData(f"product {product!r} has {len(ids)} holders: a {holdout:.0%} "
                            f"holdout leaves {len(ids) - n_hidden} to fit on and {n_hidden} to "
                            f"find (need >= {min_consumers} and >= 1)")
    rng = np.random.default_rng(seed)
    hidden = ids.take(pa.array(np.sort(rng.choice(len(ids), n_hidden, replace=False))))
    trainer = holdings_labeller(product, hidden)

    def evaluator(batch: pa.RecordBatch) -> np.ndarray:
        held = holds(batch, product)
        hid = in_ids(batch, hidden)
        return np.where(hid, 1, np.where(held, -1, 0)).astype(np.int8)

    rows, base = _evaluate(store, table, cols, methods, trainer, evaluator,
                           [CUSTOMER_KEY, HOLDINGS], product=product,
                           products_table=products_table, seed=seed, top_frac=top_frac, k=k,
                           baselines=baselines, learned_options=learned_options,
                           prefilter=Has(HOLDINGS, product), progress=progress)
    return EvaluationReport(kind="holdout", target=product, base_rate=base, rows=rows,
                            params={"holdout": holdout, "seed": seed, "top_frac": top_frac,
                                    "k": k, "hidden": n_hidden, "known": len(ids) - n_hidden})


def _positive_mask(col: pa.Array | pa.ChunkedArray, positive: Any, name: str) -> np.ndarray:
    typ = col.type
    if positive is None:
        if pa.types.is_boolean(typ):
            positive = True
        elif pa.types.is_integer(typ):
            positive = 1
        else:
            sample = pc.unique(col).to_pylist()[:10]
            raise EvaluationError(f"label column {name!r} is {typ}: name the positive value "
                                  f"(values include {sample})")
    return np.asarray(pc.fill_null(pc.equal(col, pa.scalar(positive, typ)), False), dtype=bool)


def evaluate_labels(store: VectorStore, label_column: str, *, positive: Any = None,
                    vector_columns: Sequence[str] | None = None,
                    methods: Sequence[str] = ("centroid", "learned"),
                    split_column: str | None = None, test_value: Any = "test",
                    test_size: float = 0.3, seed: int = 0, top_frac: float = 0.1,
                    k: int | None = None, table: str = CUSTOMERS, baselines: bool = True,
                    progress: Progress | None = None,
                    **learned_options: Any) -> EvaluationReport:
    """Fit on the train rows' labels (``label_column == positive``), measure on the test rows.

    Test rows are those with ``split_column == test_value``, or a seeded stratified
    ``test_size`` split when no split column is named. ``progress``: as in
    :func:`evaluate_holdout`.
    """
    from sklearn.model_selection import train_test_split

    info = store.table_info(table)
    cols = _columns(store, table, vector_columns)
    need = [CUSTOMER_KEY, label_column, *([split_column] if split_column else [])]
    try:
        info.check_columns(need)
    except Exception as exc:
        raise EvaluationError(str(exc)) from exc
    base = store.to_arrow(table, columns=need)
    if split_column:
        split = base.column(split_column)
        is_test = np.asarray(pc.fill_null(pc.equal(split, pa.scalar(test_value, split.type)),
                                          False), dtype=bool)
    else:
        y_all = _positive_mask(base.column(label_column), positive, label_column)
        idx = np.arange(base.num_rows)
        _, test_idx = train_test_split(idx, test_size=test_size, random_state=seed,
                                       stratify=y_all)
        is_test = np.zeros(base.num_rows, dtype=bool)
        is_test[test_idx] = True
    test_ids = pc.filter(base.column(CUSTOMER_KEY), pa.array(is_test)).combine_chunks()
    if len(test_ids) == 0 or len(test_ids) == base.num_rows:
        raise EvaluationError(f"the split leaves {len(test_ids)} test rows of {base.num_rows}")

    def trainer(batch: pa.RecordBatch) -> np.ndarray:
        pos = _positive_mask(batch.column(label_column), positive, label_column)
        return np.where(in_ids(batch, test_ids), -1, pos).astype(np.int8)

    def evaluator(batch: pa.RecordBatch) -> np.ndarray:
        pos = _positive_mask(batch.column(label_column), positive, label_column)
        return np.where(in_ids(batch, test_ids), pos, -1).astype(np.int8)

    label_cols = [CUSTOMER_KEY, label_column]
    if HOLDINGS in info.schema.names:
        label_cols.append(HOLDINGS)
    rows, base_rate = _evaluate(store, table, cols, methods, trainer, evaluator, label_cols,
                                product=None, products_table=PRODUCTS, seed=seed,
                                top_frac=top_frac, k=k, baselines=baselines,
                                learned_options=learned_options, prefilter=None,
                                progress=progress)
    return EvaluationReport(kind="label", target=f"{label_column} = {positive!r}",
                            base_rate=base_rate, rows=rows,
                            params={"split_column": split_column, "test_size": test_size,
                                    "seed": seed, "top_frac": top_frac, "k": k,
                                    "test_rows": len(test_ids)})
