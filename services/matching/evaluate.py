"""Measured matching quality: repeated holdouts of a product's consumers, or a label column.

Both evaluations rank candidate customers with a query fitted on training rows only and report,
for the positives among the candidates: ROC-AUC, precision@k, recall@k and lift@k (precision
over the base rate), where ``k`` is the top ``top_frac`` (default 10%) of the candidates. Each
figure is the mean over ``repeats`` seeded splits (repeat ``r`` uses seed ``seed + r``) with
its standard deviation, and the ROC-AUC carries a 95% interval
(:func:`services.matching.assess.auc_interval`). Two baselines come in the same table:
``random`` (expected values: AUC 0.5, lift 1) and ``popularity``, an attribute-free ranking by
how many other products the customer holds. A method that cannot run for the target (no
product vector, too few rows) is a row with its ``error``, not an abort. The propensity method
reads attributes, not vectors: it is evaluated once, on every row, as vector column
``attributes``; its leakage check lands in ``warnings``. Every row is JSON-serialisable
(``report.model_dump()``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, PrivateAttr

from vectorstore import VectorStore
from vectorstore.filters import Filter, Has

from ..errors import EvaluationError, NotEnoughData, ServiceError
from ._data import (
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
from .assess import auc_interval, predictability
from .query import ATTRIBUTES, ProductQuery, fit_query

BASELINES = ("random", "popularity")
DEFAULT_REPEATS = 3


class MetricRow(BaseModel):
    """One method's figures, averaged over the repeats (``*_sd``: standard deviations)."""

    vector_column: str
    method: str
    roc_auc: float | None = None
    precision_at_k: float | None = None
    recall_at_k: float | None = None
    lift_at_k: float | None = None
    k: int | None = None
    positives: int | None = None
    candidates: int | None = None
    repeats: int = 1
    roc_auc_sd: float | None = None
    precision_at_k_sd: float | None = None
    roc_auc_interval: list[float] | None = None
    error: str | None = Field(default=None, description="why the method could not run")


class EvaluationReport(BaseModel):
    """One table of metric rows (every vector column x method, plus baselines)."""

    kind: str
    target: str
    base_rate: float
    params: dict[str, Any]
    rows: list[MetricRow]
    warnings: list[dict[str, Any]] = Field(default_factory=list)
    predictability: dict[str, Any] | None = None
    _curves: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = PrivateAttr(
        default_factory=dict)
    _calibration: list[dict[str, float]] = PrivateAttr(default_factory=list)

    @property
    def calibration(self) -> list[dict[str, float]]:
        """The propensity model's out-of-fold calibration bins (first repeat), if evaluated."""
        return self._calibration

    @property
    def curves(self) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
        """(vector column, method) -> (labels, scores) of the first repeat (for plots)."""
        return self._curves

    def best(self) -> MetricRow:
        """The non-baseline row with the highest mean ROC-AUC."""
        rows = [r for r in self.rows if r.method not in BASELINES and r.roc_auc is not None]
        if not rows:
            raise EvaluationError("the report has no method rows")
        return max(rows, key=lambda r: r.roc_auc or 0.0)

    def to_markdown(self) -> str:
        head = ("| vector column | method | ROC-AUC | SD | precision@k | recall@k | lift@k | k "
                "| note |")
        lines = [head, "|---|---|---|---|---|---|---|---|---|"]
        for r in self.rows:
            if r.roc_auc is None:
                lines.append(f"| {r.vector_column} | {r.method} | | | | | | | {r.error} |")
                continue
            sd = f"{r.roc_auc_sd:.4f}" if r.roc_auc_sd is not None else ""
            lines.append(f"| {r.vector_column} | {r.method} | {r.roc_auc:.4f} | {sd} | "
                         f"{r.precision_at_k:.4f} | {r.recall_at_k:.4f} | {r.lift_at_k:.2f} "
                         f"| {r.k} | |")
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


def _random_metrics(y: np.ndarray, k: int) -> dict[str, float]:
    return {"roc_auc": 0.5, "precision_at_k": float(y.mean()), "recall_at_k": k / len(y),
            "lift_at_k": 1.0}


def _score_candidates(store: VectorStore, table: str, query: ProductQuery, evaluator: Labeller,
                      columns: Sequence[str], product: str | None, tally: Tally | None = None,
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Scores, labels and popularity (other holdings) of every candidate row (label >= 0)."""
    scores, labels, pops = [], [], []
    has_holdings = HOLDINGS in columns
    blocks: Iterator[tuple[pa.RecordBatch, int, np.ndarray | None]]
    if query.rows_model is not None:
        read = list(dict.fromkeys([*columns, *query.rows_model.columns]))
        blocks = ((b, b.num_rows, None) for b in store.scan(table, columns=read))
    else:
        blocks = ((b.batch, b.scanned, b.vectors) for b in
                  iter_blocks(store, table, query.vector_column, columns=columns))
    for batch, scanned, vectors in blocks:
        if tally is not None:
            tally.add(scanned)
        lab = evaluator(batch)
        keep = lab >= 0
        if vectors is None:
            scores.append(query.score_rows(batch.filter(pa.array(keep))))
        else:
            scores.append(query.score(vectors[keep]))
        labels.append(lab[keep])
        if has_holdings:
            n = pc.fill_null(pc.list_value_length(batch.column(HOLDINGS)), 0)
            pop = n.to_numpy(zero_copy_only=False).astype(np.float64)
            if product is not None:
                pop = pop - holds(batch, product)
            pops.append(pop[keep])
    if not scores:
        raise EvaluationError(f"table {table!r} has no rows to score with {query.method}")
    return (np.concatenate(scores), np.concatenate(labels).astype(bool),
            np.concatenate(pops) if has_holdings else None)


Split = tuple[Labeller, Labeller]
"""(trainer, evaluator) labellers of one repeat."""


def _evaluate(store: VectorStore, table: str, columns: Sequence[str], methods: Sequence[str],
              splits: Callable[[int], Split], repeats: int, label_columns: Sequence[str], *,
              product: str | None, products_table: str, seed: int, top_frac: float,
              prefilter: Filter | None, k: int | None, baselines: bool,
              learned_options: dict[str, Any], propensity_options: dict[str, Any] | None,
              progress: Progress | None = None,
              ) -> tuple[list[MetricRow], float, list[dict[str, Any]], Any]:
    # (column, method) pairs: propensity reads attributes, once
    pairs = [(c, m) for c in columns for m in methods if m != "propensity"]
    if "propensity" in methods:
        pairs.append((ATTRIBUTES, "propensity"))
    tally = Tally(progress, store.count(table) * len(pairs) * repeats
                  if progress is not None else None)
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    sizes: dict[tuple[str, str], tuple[int, int, int]] = {}
    errors: dict[tuple[str, str], str] = {}
    warnings: list[dict[str, Any]] = []
    calibration: list[dict[str, float]] = []
    curves: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    base_rates: list[float] = []
    for r in range(repeats):
        trainer, evaluator = splits(r)
        for column, method in pairs:
            if (column, method) in errors:
                continue
            try:
                query = fit_query(store, table, column, method, trainer, label_columns,
                                  product=product or "", seed=seed + r,
                                  products_table=products_table, prefilter=prefilter,
                                  remember=False, propensity_options=propensity_options,
                                  **learned_options)
                s, y, pop = _score_candidates(store, table, query, evaluator, label_columns,
                                              product, tally)
            except ServiceError as exc:
                errors[(column, method)] = str(exc).splitlines()[0]
                continue
            if method == "propensity" and r == 0:
                warnings.extend(query.details.get("leakage") or [])
                calibration[:] = query.details.get("calibration_curve") or []
            kk = k if k is not None else max(1, round(top_frac * len(y)))
            if r == 0:
                curves[(column, method)] = (y, s)
            runs.setdefault((column, method), []).append(ranking_metrics(y, s, kk))
            sizes[(column, method)] = (kk, int(y.sum()), len(y))
            if (column, "random") not in sizes or len(base_rates) <= r:
                if len(base_rates) <= r:
                    base_rates.append(float(y.mean()))
                if baselines:
                    runs.setdefault((column, "random"), []).append(_random_metrics(y, kk))
                    sizes[(column, "random")] = (kk, int(y.sum()), len(y))
                    if pop is not None:
                        runs.setdefault((column, "popularity"), []).append(
                            ranking_metrics(y, pop, kk))
                        sizes[(column, "popularity")] = (kk, int(y.sum()), len(y))
    tally.finish()
    rows: list[MetricRow] = []
    order = [p for c in [*columns, ATTRIBUTES] for p in
             [(c, "random"), (c, "popularity"), *((c, m) for m in methods)]]
    for key in dict.fromkeys(order):
        if key in errors:
            rows.append(MetricRow(vector_column=key[0], method=key[1], error=errors[key]))
        elif key in runs:
            rows.append(_aggregate(key, runs[key], sizes[key]))
    if (ATTRIBUTES, "random") in runs and any(c != ATTRIBUTES for c, _ in runs):
        # one set of baselines is enough when the vector columns' come first
        rows = [x for x in rows if not (x.vector_column == ATTRIBUTES and x.method in BASELINES)]
    base = float(np.mean(base_rates)) if base_rates else math.nan
    return rows, base, warnings, (curves, calibration)


def _aggregate(key: tuple[str, str], runs: list[dict[str, float]],
               size: tuple[int, int, int]) -> MetricRow:
    k, n_pos, n = size
    mean = {m: float(np.mean([r[m] for r in runs])) for m in runs[0]}
    sd = {m: float(np.std([r[m] for r in runs], ddof=1)) if len(runs) > 1 else None
          for m in runs[0]}
    interval = None
    if key[1] != "random":
        lo, hi = auc_interval([r["roc_auc"] for r in runs], n_pos, n - n_pos)
        interval = [round(lo, 6), round(hi, 6)]
    return MetricRow(vector_column=key[0], method=key[1], k=k, positives=n_pos, candidates=n,
                     repeats=len(runs), roc_auc_sd=sd["roc_auc"],
                     precision_at_k_sd=sd["precision_at_k"], roc_auc_interval=interval,
                     **mean)


def _verdict(rows: list[MetricRow], source: str) -> dict[str, Any] | None:
    usable = [r for r in rows if r.method not in BASELINES and r.roc_auc is not None]
    if not usable:
        return None
    best = max(usable, key=lambda r: r.roc_auc or 0.0)
    assert best.roc_auc is not None  # usable rows have one
    lo, hi = best.roc_auc_interval or [best.roc_auc, best.roc_auc]
    return predictability(f"{best.method} on {best.vector_column}", float(best.roc_auc or 0),
                          float(lo), float(hi), source)


def _columns(store: VectorStore, table: str, vector_columns: Sequence[str] | None,
             methods: Sequence[str]) -> list[str]:
    info = store.table_info(table)
    cols = list(vector_columns) if vector_columns else sorted(info.vectors)
    for c in cols:
        if c not in info.vectors:
            raise EvaluationError(f"table {table!r} has no vector column {c!r}; "
                                  f"vector columns: {sorted(info.vectors)}")
    if not cols and any(m != "propensity" for m in methods):
        raise EvaluationError(f"table {table!r} has no vector columns to evaluate "
                              f"{', '.join(m for m in methods if m != 'propensity')} on")
    return cols


def evaluate_holdout(store: VectorStore, product: str, *,
                     vector_columns: Sequence[str] | None = None,
                     methods: Sequence[str] = ("centroid", "learned"), holdout: float = 0.2,
                     seed: int = 0, repeats: int = DEFAULT_REPEATS, top_frac: float = 0.1,
                     k: int | None = None, table: str = CUSTOMERS,
                     products_table: str = PRODUCTS, min_consumers: int = 20,
                     baselines: bool = True, progress: Progress | None = None,
                     propensity_options: dict[str, Any] | None = None,
                     **learned_options: Any) -> EvaluationReport:
    """Hide a seeded ``holdout`` fraction of the product's holders, fit each method on the
    rest, rank every non-holder plus the hidden ones, and measure how high the hidden rank;
    ``repeats`` times with seeds ``seed``, ``seed + 1``, ...

    ``progress(rows scored, total)``: called per scanned block; the total is the table's rows
    times the (vector column, method) pairs times the repeats (one scoring pass each).
    """
    if not 0 < holdout < 1:
        raise EvaluationError(f"holdout must be in (0, 1), got {holdout!r}")
    if repeats < 1:
        raise EvaluationError(f"repeats must be at least 1, got {repeats!r}")
    cols = _columns(store, table, vector_columns, methods)
    if HOLDINGS not in store.table_info(table).schema.names:
        raise EvaluationError(f"table {table!r} has no {HOLDINGS!r} column")
    holders = store.to_arrow(table, columns=[CUSTOMER_KEY], filter=Has(HOLDINGS, product))
    ids = holders.column(CUSTOMER_KEY).combine_chunks()
    n_hidden = round(holdout * len(ids))
    if len(ids) - n_hidden < min_consumers or n_hidden < 1:
        raise NotEnoughData(f"product {product!r} has {len(ids)} holders: a {holdout:.0%} "
                            f"holdout leaves {len(ids) - n_hidden} to fit on and {n_hidden} to "
                            f"find (need >= {min_consumers} and >= 1)")

    def split(r: int) -> Split:
        rng = np.random.default_rng(seed + r)
        hidden = ids.take(pa.array(np.sort(rng.choice(len(ids), n_hidden, replace=False))))

        def evaluator(batch: pa.RecordBatch) -> np.ndarray:
            held = holds(batch, product)
            hid = in_ids(batch, hidden)
            return np.where(hid, 1, np.where(held, -1, 0)).astype(np.int8)

        return holdings_labeller(product, hidden), evaluator

    rows, base, warnings, curves = _evaluate(
        store, table, cols, methods, split, repeats, [CUSTOMER_KEY, HOLDINGS],
        product=product, products_table=products_table, seed=seed, top_frac=top_frac, k=k,
        baselines=baselines, learned_options=learned_options,
        propensity_options=propensity_options, prefilter=Has(HOLDINGS, product),
        progress=progress)
    rep = EvaluationReport(kind="holdout", target=product, base_rate=base, rows=rows,
                           warnings=warnings,
                           predictability=_verdict(rows, f"{repeats} repeated holdouts"),
                           params={"holdout": holdout, "seed": seed, "repeats": repeats,
                                   "top_frac": top_frac, "k": k, "hidden": n_hidden,
                                   "known": len(ids) - n_hidden})
    rep._curves, rep._calibration = curves
    return rep


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
    try:
        value = pa.scalar(positive, typ)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        value = pa.scalar(str(positive), typ) if pa.types.is_string(typ) else None
        if value is None:
            raise EvaluationError(f"label column {name!r} is {typ}: {positive!r} is not one "
                                  "of its values") from None
    return np.asarray(pc.fill_null(pc.equal(col, value), False), dtype=bool)


def evaluate_labels(store: VectorStore, label_column: str, *, positive: Any = None,
                    vector_columns: Sequence[str] | None = None,
                    methods: Sequence[str] = ("centroid", "learned"),
                    split_column: str | None = None, test_value: Any = "test",
                    test_size: float = 0.3, seed: int = 0, repeats: int = DEFAULT_REPEATS,
                    top_frac: float = 0.1, k: int | None = None, table: str = CUSTOMERS,
                    baselines: bool = True, progress: Progress | None = None,
                    propensity_options: dict[str, Any] | None = None,
                    **learned_options: Any) -> EvaluationReport:
    """Fit on the train rows' labels (``label_column == positive``), measure on the test rows.

    Test rows are those with ``split_column == test_value`` (one fixed split: ``repeats`` is
    then 1), or a seeded stratified ``test_size`` split per repeat (repeat ``r``: seed
    ``seed + r``; repeat 0 is ``train_test_split(..., random_state=seed)``). The label and
    split columns are never features. ``progress``: as in :func:`evaluate_holdout`.
    """
    from sklearn.model_selection import train_test_split

    if not 0 < test_size < 1:
        raise EvaluationError(f"test_size must be in (0, 1), got {test_size!r}")
    info = store.table_info(table)
    cols = _columns(store, table, vector_columns, methods)
    need = [CUSTOMER_KEY, label_column, *([split_column] if split_column else [])]
    try:
        info.check_columns(need)
    except ServiceError:
        raise
    except Exception as exc:
        raise EvaluationError(str(exc)) from exc
    base = store.to_arrow(table, columns=need)
    y_all = _positive_mask(base.column(label_column), positive, label_column)
    if split_column:
        repeats = 1
        split_col = base.column(split_column)
        try:
            value = pa.scalar(test_value, split_col.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            raise EvaluationError(f"split column {split_column!r} is {split_col.type}: "
                                  f"{test_value!r} is not one of its values") from None
        fixed = np.asarray(pc.fill_null(pc.equal(split_col, value), False), dtype=bool)
    keys = base.column(CUSTOMER_KEY).combine_chunks()

    def split(r: int) -> Split:
        if split_column:
            is_test = fixed
        else:
            idx = np.arange(base.num_rows)
            try:
                _, test_idx = train_test_split(idx, test_size=test_size, random_state=seed + r,
                                               stratify=y_all)
            except ValueError as exc:
                raise EvaluationError(f"cannot split {label_column!r}: {exc}") from None
            is_test = np.zeros(base.num_rows, dtype=bool)
            is_test[test_idx] = True
        test_ids = pc.filter(keys, pa.array(is_test))
        if len(test_ids) == 0 or len(test_ids) == base.num_rows:
            raise EvaluationError(f"the split leaves {len(test_ids)} test rows of "
                                  f"{base.num_rows}")

        def trainer(batch: pa.RecordBatch) -> np.ndarray:
            pos = _positive_mask(batch.column(label_column), positive, label_column)
            return np.where(in_ids(batch, test_ids), -1, pos).astype(np.int8)

        def evaluator(batch: pa.RecordBatch) -> np.ndarray:
            pos = _positive_mask(batch.column(label_column), positive, label_column)
            return np.where(in_ids(batch, test_ids), pos, -1).astype(np.int8)

        return trainer, evaluator

    label_cols = [CUSTOMER_KEY, label_column, *([split_column] if split_column else [])]
    if HOLDINGS in info.schema.names:
        label_cols.append(HOLDINGS)
    split(0)  # check the split before fitting anything
    rows, base_rate, warnings, curves = _evaluate(
        store, table, cols, methods, split, repeats, label_cols, product=None,
        products_table=PRODUCTS, seed=seed, top_frac=top_frac, k=k, baselines=baselines,
        learned_options=learned_options, propensity_options=propensity_options,
        prefilter=None, progress=progress)
    # train_test_split rounds a fractional test share up
    test_rows = int(fixed.sum()) if split_column else math.ceil(test_size * base.num_rows)
    rep = EvaluationReport(kind="label", target=f"{label_column} = {positive!r}",
                           base_rate=base_rate, rows=rows, warnings=warnings,
                           predictability=_verdict(rows, f"{repeats} repeated test splits"),
                           params={"split_column": split_column, "test_value": test_value,
                                   "test_size": test_size, "seed": seed, "repeats": repeats,
                                   "top_frac": top_frac, "k": k, "test_rows": test_rows})
    rep._curves, rep._calibration = curves
    return rep
