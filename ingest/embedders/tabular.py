"""Tabular embedder: robustly standardised numbers, one-hot categories, optional PCA.

Fitting is one streamed pass over the table (``store.scan`` batches):

* numeric columns (ints, floats, bools, timestamps as days): ``scaling="robust"`` centres on
  the median and divides by IQR/1.349 (a standard deviation for normal data), computed on a
  **seeded bottom-k sample**: each row gets a priority from a seeded hash of its key and the
  ``sample_size`` rows of lowest priority are kept. The sample does not depend on scan order or
  batch size and is exact when the table has at most ``sample_size`` rows. ``scaling="zscore"``
  uses the exact mean and standard deviation from mergeable sums. Scaled values are clipped to
  ``[-clip, clip]``; a missing value becomes 0 (the centre) and, for columns that had missing
  values when fitted, a 0/1 missing-indicator feature is added.
* which columns are numbers and which are categories is decided by
  :func:`ingest.column_kinds.column_kind` (``types={"col": "category"}`` declares it; an integer
  code such as ``customer_type`` 1..41 is a category, see that module);
* string columns (and integer codes) are one-hot encoded from exact, mergeable level counts;
  levels seen in fewer than ``min_frequency`` of the rows (or beyond ``max_levels`` levels)
  share one ``__other__`` feature, nulls one ``__missing__`` feature. A column with more than
  ``max_tracked`` distinct values (free text, ids) is left out unless it was named in
  ``include``; what was left out and why is recorded in the state.
* ``pca=k`` projects onto the first k principal components of the sample's features.
* ``onehot_scale`` is the value of a set one-hot feature (1 by default). At ``1/sqrt(2)`` two
  rows with different levels of a column are at distance 1, as two rows one standard deviation
  apart on a z-scored number: every source column then weighs alike in a distance, however
  many levels it has.
* ``clip=None`` keeps scaled values unclipped, and ``normalize=False`` keeps the vectors'
  length (metric l2).

:func:`embed_tabular` writes the column matching uses (robust-scaled, clipped, unit length,
metric cosine) and, by default, a magnitude-preserving companion ``<column>_raw`` (z-scored,
unclipped, not normalised, one-hot at ``1/sqrt(2)``, metric l2) that risk scoring uses:
anomaly detectors need each customer's distance from the centre, which unit length discards.

The fitted state is medians/scales (or means/stds), kept category levels and the PCA matrix:
a few KB, plus ``4 * k * n_features`` bytes for PCA. Only the sample (``sample_size`` rows of
the selected columns) is held while fitting; transforming is row by row, so embedding a
1,000,000-row table streams with memory bounded by the batch size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from vectorstore import Metric, TableInfo, VectorStore, check_name

from ..column_kinds import (
    column_kind,
    count_levels_in,
    is_code_candidate,
    numeric_values,
    parse_kinds,
)
from ..freshness import AGING_FEATURES, is_derived
from .base import (
    Embedder,
    EmbedResult,
    Progress,
    check_columns,
    check_table,
    check_target,
    l2_normalize,
    register,
    to_vector_array,
)
from .data import FitData
from .errors import EmbeddingError, EmptyInputError
from .runner import embed_columns

RAW_SUFFIX = "_raw"
RAW_PARAMS: dict[str, Any] = {"scaling": "zscore", "clip": None, "normalize": False,
                              "onehot_scale": 1 / np.sqrt(2), "pca": None}
"""The companion column's parameters: z-scores (the scale anomaly-detection benchmarks and
PyOD's own examples use) without clipping (a clip merges the tail, where anomalies are),
not unit-normalised (metric l2), one-hot blocks at ``1/sqrt(2)`` and no PCA."""
OTHER = "__other__"
MISSING = "__missing__"




def _strings(arr: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return pc.cast(arr, pa.string())


def key_priority(keys: pa.Array, seed: int) -> np.ndarray:
    """A seeded uint64 hash of each key: the same row gets the same priority in every scan."""
    values = keys.to_numpy(zero_copy_only=False)
    hash_key = f"{seed:016d}"[-16:]
    return pd.util.hash_array(values.astype(object) if values.dtype.kind == "O" else values,
                              hash_key=hash_key, categorize=False)


@register
class TabularEmbedder(Embedder):
    """Numeric + categorical columns -> standardised, one-hot, optionally PCA-reduced vectors."""

    kind: ClassVar[str] = "tabular"
    version_libs: ClassVar[tuple[str, ...]] = ("numpy", "pyarrow", "pandas")
    default_column: ClassVar[str] = "vec_tabular"

    def __init__(self, include: Sequence[str] | None = None, exclude: Sequence[str] = (),
                 *, scaling: str = "robust", clip: float | None = 5.0,
                 min_frequency: float = 0.01, max_levels: int = 50, max_tracked: int = 10_000,
                 pca: int | None = None, sample_size: int = 100_000, seed: int = 0,
                 normalize: bool = True, onehot_scale: float = 1.0,
                 types: Mapping[str, str] | None = None) -> None:
        try:
            self.types = parse_kinds(types)
        except ValueError as exc:
            raise EmbeddingError(str(exc)) from None
        self._levels: dict[str, int] = {}
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude)
        self.scaling = scaling
        self.clip = clip
        self.min_frequency = min_frequency
        self.max_levels = max_levels
        self.max_tracked = max_tracked
        self.pca = pca
        self.sample_size = sample_size
        self.seed = seed
        self.normalize = normalize
        self.onehot_scale = float(onehot_scale)
        if scaling not in ("robust", "zscore"):
            raise EmbeddingError(f"scaling must be 'robust' or 'zscore', got {scaling!r}")
        if pca is not None and (not isinstance(pca, int) or pca <= 0):
            raise EmbeddingError(f"pca must be a positive number of dimensions, got {pca!r}")
        if clip is not None and not clip > 0:
            raise EmbeddingError(f"clip must be positive or None, got {clip!r}")
        if not (np.isfinite(self.onehot_scale) and self.onehot_scale > 0):
            raise EmbeddingError(f"onehot_scale must be positive, got {onehot_scale!r}")
        self.metric = Metric.COSINE if normalize else Metric.L2  # type: ignore[misc]

    def get_params(self) -> dict[str, Any]:
        return {"include": self.include, "exclude": self.exclude, "scaling": self.scaling,
                "clip": self.clip, "min_frequency": self.min_frequency,
                "max_levels": self.max_levels, "max_tracked": self.max_tracked, "pca": self.pca,
                "sample_size": self.sample_size, "seed": self.seed, "normalize": self.normalize,
                "onehot_scale": self.onehot_scale, "types": self.types}

    # ------------------------------------------------------------------ column selection
    def select_columns(self, info: TableInfo) -> tuple[list[str], list[str]]:
        """(numeric, categorical) columns this embedder uses on ``info``'s table."""
        check_columns(info, self.include or [], "include")
        check_columns(info, self.exclude, "exclude")
        # derived and bookkeeping columns are never inputs; features that age with as_of
        # only when named (a column reading them is re-embedded in full as as_of moves)
        names = self.include if self.include is not None else [
            f.name for f in info.schema
            if f.name != info.key and f.name not in info.vectors and not is_derived(f.name)
            and f.name not in AGING_FEATURES]
        numeric, categorical = [], []
        for n in names:
            if n in self.exclude:
                continue
            t = info.schema.field(n).type
            try:
                kind = column_kind(n, t, declared=self.types.get(n),
                                   n_distinct=self._levels.get(n))
            except ValueError as exc:
                raise EmbeddingError(f"table {info.name!r}: {exc}") from None
            if kind == "numeric":
                numeric.append(n)
            elif kind == "category":
                categorical.append(n)
            elif self.include is not None:
                raise EmbeddingError(f"table {info.name!r}: column {n!r} has type {t}, which the "
                                     "tabular embedder cannot use (numbers, timestamps, strings)")
        if not numeric and not categorical:
            raise EmptyInputError(f"table {info.name!r}: no numeric or string column to embed")
        return numeric, categorical

    def input_columns(self, info: TableInfo) -> list[str]:
        if self.is_fitted:
            return [*self.numeric_, *self.categorical_]
        num, cat = self.select_columns(info)
        return [*num, *cat]

    # ------------------------------------------------------------------ fit
    def _fit(self, data: FitData) -> TabularEmbedder:
        info, table = data.info, data.info.name
        candidates = [f.name for f in info.schema if f.name not in self.types
                      and f.name not in self.exclude and is_code_candidate(f.name, f.type)]
        self._levels = count_levels_in(data.batches(candidates, 262_144), candidates) \
            if candidates else {}
        numeric, categorical = self.select_columns(info)
        key = info.key
        cols = [*numeric, *categorical]
        sample: pa.Table | None = None
        prio_sample = np.zeros(0, np.uint64)
        n_rows = 0
        nulls = dict.fromkeys(numeric, 0)
        sums = {c: np.zeros(2) for c in numeric}
        shift: dict[str, float] = {}  # sums of (x - first value seen): no cancellation in sd
        counts: dict[str, dict[str | None, int]] = {c: {} for c in categorical}
        too_many: set[str] = set()
        for b in data.batches([key, *cols] if key else cols):
            n_rows += b.num_rows
            for c in numeric:
                x = numeric_values(b.column(c))
                ok = ~np.isnan(x)
                nulls[c] += int((~ok).sum())
                if c not in shift and ok.any():
                    shift[c] = float(x[ok][0])
                d = x[ok] - shift.get(c, 0.0)
                sums[c] += (d.sum(), np.square(d).sum())
            for c in categorical:
                if c in too_many:
                    continue
                vc = pc.value_counts(_strings(b.column(c)))
                d = counts[c]
                for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(),
                                strict=True):
                    d[v] = d.get(v, 0) + n
                if len(d) > self.max_tracked:
                    too_many.add(c)
                    counts[c] = {}
            if self.scaling == "robust" or self.pca:
                prio = key_priority(b.column(key), self.seed) if key else \
                    np.arange(n_rows - b.num_rows, n_rows, dtype=np.uint64)
                part = pa.Table.from_batches([b.select(cols)])
                sample = part if sample is None else pa.concat_tables([sample, part])
                prio_sample = np.concatenate([prio_sample, prio])
                if len(prio_sample) > 2 * self.sample_size:
                    sample, prio_sample = self._shrink(sample, prio_sample)
        if n_rows == 0:
            raise EmptyInputError(f"table {table!r} has no rows: nothing to fit")
        if sample is not None:
            sample, prio_sample = self._shrink(sample, prio_sample)
        dropped = {}
        for c in list(categorical):
            if c in too_many and (self.include is None or c not in self.include):
                dropped[c] = f"more than {self.max_tracked} distinct values"
                categorical.remove(c)
            elif c in too_many:
                counts[c] = {}  # named explicitly: everything is __other__ but kept
        self.numeric_ = numeric
        self.categorical_ = categorical
        self.dropped_ = dropped
        self.n_rows_fit_ = n_rows
        center, scale = [], []
        for c in numeric:
            n_ok = n_rows - nulls[c]
            if self.scaling == "zscore":
                mu = sums[c][0] / max(n_ok, 1)
                sd = np.sqrt(max(sums[c][1] / max(n_ok, 1) - mu * mu, 0.0))
                center.append(mu + shift.get(c, 0.0))
                scale.append(sd)
            else:
                x = numeric_values(sample.column(c).combine_chunks()) if sample is not None else \
                    np.zeros(0)
                x = x[~np.isnan(x)]
                if len(x):
                    q1, med, q3 = np.percentile(x, [25, 50, 75])
                    s = (q3 - q1) / 1.349
                    if s <= 0:
                        s = float(np.std(x))
                else:
                    med, s = 0.0, 1.0
                center.append(med)
                scale.append(s)
        self.center_ = np.asarray(center, np.float64)
        self.scale_ = np.where(np.asarray(scale, np.float64) > 0, scale, 1.0)
        self.has_missing_ = np.asarray([nulls[c] > 0 for c in numeric], bool)
        self.levels_: dict[str, list[str]] = {}
        for c in categorical:
            d = counts[c]
            n_missing = d.pop(None, 0)
            ordered = sorted(cast("dict[str, int]", d).items(),  # None popped above
                             key=lambda kv: (-kv[1], kv[0]))
            keep = [v for v, n in ordered if n >= self.min_frequency * n_rows][: self.max_levels]
            levels = sorted(keep)
            if len(keep) < len(ordered) or not ordered:
                levels.append(OTHER)
            if n_missing:
                levels.append(MISSING)
            self.levels_[c] = levels
        self.n_features_ = (len(numeric) + int(self.has_missing_.sum())
                            + sum(len(v) for v in self.levels_.values()))
        self.components_ = np.zeros((0, self.n_features_), np.float32)
        self.pca_mean_ = np.zeros(self.n_features_, np.float32)
        if self.pca:
            if sample is None or sample.num_rows < 2:
                raise EmptyInputError(f"table {table!r}: PCA needs at least 2 rows")
            feats = self._features(None, sample)
            k = min(self.pca, feats.shape[1], feats.shape[0])
            mean = feats.mean(axis=0)
            _, _, vt = np.linalg.svd(feats - mean, full_matrices=False)
            vt = vt[:k]
            signs = np.sign(vt[np.arange(k), np.abs(vt).argmax(axis=1)])
            self.components_ = (vt * signs[:, None]).astype(np.float32)
            self.pca_mean_ = mean.astype(np.float32)
            self.dim_ = k
        else:
            self.dim_ = self.n_features_
        return self

    def _shrink(self, sample: pa.Table, prio: np.ndarray) -> tuple[pa.Table, np.ndarray]:
        if len(prio) <= self.sample_size:
            return sample, prio
        idx = np.argpartition(prio, self.sample_size - 1)[: self.sample_size]
        idx.sort()
        return sample.take(pa.array(idx)), prio[idx]

    # ------------------------------------------------------------------ transform
    def _features(self, batch: pa.RecordBatch | None, table: pa.Table | None = None
                  ) -> np.ndarray:
        src = table if table is not None else batch
        assert src is not None  # callers pass one of the two
        n = src.num_rows
        out = np.zeros((n, self.n_features_), np.float64)
        j = 0
        for i, c in enumerate(self.numeric_):
            col = src.column(c)
            x = numeric_values(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
            missing = np.isnan(x)
            z = (x - self.center_[i]) / self.scale_[i]
            if self.clip is not None:
                z = np.clip(z, -self.clip, self.clip)
            z[missing] = 0.0
            out[:, j] = z
            j += 1
            if self.has_missing_[i]:
                out[:, j] = missing
                j += 1
        for c in self.categorical_:
            levels = self.levels_[c]
            col = src.column(c)
            values = _strings(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
            idx = pc.index_in(values, value_set=pa.array(levels, pa.string()))
            pos = idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            is_null = values.is_null().to_numpy(zero_copy_only=False)
            if MISSING in levels:
                pos[is_null] = levels.index(MISSING)
            else:
                pos[is_null] = -2  # never seen missing when fitted: all zeros
            unseen = pos == -1
            if OTHER in levels:
                pos[unseen] = levels.index(OTHER)
            rows = np.nonzero(pos >= 0)[0]
            out[rows, j + pos[rows]] = self.onehot_scale
            j += len(levels)
        return out

    def transform(self, batch: pa.RecordBatch) -> pa.FixedSizeListArray:
        self._check_fitted()
        check_columns(TableInfo("batch", batch.schema), [*self.numeric_, *self.categorical_])
        x = self._features(batch)
        if self.pca:
            x = (x - self.pca_mean_.astype(np.float64)) @ self.components_.T.astype(np.float64)
        if self.normalize:
            x = l2_normalize(x)
        return to_vector_array(x)

    # ------------------------------------------------------------------ state
    @property
    def feature_names_(self) -> list[str]:
        names = []
        for i, c in enumerate(self.numeric_):
            names.append(c)
            if self.has_missing_[i]:
                names.append(f"{c}__missing")
        for c in self.categorical_:
            names += [f"{c}={v}" for v in self.levels_[c]]
        return names

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {"center": self.center_, "scale": self.scale_, "has_missing": self.has_missing_,
                  "components": self.components_, "pca_mean": self.pca_mean_}
        info = {"numeric": self.numeric_, "categorical": self.categorical_,
                "levels": self.levels_, "dropped": self.dropped_, "n_rows_fit": self.n_rows_fit_,
                "n_features": self.n_features_}
        return arrays, info

    def _load_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        self.center_ = arrays["center"]
        self.scale_ = arrays["scale"]
        self.has_missing_ = arrays["has_missing"].astype(bool)
        self.components_ = arrays["components"]
        self.pca_mean_ = arrays["pca_mean"]
        self.numeric_ = list(info["numeric"])
        self.categorical_ = list(info["categorical"])
        self.levels_ = {k: list(v) for k, v in info["levels"].items()}
        self.dropped_ = dict(info["dropped"])
        self.n_rows_fit_ = int(info["n_rows_fit"])
        self.n_features_ = int(info["n_features"])


def embed_tabular(store: VectorStore, table: str, *, include: Sequence[str] | None = None,
                  exclude: Sequence[str] = (), pca: int | None = None,
                  column: str | None = None, raw: bool = True,
                  types: Mapping[str, str] | None = None, batch_size: int = 16_384,
                  progress: Progress | None = None, runner: Any = None
                  ) -> tuple[EmbedResult, EmbedResult | None]:
    """Write the tabular column (default ``vec_tabular``) and, with ``raw``, its
    magnitude-preserving companion ``<column>_raw`` (see the module docstring).

    Both embedders are fitted and both target columns checked before anything is written,
    so a name or dimension conflict fails with nothing written; both columns are then written
    in one commit by :func:`~ingest.embedders.base.embed_columns`, so they appear together or
    not at all. Returns both columns' results (the second None without ``raw``)."""
    main = TabularEmbedder(include, exclude, pca=pca, types=types)
    column = column or main.default_column
    plan: list[tuple[TabularEmbedder, str]] = [(main, column)]
    if raw:
        plan.append((TabularEmbedder(include, exclude, types=types, **RAW_PARAMS),
                     column + RAW_SUFFIX))
    info = check_table(store, table)
    for emb, name in plan:
        check_name(name, "vector column name")
        emb.fit(FitData.from_store(store, table, batch_size=max(batch_size, 65_536)))
        if pca is not None and emb is main and emb.dim_ < pca:
            raise EmbeddingError(
                f"--dim {pca} is more than this data allows: the tabular embedder can make at "
                f"most {emb.dim_} dimensions here (from its features); give --dim {emb.dim_} "
                "or less")
        check_target(info, name, int(emb.dim_), emb.metric)
    results = embed_columns(store, table, plan, fit=False, batch_size=batch_size,
                            progress=progress, runner=runner)
    return results[0], (results[1] if raw else None)
