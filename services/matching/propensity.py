"""``propensity``: calibrated holding probabilities from the raw attributes, by gradient boosting.

Fit (:func:`fit_propensity`), on the labelled rows only (holders vs the rest, or a label):

1. a streamed pass keeps every positive and a seeded uniform sample of the negatives (at most
   ``max_negatives``; sampled rows are weighted back to the population, so probabilities stay
   population probabilities);
2. the attributes become features (:mod:`services.matching.features`: numbers, categories by
   level, the customer's other holdings as 0/1), plus, for each vector column, the lookalike
   score: the row's vector dotted with the direction from the population mean to the
   positives' mean (computed in a first streamed pass over the labelled rows); each feature
   alone is checked for leakage;
3. scikit-learn's ``HistGradientBoostingClassifier`` (native categorical support, early
   stopping) is cross-validated (stratified ``folds``, seeded) on a small grid of
   hyper-parameters, inside these rows only; the predictor is the average log-odds of the
   cross-validation models of the two best configurations (by mean ROC-AUC), so the fits that
   chose the parameters are also the ones that predict;
4. probabilities are calibrated by a logistic (Platt) map of that log-odds fitted on the
   out-of-fold predictions: monotone, so the ranking is the models' own.

The cross-validated ROC-AUC (mean, SD, interval) says whether the target is predictable at
all. :func:`score_rows` scores any record batch; :func:`score_table` streams the whole table.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ingest.datamodel import META_EMBEDDERS
from vectorstore import VectorStore

from ..errors import NotEnoughData
from ._data import HOLDINGS, Labeller, Progress, Tally, holds
from .assess import auc_interval
from .features import (
    FeatureSpec,
    candidate_columns,
    fit_spec,
    leakage_warnings,
    single_feature_aucs,
)

GRID: tuple[dict[str, Any], ...] = (
    {"learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 20,
     "l2_regularization": 0.0},
    {"learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 40,
     "l2_regularization": 1.0},
    {"learning_rate": 0.05, "max_leaf_nodes": 31, "min_samples_leaf": 80,
     "l2_regularization": 1.0},
    {"learning_rate": 0.05, "max_leaf_nodes": 7, "min_samples_leaf": 20,
     "l2_regularization": 0.0},
)
FOLDS = 5
ENSEMBLE_CONFIGS = 2
SCORE_ROWS = 65_536
LADDER_BINS = 6000
LADDER_LOGITS = (-30.0, 30.0)
"""The score ladder's histogram: ``LADDER_BINS`` equal bins of the log-odds over this range
(0.01 wide), the outer bins open-ended."""
LADDER_TALLY = "ladder:"


@dataclass
class PropensityModel:
    """A fitted propensity model: features, the averaged boosted models, the calibration."""

    product: str
    spec: FeatureSpec
    models: list[Any]
    calibration: tuple[float, float]
    base_rate: float
    details: dict[str, Any] = field(default_factory=dict)

    def log_odds(self, X: np.ndarray) -> np.ndarray:
        """The models' mean raw log-odds (before calibration)."""
        return np.mean([m.decision_function(X) for m in self.models], axis=0)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for encoded rows ``X``."""
        a, b = self.calibration
        return 1.0 / (1.0 + np.exp(-(a * self.log_odds(X) + b)))

    def score_rows(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        """Calibrated probabilities for the rows of ``batch`` (it needs ``spec.columns``)."""
        if batch.num_rows == 0:
            return np.zeros(0)
        return self.predict(self.spec.encode(batch))

    @property
    def columns(self) -> list[str]:
        return self.spec.columns

    def state(self) -> dict[str, Any]:
        """Everything but the estimators, as JSON."""
        return {"product": self.product, "spec": self.spec.to_dict(),
                "calibration": list(self.calibration), "base_rate": self.base_rate,
                "details": self.details}

    @classmethod
    def from_state(cls, state: dict[str, Any], models: list[Any]) -> PropensityModel:
        a, b = state["calibration"]
        return cls(state["product"], FeatureSpec.from_dict(state["spec"]), list(models),
                   (float(a), float(b)), float(state["base_rate"]), dict(state["details"]))


def _training_sample(store: VectorStore, table: str, columns: Sequence[str],
                     labeller: Labeller, label_columns: Sequence[str], *, seed: int,
                     max_positives: int, max_negatives: int,
                     directions: dict[str, list[float]] | None = None
                     ) -> tuple[pa.Table, np.ndarray, np.ndarray]:
    """Positives and a uniform sample of negatives with their labels and weights (vector
    columns in ``directions`` are kept only as their projection, to bound memory)."""
    from .features import similarity
    rng = np.random.default_rng(seed)
    total = max(store.count(table), 1)
    p_neg = min(1.0, max_negatives / total)
    wanted = list(dict.fromkeys([*columns, *label_columns]))
    parts: list[pa.Table] = []
    ys: list[np.ndarray] = []
    for batch in store.scan(table, columns=wanted):
        lab = labeller(batch)
        keep = (lab == 1) | ((lab == 0) & (rng.random(len(lab)) < p_neg))
        if keep.any():
            part = pa.Table.from_batches([batch]).filter(pa.array(keep))
            for c, d in (directions or {}).items():
                proj = similarity(part.column(c).combine_chunks(), np.asarray(d))
                part = part.set_column(part.schema.get_field_index(c), c,
                                       pa.array(proj, pa.float64()))
            parts.append(part)
            ys.append(lab[keep].astype(np.int8))
    if not parts:
        raise NotEnoughData(f"table {table!r} has no labelled rows")
    sample = pa.concat_tables(parts)
    y = np.concatenate(ys)
    pos = np.flatnonzero(y == 1)
    w = np.where(y == 1, 1.0, 1.0 / p_neg)
    if len(pos) > max_positives:
        keep_pos = np.zeros(len(y), dtype=bool)
        keep_pos[rng.choice(pos, max_positives, replace=False)] = True
        keep = keep_pos | (y == 0)
        w = np.where(y == 1, len(pos) / max_positives, w)[keep]
        sample, y = sample.filter(pa.array(keep)), y[keep]
    return sample, y, w


def reads_holdings(info: Any, column: str, depth: int = 0) -> bool:
    """Whether a vector column was built from the holdings (a behaviour embedding): its
    lookalike score would restate the holding itself, so it is no feature by default."""
    entry = (info.metadata.get(META_EMBEDDERS) or {}).get(column) or {}
    params = entry.get("params") or {}
    if params.get("holdings_column"):
        return True
    sources = params.get("sources") or params.get("weights") or {}
    return depth < 3 and any(reads_holdings(info, c, depth + 1) for c in sources
                             if isinstance(c, str))


def consumer_directions(store: VectorStore, table: str, columns: Sequence[str],
                        labeller: Labeller, label_columns: Sequence[str]
                        ) -> dict[str, list[float]]:
    """Per vector column: mean of the positives' vectors minus the mean of all vectors."""
    from ._data import iter_blocks

    info = store.table_info(table)
    out: dict[str, list[float]] = {}
    for c in columns:
        dim = info.vector(c).dim
        tot, pos = np.zeros(dim), np.zeros(dim)
        n = n_pos = 0
        for block in iter_blocks(store, table, c, columns=label_columns):
            lab = labeller(block.batch)
            ok = lab >= 0
            tot += block.vectors[ok].sum(axis=0, dtype=np.float64)
            pos += block.vectors[lab == 1].sum(axis=0, dtype=np.float64)
            n += int(ok.sum())
            n_pos += int((lab == 1).sum())
        if n and n_pos:
            d = pos / n_pos - tot / n
            norm = np.linalg.norm(d)
            if norm > 0:
                out[c] = [float(x) for x in d / norm]
    return out


def fit_propensity(store: VectorStore, table: str, labeller: Labeller,
                   label_columns: Sequence[str], *, product: str = "", seed: int = 0,
                   exclude: Sequence[str] = (), include: Sequence[str] | None = None,
                   types: dict[str, str] | None = None,
                   vector_columns: Sequence[str] | None = None,
                   grid: Sequence[dict[str, Any]] = GRID, folds: int = FOLDS,
                   max_positives: int = 100_000, max_negatives: int = 200_000,
                   max_iter: int = 1000) -> PropensityModel:
    """Fit a calibrated gradient-boosted model of ``labeller``'s positives (see module docs).

    ``exclude``/``include`` choose the attribute columns (the label columns are never
    features); ``types`` declares columns as ``category`` or ``numeric``; ``vector_columns``
    (default: every vector column not built from the holdings) give the lookalike-score
    features.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    t0 = time.perf_counter()
    info = store.table_info(table)
    never = [c for c in label_columns if c not in (info.key, HOLDINGS)]
    columns = candidate_columns(info, exclude=[*exclude, *never], include=include)
    vec_cols = [c for c in info.vectors if not reads_holdings(info, c)] \
        if vector_columns is None else list(vector_columns)
    directions = consumer_directions(store, table, vec_cols, labeller, label_columns)
    read = [*columns, *([HOLDINGS] if HOLDINGS in info.schema.names else []), *directions]
    sample, y, w = _training_sample(store, table, read, labeller, label_columns, seed=seed,
                                    max_positives=max_positives, max_negatives=max_negatives,
                                    directions=directions)
    n_pos = int(y.sum())
    folds = max(2, min(folds, n_pos, len(y) - n_pos))
    if n_pos < 2 * folds or len(y) - n_pos < 2 * folds:
        raise NotEnoughData(f"product {product!r}: a propensity model needs at least "
                            f"{2 * folds} positives and negatives; got {n_pos} of {len(y)}")
    spec = fit_spec(sample, info, columns, target_product=product or None, declared=types,
                    directions=directions)
    X = spec.encode(sample)
    base_rate = float(np.average(y, weights=w))
    # leakage is about the outcome itself: with a product, against every holder (a holdout
    # counts hidden holders as negatives, which would dilute an attribute that records it)
    y_leak = holds(sample, product) if product and HOLDINGS in sample.column_names else y
    leakage = leakage_warnings(single_feature_aucs(X, y_leak, spec, seed=seed))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    splits = list(cv.split(X, y))
    results: list[dict[str, Any]] = []
    for i, params in enumerate(grid):
        oof = np.zeros(len(y))
        models, aucs, iters = [], [], []
        for tr, te in splits:
            m = HistGradientBoostingClassifier(
                categorical_features=spec.categorical_mask, max_iter=max_iter,
                early_stopping=True, n_iter_no_change=30, validation_fraction=0.1,
                random_state=seed, **params).fit(X[tr], y[tr], sample_weight=w[tr])
            oof[te] = m.decision_function(X[te])
            aucs.append(float(roc_auc_score(y[te], oof[te], sample_weight=w[te])))
            models.append(m)
            iters.append(int(m.n_iter_))
        results.append({"config": i, "params": dict(params), "fold_roc_auc": aucs,
                        "roc_auc": float(np.mean(aucs)), "oof": oof, "models": models,
                        "iterations": iters})
    ranked = sorted(results, key=lambda r: -r["roc_auc"])
    chosen = ranked[:ENSEMBLE_CONFIGS]
    oof = np.mean([r["oof"] for r in chosen], axis=0)
    platt = LogisticRegression(C=1e6, max_iter=1000).fit(oof[:, None], y, sample_weight=w)
    calibration = (float(platt.coef_[0, 0]), float(platt.intercept_[0]))
    best = ranked[0]
    fold_aucs = best["fold_roc_auc"]
    curve = calibration_curve(y, 1.0 / (1.0 + np.exp(-(calibration[0] * oof + calibration[1]))),
                              w)
    n_neg = len(y) - n_pos
    lo, hi = auc_interval(fold_aucs, n_pos / folds, n_neg / folds)
    details = {
        "features": spec.names, "dropped": spec.dropped, "train_rows": len(y),
        "train_positives": n_pos, "negatives_weight": float(w[y == 0].max(initial=1.0)),
        "folds": folds, "seed": seed,
        "cv": [{"config": r["config"], "params": r["params"],
                "roc_auc": round(r["roc_auc"], 6),
                "roc_auc_sd": round(float(np.std(r["fold_roc_auc"], ddof=1)), 6),
                "iterations": r["iterations"]} for r in results],
        "ensemble": [r["config"] for r in chosen],
        "assessment": {"source": f"{folds}-fold cross-validation on the training rows",
                       "roc_auc": round(float(np.mean(fold_aucs)), 6),
                       "roc_auc_sd": round(float(np.std(fold_aucs, ddof=1)), 6),
                       "interval": [round(lo, 6), round(hi, 6)], "predictable": lo > 0.5},
        "leakage": leakage, "calibration_curve": curve,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    models = [m for r in chosen for m in r["models"]]
    return PropensityModel(product, spec, models, calibration, base_rate, details)


def calibration_curve(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None,
                      bins: int = 10) -> list[dict[str, float]]:
    """Mean predicted probability vs observed positive rate in ``bins`` quantile bins of the
    out-of-fold predictions (weighted back to the population)."""
    w = np.ones(len(y)) if w is None else w
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)[1:-1]))
    idx = np.searchsorted(edges, p, side="right")
    out = []
    for b in range(len(edges) + 1):
        m = idx == b
        if not m.any():
            continue
        ww = w[m]
        out.append({"predicted": float(np.average(p[m], weights=ww)),
                    "observed": float(np.average(y[m], weights=ww)), "rows": int(m.sum())})
    return out


def ladder_counts(p: np.ndarray) -> dict[str, int]:
    """The probabilities ``p`` as counts per log-odds bin (non-empty bins only), keyed
    ``ladder:<bin>``: a per-partition summary that merges by summing, so a ladder of score
    thresholds needs neither every score nor a global sort, and any split of the rows (any
    runner) gives the same ladder."""
    lo, hi = LADDER_LOGITS
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-300, 1.0)
    with np.errstate(divide="ignore"):
        z = np.log(q) - np.log1p(-q)  # +inf at p == 1 (the top bin)
    idx = np.clip(np.floor((z - lo) / ((hi - lo) / LADDER_BINS)), 0, LADDER_BINS - 1)
    bins, counts = np.unique(idx.astype(np.int64), return_counts=True)
    return {f"{LADDER_TALLY}{b}": int(c) for b, c in zip(bins.tolist(), counts.tolist(),
                                                          strict=True)}


def ladder_from_counts(counts: dict[str, int], fractions: Sequence[float]
                       ) -> list[list[float]]:
    """``[[f, t], ...]``: for each share ``f`` a score ``t`` with at least ``ceil(f * n)`` of
    the counted rows scoring ``>= t`` and as few more as the bins allow (``t`` is the lower
    edge of a bin, a hair below it). Empty counts give an empty ladder."""
    hist = np.zeros(LADDER_BINS, dtype=np.int64)
    for k, v in counts.items():
        if k.startswith(LADDER_TALLY):
            hist[int(k[len(LADDER_TALLY):])] += v
    n = int(hist.sum())
    if not n:
        return []
    lo, hi = LADDER_LOGITS
    width = (hi - lo) / LADDER_BINS
    above = np.cumsum(hist[::-1])[::-1]  # rows in bin b or higher
    out = []
    for f in fractions:
        need = max(1, int(np.ceil(f * n)))
        b = int(np.flatnonzero(above >= need)[-1])
        t = 0.0 if b == 0 else float(1.0 / (1.0 + np.exp(-(lo + b * width - 1e-9))))
        out.append([f, t])
    return out


def score_batches(store: VectorStore, table: str, model: PropensityModel, *,
                  batch_size: int = SCORE_ROWS, progress: Progress | None = None
                  ) -> Iterator[pa.RecordBatch]:
    """``(key, probability)`` batches for every row of ``table``, streamed."""
    info = store.table_info(table)
    key = info.key or "customer_id"
    tally = Tally(progress, store.count(table) if progress is not None else None)
    for batch in store.scan(table, columns=[key, *model.columns], batch_size=batch_size):
        p = model.score_rows(batch)
        tally.add(batch.num_rows)
        yield pa.record_batch([pa.concat_arrays([batch.column(key)]),
                               pa.array(p, pa.float64())], names=[key, "score"])
    tally.finish()
