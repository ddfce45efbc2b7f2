"""Raw attributes as a model's features: which columns, how each is encoded, and a leakage check.

:class:`FeatureSpec` is fitted on a sample of rows and then encodes any record batch the same
way, as a float matrix that scikit-learn's HistGradientBoosting reads with native categorical
support: numbers (timestamps and dates in days, booleans as 0/1) as they are, categories as the
index of their level (levels kept by frequency, at most :data:`MAX_LEVELS`; unseen or rare
levels and nulls are missing), and the customer's other holdings as 0/1 columns
(``holds:<product>``). Which attribute is a number and which a category is
:func:`ingest.column_kinds.column_kind` (the rule the tabular embedder uses). Columns the model
cannot use (lists, vectors, derived ``risk_``/``rec_``/``propensity_`` columns, free text or
identifiers with too many distinct values) are left out, and the reason is kept in ``dropped``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ingest.column_kinds import column_kind, is_code_candidate, numeric_values
from ingest.freshness import AGING_FEATURES, is_derived
from vectorstore import TableInfo

from ..errors import MatchingError
from ._data import HOLDINGS

MAX_LEVELS = 250
"""Category levels kept per column (HistGradientBoosting bins at most 255 values)."""
MAX_DISTINCT_SHARE = 0.05
"""A text column with more than :data:`MAX_LEVELS` distinct values that are also more than this
share of the rows (most levels rare) is an identifier or free text, not a category."""
MAX_HOLDING_FEATURES = 100
HOLDS_PREFIX = "holds:"
SIMILARITY_PREFIX = "similarity:"


def _usable_type(t: pa.DataType) -> bool:
    return not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)
                or pa.types.is_struct(t) or pa.types.is_map(t) or pa.types.is_binary(t)
                or pa.types.is_large_binary(t) or pa.types.is_null(t))


def candidate_columns(info: TableInfo, *, exclude: Sequence[str] = (),
                      include: Sequence[str] | None = None) -> list[str]:
    """The scalar attribute columns a model may use (key, vectors, holdings, derived left out)."""
    if include is not None:
        info.check_columns(list(include))
        names = list(include)
    else:
        names = [f.name for f in info.schema]
    info.check_columns(list(exclude))
    # derived and bookkeeping columns never; features that age with the consolidation's
    # as_of only when named (a model reading them is re-scored in full as as_of moves)
    return [n for n in names if n != info.key and n not in info.vectors and n != HOLDINGS
            and n not in exclude and not is_derived(n)
            and (include is not None or n not in AGING_FEATURES)
            and _usable_type(info.schema.field(n).type)]


def _as_text(arr: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return pc.cast(arr, pa.string())


def _column(data: pa.Table | pa.RecordBatch, name: str) -> pa.Array:
    col = data.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


@dataclass
class FeatureSpec:
    """How rows become the model's feature matrix (fitted state, JSON-serialisable)."""

    numeric: list[str]
    categorical: dict[str, list[str]]
    holdings: list[str]
    dropped: dict[str, str] = field(default_factory=dict)
    similarity: dict[str, list[float]] = field(default_factory=dict)
    """vector column -> the direction from all rows' mean to the positives' mean: the
    feature ``similarity:<column>`` is each row's vector dotted with it (its lookalike score)."""

    @property
    def names(self) -> list[str]:
        return [*self.numeric, *self.categorical, *(HOLDS_PREFIX + p for p in self.holdings),
                *(SIMILARITY_PREFIX + c for c in self.similarity)]

    @property
    def attributes(self) -> list[str]:
        """The attribute each feature comes from (holdings features: ``holds:<product>``)."""
        return self.names

    @property
    def categorical_mask(self) -> np.ndarray:
        n_num, n_cat = len(self.numeric), len(self.categorical)
        mask = np.zeros(len(self.names), dtype=bool)
        mask[n_num:n_num + n_cat] = True
        return mask

    @property
    def columns(self) -> list[str]:
        """Columns a batch must have for :meth:`encode`."""
        return [*self.numeric, *self.categorical, *([HOLDINGS] if self.holdings else []),
                *self.similarity]

    def encode(self, data: pa.Table | pa.RecordBatch) -> np.ndarray:
        """The ``(rows, features)`` float64 matrix; NaN is a missing value."""
        n = data.num_rows
        out = np.empty((n, len(self.names)), dtype=np.float64)
        j = 0
        for c in self.numeric:
            out[:, j] = numeric_values(_column(data, c))
            j += 1
        for c, levels in self.categorical.items():
            idx = pc.index_in(_as_text(_column(data, c)), value_set=pa.array(levels, pa.string()))
            out[:, j] = np.asarray(pc.cast(idx, pa.float64()).to_numpy(zero_copy_only=False),
                                   dtype=np.float64)
            j += 1
        if self.holdings:
            out[:, j:j + len(self.holdings)] = held_matrix(_column(data, HOLDINGS),
                                                           self.holdings)
            j += len(self.holdings)
        for c, direction in self.similarity.items():
            out[:, j] = similarity(_column(data, c), np.asarray(direction))
            j += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ordered pairs, not objects: stores may sort object keys, and the
        feature order is the model's column order."""
        return {"numeric": self.numeric, "categorical": [[c, v] for c, v in
                                                         self.categorical.items()],
                "holdings": self.holdings, "dropped": self.dropped,
                "similarity": [[c, v] for c, v in self.similarity.items()]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        return cls(list(d["numeric"]), {c: list(v) for c, v in d["categorical"]},
                   list(d["holdings"]), dict(d.get("dropped") or {}),
                   {c: list(v) for c, v in d.get("similarity") or []})


def similarity(vectors: pa.Array, direction: np.ndarray) -> np.ndarray:
    """Each vector dotted with ``direction`` (NaN where the row has no vector); a float column
    is taken as already projected (the training sample keeps only the projection)."""
    if pa.types.is_floating(vectors.type):
        return numeric_values(vectors)
    out = np.full(len(vectors), np.nan)
    if len(vectors) == 0:
        return out
    valid = np.asarray(pc.is_valid(vectors).to_numpy(zero_copy_only=False), dtype=bool)
    if valid.any():
        flat = pc.list_flatten(vectors.filter(pa.array(valid))).to_numpy(zero_copy_only=False)
        X = np.asarray(flat, dtype=np.float64).reshape(int(valid.sum()), len(direction))
        out[valid] = X @ direction
    return out


def held_matrix(holdings: pa.Array, products: Sequence[str]) -> np.ndarray:
    """(rows, products) 0/1 matrix: the row's holdings list contains the product."""
    out = np.zeros((len(holdings), len(products)), dtype=np.float64)
    if not len(products) or not len(holdings):
        return out
    flat = pc.list_flatten(holdings)
    parents = pc.list_parent_indices(holdings).to_numpy()
    which = pc.index_in(flat, value_set=pa.array(list(products), pa.string()))
    ok = pc.is_valid(which).to_numpy(zero_copy_only=False)
    out[parents[ok], which.to_numpy(zero_copy_only=False)[ok].astype(np.int64)] = 1.0
    return out


def fit_spec(sample: pa.Table, info: TableInfo, columns: Sequence[str], *,
             target_product: str | None, declared: dict[str, str] | None = None,
             directions: dict[str, list[float]] | None = None) -> FeatureSpec:
    """Choose and encode the feature columns from ``sample`` (rows of ``columns``, and
    ``holdings`` when the table has it). ``target_product`` is never a feature."""
    declared = declared or {}
    numeric: list[str] = []
    categorical: dict[str, list[str]] = {}
    dropped: dict[str, str] = {}
    n = max(sample.num_rows, 1)
    for c in columns:
        arr = _column(sample, c)
        t = info.schema.field(c).type
        distinct = None
        if is_code_candidate(c, t) or declared.get(c) == "category" or \
                pa.types.is_string(t) or pa.types.is_large_string(t) or \
                pa.types.is_dictionary(t):
            counts = pc.value_counts(_as_text(arr).drop_null())
            distinct = len(counts)
        try:
            kind = column_kind(c, t, declared=declared.get(c), n_distinct=distinct)
        except ValueError as exc:
            raise MatchingError(str(exc)) from None
        if kind is None:
            dropped[c] = f"type {t} is not an attribute"
        elif arr.null_count == len(arr):
            dropped[c] = "no values"
        elif kind == "numeric":
            numeric.append(c)
        elif distinct is not None and distinct > MAX_LEVELS \
                and distinct > MAX_DISTINCT_SHARE * n and c not in declared:
            dropped[c] = f"{distinct} distinct values: free text or an identifier"
        else:
            vals = counts.field("values").to_pylist()
            cnts = np.asarray(counts.field("counts").to_numpy())
            order = np.lexsort((np.asarray(vals, dtype=object).astype(str), -cnts))
            categorical[c] = [vals[i] for i in order[:MAX_LEVELS] if cnts[i] >= 2] or \
                [vals[i] for i in order[:1]]
    holdings: list[str] = []
    if HOLDINGS in sample.column_names:
        flat = pc.list_flatten(_column(sample, HOLDINGS)).drop_null()
        if len(flat):
            vc = pc.value_counts(flat)
            names = vc.field("values").to_pylist()
            cnts = vc.field("counts").to_pylist()
            ranked = sorted(zip(names, cnts, strict=True), key=lambda x: (-x[1], x[0]))
            holdings = [p for p, k in ranked if p != target_product and 0 < k < n][
                :MAX_HOLDING_FEATURES]
    if not numeric and not categorical and not holdings and not directions:
        raise MatchingError(f"table {info.name!r} has no attribute a propensity model can use "
                            f"(dropped: {dropped or 'none'})")
    return FeatureSpec(numeric, categorical, holdings, dropped, dict(directions or {}))


# --------------------------------------------------------------------------- leakage

LEAKAGE_AUC = 0.98


def single_feature_aucs(X: np.ndarray, y: np.ndarray, spec: FeatureSpec, *, seed: int = 0,
                        bins: int = 32) -> dict[str, float]:
    """ROC-AUC of each feature alone, out of fold: the feature is cut into levels (its
    categories, or ``bins`` quantile bins of a number, missing as its own level), each level
    scored by its positive rate on the other half of the rows (two folds, seeded)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y, dtype=bool)
    if y.all() or not y.any():
        return {}
    rng = np.random.default_rng(seed)
    fold = rng.random(len(y)) < 0.5
    out: dict[str, float] = {}
    cat = spec.categorical_mask
    for j, name in enumerate(spec.names):
        x = X[:, j]
        missing = np.isnan(x)
        if cat[j]:
            codes = np.where(missing, -1, x).astype(np.int64) + 1
        else:
            ok = x[~missing]
            if len(ok) == 0:
                continue
            edges = np.unique(np.quantile(ok, np.linspace(0, 1, bins + 1)[1:-1]))
            codes = np.where(missing, 0, np.searchsorted(edges, x, side="right") + 1)
        k = int(codes.max()) + 1
        score = np.empty(len(y))
        prior = y.mean()
        for a in (fold, ~fold):  # rates from one half score the other half
            pos = np.bincount(codes[a], weights=y[a], minlength=k)
            cnt = np.bincount(codes[a], minlength=k)
            rate = (pos + prior) / (cnt + 1.0)  # one pseudo-row at the prior for empty levels
            score[~a] = rate[codes[~a]]
        auc = float(roc_auc_score(y, score))
        out[name] = max(auc, 1.0 - auc)
    return out


def leakage_warnings(aucs: dict[str, float], threshold: float = LEAKAGE_AUC
                     ) -> list[dict[str, Any]]:
    """The attributes that alone predict the target with ROC-AUC >= ``threshold``."""
    return [{"attribute": a, "roc_auc": round(v, 4),
             "message": f"attribute {a!r} alone predicts the holding with ROC-AUC {v:.3f}: "
                        "it probably records the outcome (leakage); exclude it unless it is "
                        "known before the decision"}
            for a, v in sorted(aucs.items(), key=lambda kv: -kv[1]) if v >= threshold]
