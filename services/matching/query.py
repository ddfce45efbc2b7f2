"""Query vectors for a product: centroid of its consumers, a learned linear model, or its own vector.

Every method yields a :class:`ProductQuery`: a vector to send to the store's search plus the
exact score the method assigns to any customer vector, so a ranking from the store and a
ranking computed in numpy (evaluation, streamed scoring) agree.

- ``centroid`` (lookalike): the direction from the population mean to the mean of the
  holders, ``normalise(mean(holders) - mean(all))``. Centring matters: on uncentred vectors
  every customer is close to the shared mean direction and cosine mostly measures that. With
  a cosine or dot column the ranking ``x . c`` equals the ranking of ``(x - mean) . c``
  (the mean only shifts every score by the same amount) when vectors are unit length, which
  embedders guarantee for cosine columns.
- ``learned``: a logistic regression holders-vs-rest on the vectors (strength ``C`` chosen by
  cross-validated ROC-AUC, weak regularisation and a tight tolerance because unit-length
  vectors have small coordinates). Its weight vector ``w`` is the query: on a dot column the
  store's score is ``x . w`` and on a cosine column of unit vectors it is ``x . w / |w|``,
  both monotone in the model's decision function ``x . w + b``, which is what the match
  reports. Where neither holds (vectors not unit length on a cosine or l2 column) matching
  scores ``x . w + b`` itself in streamed blocks.
- ``product``: the product's own vector from the ``products`` table (same column name).
- ``propensity``: calibrated probabilities from a gradient-boosted model of the raw attributes
  (:mod:`services.matching.propensity`); no vector. When ``kindred fit`` has written the
  product's scores, the query serves them from their column (:mod:`services.matching.scores`);
  otherwise it fits the model in memory and scores rows in streamed blocks.
- ``auto``: runs repeated holdouts for every method that applies and keeps the best mean
  ROC-AUC; ``details["auto"]`` says which it picked and why, and ``details["predictability"]``
  whether even the best is distinguishable from chance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold

from vectorstore import Metric, VectorStore
from vectorstore.filters import Cmp, Filter, Has

from ..errors import MatchingError, NotEnoughData, UnknownProduct
from ._data import (
    CUSTOMERS,
    HOLDINGS,
    PRODUCT_KEY,
    PRODUCTS,
    Labeller,
    check_shared_space,
    iter_blocks,
    population_mean,
    vector_matrix,
)

Method = Literal["centroid", "learned", "product", "propensity", "auto"]
METHODS: tuple[str, ...] = ("centroid", "learned", "product", "propensity", "auto")
ATTRIBUTES = "attributes"
"""The ``vector_column`` reported for the propensity method (it reads attributes, no vector)."""
DEFAULT_CS: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)
_UNIT_TOL = 1e-3


@dataclass
class ProductQuery:
    """How one product scores customers: the search vector and the exact score of a vector.

    ``score(X)`` is the method's score (higher is more likely / more typical). When
    ``searchable`` is true, a store search with ``vector`` ranks rows exactly like ``score``
    and ``scale * store_score + offset`` equals it; otherwise rank with ``score`` in numpy.
    """

    product: str
    method: str
    vector_column: str
    metric: Metric
    vector: np.ndarray
    searchable: bool = True
    scale: float = 1.0
    offset: float = 0.0
    intercept: float = 0.0
    n_consumers: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    model_: LogisticRegression | None = None
    linear: bool = False
    """The score is ``X @ vector + intercept`` whatever the column's metric."""
    rows_model: Any = None
    """propensity: the fitted :class:`~services.matching.propensity.PropensityModel`, which
    scores record batches (:meth:`score_rows`) instead of vectors."""
    score_column: str | None = None
    """propensity: the column holding the written probabilities, when they are served."""
    base_rate: float | None = None
    """propensity: the positives' share of the population (its probabilities' average)."""

    @property
    def probabilities(self) -> bool:
        """Scores are calibrated probabilities (the propensity method)."""
        return self.method == "propensity"

    def score_rows(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """propensity: calibrated probabilities of the rows of ``batch``."""
        if self.rows_model is None:
            raise MatchingError(f"the {self.method} query scores vectors, not rows")
        return self.rows_model.score_rows(batch)

    def score(self, X: np.ndarray) -> np.ndarray:
        """The method's score for each row of ``X`` (float64)."""
        q = self.vector.astype(np.float64)
        X = np.asarray(X, dtype=np.float32)
        if self.linear:
            return (X @ q.astype(np.float32)).astype(np.float64) + self.intercept
        if self.metric is Metric.L2:
            return -np.sqrt(np.maximum(((X - q.astype(np.float32)) ** 2).sum(axis=1), 0.0))
        raw = (X @ q.astype(np.float32)).astype(np.float64)
        if self.metric is Metric.COSINE:
            norms = np.linalg.norm(X, axis=1).astype(np.float64) * np.linalg.norm(q)
            raw = np.divide(raw, norms, out=np.zeros_like(raw), where=norms > 0)
        return raw

    def from_store(self, result: pa.Table) -> np.ndarray:
        """The method's score from a store search result (its ``score`` or ``distance``)."""
        if self.metric is Metric.L2:
            return -np.asarray(result.column("distance").to_numpy(), dtype=np.float64)
        s = np.asarray(result.column("score").to_numpy(), dtype=np.float64)
        return s * self.scale + self.offset

    def summary(self) -> dict[str, Any]:
        return {"product": self.product, "method": self.method,
                "vector_column": self.vector_column, "metric": str(self.metric),
                "n_consumers": self.n_consumers, "searchable": self.searchable, **self.details}


# --------------------------------------------------------------------------- fitting


def _count_positives(store: VectorStore, table: str, column: str, labeller: Labeller,
                     label_columns: Sequence[str]) -> int:
    return sum(int((labeller(b.batch) == 1).sum())
               for b in iter_blocks(store, table, column, columns=label_columns))


def fit_centroid(store: VectorStore, table: str, column: str, labeller: Labeller,
                 label_columns: Sequence[str], *, product: str = "",
                 prefilter: Filter | None = None, remember: bool = True) -> ProductQuery:
    """Centred centroid of the positives (see module docs).

    ``prefilter`` (when every positive satisfies it, e.g. ``has(holdings, product)``) limits
    the scan to those rows.
    """
    info = store.table_info(table)
    vec = info.vector(column)
    total = np.zeros(vec.dim, dtype=np.float64)
    n = 0
    for block in iter_blocks(store, table, column, columns=label_columns, filter=prefilter):
        pos = labeller(block.batch) == 1
        if pos.any():
            total += block.vectors[pos].sum(axis=0, dtype=np.float64)
            n += int(pos.sum())
    if n == 0:
        raise NotEnoughData(f"product {product!r}: no known consumers with a {column!r} vector")
    q = total / n - population_mean(store, table, column, remember=remember)
    norm = np.linalg.norm(q)
    if norm == 0:
        raise MatchingError(f"product {product!r}: its consumers' mean equals the population "
                            f"mean on {column!r}; the centroid has no direction")
    q = q / norm
    # on an l2 column the store cannot rank by a direction: score x . c in streamed blocks
    l2 = vec.metric is Metric.L2
    return ProductQuery(product, "centroid", column, vec.metric, q.astype(np.float32),
                        searchable=not l2, linear=l2, n_consumers=n, details={"centred": True})


def _sample_training(store: VectorStore, table: str, column: str, labeller: Labeller,
                     label_columns: Sequence[str], *, seed: int, max_negatives: int,
                     max_positives: int) -> tuple[np.ndarray, np.ndarray]:
    """All positives (up to a cap) and a uniform sample of negatives, in one streamed pass."""
    rng = np.random.default_rng(seed)
    total = max(store.count(table), 1)
    p_neg = min(1.0, max_negatives / total)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for block in iter_blocks(store, table, column, columns=label_columns):
        lab = labeller(block.batch)
        keep = (lab == 1) | ((lab == 0) & (rng.random(len(lab)) < p_neg))
        xs.append(block.vectors[keep])
        ys.append(lab[keep].astype(np.int8))
    if not xs:
        raise NotEnoughData(f"table {table!r} has no {column!r} vectors")
    X, y = np.concatenate(xs).astype(np.float64), np.concatenate(ys)
    pos = np.flatnonzero(y == 1)
    if len(pos) > max_positives:
        drop = rng.choice(pos, len(pos) - max_positives, replace=False)
        keep_mask = np.ones(len(y), dtype=bool)
        keep_mask[drop] = False
        X, y = X[keep_mask], y[keep_mask]
    return X, y


def cv_folds(y: np.ndarray, folds: int, seed: int) -> StratifiedKFold:
    """Seeded, shuffled stratified folds; at most as many as either class has rows (at least 2)."""
    n_pos = int(y.sum())
    return StratifiedKFold(n_splits=max(2, min(folds, n_pos, len(y) - n_pos)), shuffle=True,
                           random_state=seed)


def fit_logistic(X: np.ndarray, y: np.ndarray, Cs: Sequence[float], *, seed: int,
                 folds: int = 3, tol: float = 1e-6) -> tuple[LogisticRegression, float,
                                                              dict[float, float]]:
    """(model refitted on all rows, its C, mean cross-validated ROC-AUC per C).

    Several ``Cs``: scikit-learn's ``LogisticRegressionCV`` picks the C with the best mean
    ROC-AUC over :func:`cv_folds` (ties: the smaller C, the grid being tried in increasing
    order) and refits on every row. One C: a plain fit, no cross-validation."""
    if len(Cs) == 1:
        model = LogisticRegression(C=float(Cs[0]), tol=tol, max_iter=5000).fit(X, y)
        return model, float(Cs[0]), {}
    grid = sorted(float(c) for c in Cs)
    cv_model = LogisticRegressionCV(
        Cs=grid, l1_ratios=(0.0,), cv=cv_folds(y, folds, seed), scoring="roc_auc", tol=tol,
        max_iter=5000, refit=True, use_legacy_attributes=False).fit(X, y)
    mean = np.asarray(cv_model.scores_, dtype=np.float64).mean(axis=0)[0]  # (n_cs,)
    return cv_model, float(cv_model.C_), {c: float(m) for c, m in zip(grid, mean, strict=True)}


def fit_learned(store: VectorStore, table: str, column: str, labeller: Labeller,
                label_columns: Sequence[str], *, product: str = "", seed: int = 0,
                Cs: Sequence[float] = DEFAULT_CS, max_negatives: int = 20_000,
                max_positives: int = 20_000, tol: float = 1e-6) -> ProductQuery:
    """Logistic regression positives-vs-rest; its weights become the search vector."""
    vec = store.table_info(table).vector(column)
    X, y = _sample_training(store, table, column, labeller, label_columns, seed=seed,
                            max_negatives=max_negatives, max_positives=max_positives)
    n_pos = int(y.sum())
    if n_pos < 2 or n_pos == len(y):
        raise NotEnoughData(f"product {product!r}: a learned query needs positives and negatives "
                            f"with {column!r} vectors; got {n_pos} of {len(y)}")
    model, C, cv_scores = fit_logistic(X, y, Cs, seed=seed, tol=tol)
    w = model.coef_[0].astype(np.float64)
    b = float(model.intercept_[0])
    norms = np.linalg.norm(X, axis=1)
    unit = bool(np.all(np.abs(norms - 1.0) < _UNIT_TOL))
    wn = float(np.linalg.norm(w))
    if vec.metric is Metric.DOT:
        searchable, scale = True, 1.0
    elif vec.metric is Metric.COSINE and unit and wn > 0:
        searchable, scale = True, wn
    else:
        searchable, scale = False, 1.0
    return ProductQuery(
        product, "learned", column, vec.metric, w.astype(np.float32), searchable=searchable,
        scale=scale, offset=b, intercept=b, n_consumers=n_pos, model_=model, linear=True,
        details={"C": C, "cv_roc_auc": cv_scores, "train_rows": len(y),
                 "train_positives": n_pos, "unit_vectors": unit},
    )


def product_vector(store: VectorStore, product: str, column: str, *,
                   products_table: str = PRODUCTS) -> np.ndarray | None:
    """The product's own vector in ``column`` of the products table, or None if it has none."""
    if not store.has_table(products_table):
        return None
    info = store.table_info(products_table)
    if column not in info.vectors:
        return None
    rows = store.to_arrow(products_table, columns=[column],
                          filter=Cmp(PRODUCT_KEY, "=", product))
    if rows.num_rows == 0 or rows.column(column).null_count == rows.num_rows:
        return None
    arr = pc.drop_null(rows.column(column))
    return vector_matrix(arr, info.vectors[column].dim)[0]


def fit_product(store: VectorStore, table: str, column: str, product: str, *,
                products_table: str = PRODUCTS) -> ProductQuery:
    vec = store.table_info(table).vector(column)
    v = product_vector(store, product, column, products_table=products_table)
    if v is not None:
        check_shared_space(store, column, table=table, products_table=products_table)
    if v is None:
        raise UnknownProduct(f"product {product!r} has no {column!r} vector in table "
                             f"{products_table!r} (method 'product' needs one)")
    return ProductQuery(product, "product", column, vec.metric, v.astype(np.float32))


def fit_propensity_query(store: VectorStore, table: str, labeller: Labeller,
                         label_columns: Sequence[str], *, product: str = "", seed: int = 0,
                         **options: Any) -> ProductQuery:
    """A propensity query fitted in memory on ``labeller``'s rows (nothing is written)."""
    from .propensity import fit_propensity

    model = fit_propensity(store, table, labeller, label_columns, product=product, seed=seed,
                           **options)
    return ProductQuery(product, "propensity", ATTRIBUTES, Metric.DOT,
                        np.zeros(0, np.float32), searchable=False,
                        n_consumers=int(model.details["train_positives"]),
                        details=dict(model.details), rows_model=model,
                        base_rate=model.base_rate)


def fit_query(store: VectorStore, table: str, column: str, method: str, labeller: Labeller,
              label_columns: Sequence[str], *, product: str = "", seed: int = 0,
              products_table: str = PRODUCTS, prefilter: Filter | None = None,
              remember: bool = True, propensity_options: dict[str, Any] | None = None,
              **learned_options: Any) -> ProductQuery:
    """A query by ``centroid``, ``learned``, ``product`` or ``propensity`` from labelled rows
    (no checks).

    ``prefilter``: a filter every positive row satisfies (narrows the centroid's scan).
    ``remember``: the centroid may cache the population mean in the table metadata.
    """
    if method == "propensity":
        return fit_propensity_query(store, table, labeller, label_columns, product=product,
                                    seed=seed, **(propensity_options or {}))
    if method == "centroid":
        return fit_centroid(store, table, column, labeller, label_columns, product=product,
                            prefilter=prefilter, remember=remember)
    if method == "learned":
        return fit_learned(store, table, column, labeller, label_columns, product=product,
                           seed=seed, **learned_options)
    if method == "product":
        return fit_product(store, table, column, product, products_table=products_table)
    raise MatchingError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")


# --------------------------------------------------------------------------- entry point


def count_consumers(store: VectorStore, product: str, *, table: str = CUSTOMERS,
                    holdings: str = HOLDINGS) -> int:
    """How many customers hold ``product``."""
    info = store.table_info(table)
    if holdings not in info.schema.names:
        raise MatchingError(f"table {table!r} has no {holdings!r} column: matching needs each "
                            "customer's product holdings")
    return store.count(table, Has(holdings, product))


def stored_propensity_query(store: VectorStore, info: Any, product: str) -> ProductQuery | None:
    """A query serving ``product``'s written probabilities, if ``kindred fit`` wrote them."""
    from .scores import stored_entry

    entry = stored_entry(info, product)
    if entry is None:
        return None
    details = {"served_from": entry["column"], "model_id": entry["model_id"],
               "fitted_at": entry["fitted_at"], "scored_at": entry["scored_at"],
               "rows_scored": entry["rows_scored"], "assessment": entry["assessment"],
               "leakage": entry.get("leakage") or [], "thresholds": entry["thresholds"]}
    return ProductQuery(product, "propensity", ATTRIBUTES, Metric.DOT, np.zeros(0, np.float32),
                        searchable=False,
                        n_consumers=int(entry["state"]["details"]["train_positives"]),
                        details=details, score_column=entry["column"],
                        base_rate=float(entry["base_rate"]))
