"""Where a detector's features come from: one vector column, or selected numeric attributes.

Turns record batches into float matrices (vectors stay float32, attributes become float64),
with errors that name the table, column and customer key of a bad value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from typing import cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict

from ingest.datamodel import META_EMBEDDERS
from vectorstore import TableInfo, VectorStore, prefetch

from .errors import InvalidRiskInput, RiskError

RISK_COLUMNS = ("risk_score", "risk_percentile", "risk_flag", "risk_model")


class FeatureSource(BaseModel):
    """A vector column (``column``) or numeric attributes (``attributes``): exactly one."""

    model_config = ConfigDict(frozen=True)

    column: str | None = None
    attributes: tuple[str, ...] | None = None

    @property
    def columns(self) -> list[str]:
        return [self.column] if self.column else list(self.attributes or ())

    @property
    def feature_names(self) -> list[str] | None:
        """Attribute names, or None for a vector column (features are its dimensions)."""
        return list(self.attributes) if self.attributes else None

    def describe(self) -> str:
        return f"vector column {self.column!r}" if self.column else f"attributes {self.columns}"

    def matrix(self, batch: pa.RecordBatch | pa.Table, table: str, key: str | None = None) -> np.ndarray:
        """The feature matrix of ``batch``; InvalidRiskInput on nulls or NaN/inf values."""
        keys = batch.column(key) if key and key in batch.schema.names else None

        def where(mask: np.ndarray) -> str:
            row = int(np.flatnonzero(mask)[0])
            return f"{key}={keys[row].as_py()!r}" if keys is not None else f"row {row}"

        if self.column:
            arr = batch.column(self.column)
            if isinstance(arr, pa.ChunkedArray):
                arr = arr.combine_chunks()
            if arr.null_count:
                raise InvalidRiskInput(f"table {table!r}, vector column {self.column!r}: "
                                       f"{where(arr.is_null().to_numpy(zero_copy_only=False))} "
                                       "has no vector (null); embed it before scoring")
            dim = arr.type.list_size
            X = arr.flatten().to_numpy().reshape(-1, dim)
            bad = ~np.isfinite(X).all(axis=1)
            if bad.any():
                raise InvalidRiskInput(f"table {table!r}, vector column {self.column!r}: "
                                       f"{where(bad)} has a NaN or infinite component")
            return X
        cols = []
        for name in self.columns:
            arr = batch.column(name)
            if arr.null_count:
                nulls = pc.is_null(arr).to_numpy(zero_copy_only=False)
                raise InvalidRiskInput(f"table {table!r}, attribute {name!r}: {where(nulls)} "
                                       "is null; fill or drop it before scoring")
            values = pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False)
            bad = ~np.isfinite(values)
            if bad.any():
                raise InvalidRiskInput(f"table {table!r}, attribute {name!r}: {where(bad)} is "
                                       "NaN or infinite")
            cols.append(values)
        return np.column_stack(cols)


_FALLBACK_ORDER = ("vec_tabular", "vec_combined", "vec_behavior", "vec_text")


def _preserves_magnitude(info: TableInfo, name: str) -> bool:
    return str(info.vectors[name].metric) == "l2"


def _tabular_raw(info: TableInfo, name: str) -> bool:
    meta = (info.metadata.get(META_EMBEDDERS) or {}).get(name) or {}
    return meta.get("kind") == "tabular" and (meta.get("params") or {}).get("normalize") is False


def choose_column(info: TableInfo) -> tuple[str, str]:
    """The vector column risk scores when none is named, and why (one sentence).

    Anomaly detectors need each customer's distance from the centre of the population, so a
    column that keeps the vectors' length (metric l2) comes first: the tabular embedder's
    ``vec_tabular_raw`` companion, then other tabular columns written without
    normalisation, then other l2 columns (by name). Without one, the unit-length column
    matching would use is scored, with a caveat: unit length discards that distance."""
    if not info.vectors:
        raise RiskError(f"table {info.name!r} has no vector column: run `kindred embed "
                        "tabular` first, or score numeric attributes")
    kept = sorted(n for n in info.vectors if _preserves_magnitude(info, n))
    kept.sort(key=lambda n: (n != "vec_tabular_raw", not _tabular_raw(info, n)))
    if kept:
        name = kept[0]
        if _tabular_raw(info, name):
            return name, (f"{name}: the table's attributes as z-scores, not unit-normalised, "
                          "so each customer's distance from the centre is kept")
        return name, f"{name}: an l2 column, whose vectors keep their length"
    names = list(info.vectors)
    name = names[0] if len(names) == 1 else next((n for n in _FALLBACK_ORDER if n in names), "")
    if not name:
        raise RiskError(f"table {info.name!r} has several vector columns {sorted(names)} and "
                        "none keeps magnitudes: name one with --column")
    return name, unit_length_caveat(info, name)


def unit_length_caveat(info: TableInfo, name: str) -> str:
    return (f"{name} is unit-normalised ({info.vectors[name].metric}): a customer's distance "
            "from the centre, which anomaly detectors rely on, is lost; `kindred embed "
            "tabular` writes vec_tabular_raw, which keeps it")


def resolve_source(info: TableInfo, column: str | None = None,
                   attributes: list[str] | tuple[str, ...] | None = None) -> FeatureSource:
    """Check the requested features against the table's schema; default: the column
    :func:`choose_column` picks."""
    if column and attributes:
        raise RiskError("give a vector column or attributes, not both")
    if attributes:
        info.check_columns(list(attributes))
        for name in attributes:
            t = info.schema.field(name).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
                raise InvalidRiskInput(f"table {info.name!r}, attribute {name!r} is {t}: "
                                       "only numeric or boolean attributes can be scored")
            if name in RISK_COLUMNS or name.startswith("risk_"):
                raise InvalidRiskInput(f"attribute {name!r} is a risk output column")
        return FeatureSource(attributes=tuple(attributes))
    if column is None:
        return FeatureSource(column=choose_column(info)[0])
    try:
        vec = info.vector(column)
    except Exception as exc:
        raise RiskError(str(exc)) from None
    return FeatureSource(column=vec.name)


def source_note(info: TableInfo, source: FeatureSource, named: bool) -> str | None:
    """What the run says about its features: why this column when it was not named, and the
    unit-length caveat whenever the column discards magnitudes."""
    if source.column is None:
        return None
    if not named:
        reason = choose_column(info)[1]
        return reason if reason.startswith(f"{source.column} is unit-normalised") else \
            f"risk scored {reason}"
    if not _preserves_magnitude(info, source.column):
        return unit_length_caveat(info, source.column)
    return None


class TabularFeatures(BaseModel):
    """What a tabular embedder made a vector column from."""

    numeric: list[str]
    categorical: list[str]
    feature_names: list[str] | None
    """One name per vector dimension (``age``, ``income__missing``, ``region=north``); None
    when the column is PCA-reduced (its dimensions are not attributes)."""

    @property
    def attributes(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def tabular_features(store: VectorStore, table: str, column: str | None
                     ) -> TabularFeatures | None:
    """The source attributes of a column written by the tabular embedder (None for other
    columns), read from its recorded, checksum-verified fitted state."""
    if column is None:
        return None
    meta = (store.table_info(table).metadata.get(META_EMBEDDERS) or {}).get(column) or {}
    if meta.get("kind") != "tabular":
        return None
    from ingest.embedders import load_embedder
    from ingest.embedders.tabular import TabularEmbedder

    emb = load_embedder(store, table, column, check_versions=False)
    if not isinstance(emb, TabularEmbedder):
        return None
    names = list(emb.feature_names_)
    return TabularFeatures(numeric=list(emb.numeric_), categorical=list(emb.categorical_),
                           feature_names=names if len(names) == emb.dim_ else None)


def table_key(info: TableInfo) -> str:
    if info.key is None:
        raise RiskError(f"table {info.name!r} has no key column: scores are written back by key")
    return info.key


def iter_matrices(store: VectorStore, table: str, source: FeatureSource, key: str, *,
                  extra: tuple[str, ...] = (), batch_size: int = 65_536,
                  ) -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
    """Stream (batch with key and extra columns, feature matrix) over the whole table.

    The next batches are read and converted in a background thread while the caller works
    on this one (:func:`vectorstore.prefetch`)."""
    cols = list(dict.fromkeys([key, *extra, *source.columns]))

    def read() -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        # closed explicitly: an error in matrix() must not leave the scan (and, on
        # PostgreSQL, its transaction) open for as long as the traceback lives
        scan_gen = cast(Generator[pa.RecordBatch, None, None],  # every store scan is a generator
                        store.scan(table, columns=cols, batch_size=batch_size))
        with contextlib.closing(scan_gen) as scan:
            for batch in scan:
                if batch.num_rows:
                    yield batch, source.matrix(batch, table, key)

    yield from prefetch(read())


DEFAULT_FIT_ROWS = 100_000
"""Without ``fit_sample``, a larger table is fitted on a seeded sample of this many rows.

A fitted detector's state (IForest's trees of 256 rows each, PCA's components, each member's
score spread, the percentiles of the fitted scores) is an estimate whose sampling error at
this size is far below the differences between customers, while the fit's cost (scoring
every fit row, KNN's against its own sample) grows with the rows. ``fit_sample=1.0`` fits on
every row."""


def default_fit_sample(n: int, fit_sample: int | float | None) -> int | float | None:
    """``fit_sample`` as given, or :data:`DEFAULT_FIT_ROWS` when none was given and the
    table (of ``n`` rows) is larger."""
    if fit_sample is None and n > DEFAULT_FIT_ROWS:
        return DEFAULT_FIT_ROWS
    return fit_sample


def fit_matrix(store: VectorStore, table: str, source: FeatureSource, key: str, *,
               fit_sample: int | float | None = None, seed: int = 0,
               batch_size: int = 65_536, notes: list[str] | None = None) -> np.ndarray:
    """The rows to fit on: a seeded sample of ``fit_sample`` rows (an int) or of that share of
    the rows (a float in (0, 1]); by default every row up to :data:`DEFAULT_FIT_ROWS`, else a
    seeded sample of that many, said in ``notes``. Only the chosen rows are kept in memory."""
    n = store.count(table)
    if n == 0:
        raise InvalidRiskInput(f"table {table!r} is empty: nothing to fit on")
    given, fit_sample = fit_sample, default_fit_sample(n, fit_sample)
    if given is None and fit_sample is not None and notes is not None:
        notes.append(f"fitted on a seeded sample of {fit_sample:,} of {n:,} rows (the default "
                     "for a large table; give fit_sample, --fit-sample, to choose)")
    if fit_sample is not None:
        m = round(fit_sample * n) if isinstance(fit_sample, float) else int(fit_sample)
        if isinstance(fit_sample, float) and not 0 < fit_sample <= 1:
            raise RiskError(f"fit_sample as a share must be in (0, 1], got {fit_sample}")
        if m < 2:
            raise InvalidRiskInput(f"fit_sample={fit_sample!r} leaves {m} rows: need at least 2")
        if m < n:  # random access to the chosen rows only
            rows = store.take(table, np.random.default_rng(seed).choice(n, m, replace=False),
                              columns=list(dict.fromkeys([key, *source.columns])))
            return _checked_fit_rows(source.matrix(rows, table, key), source, table)
    parts = [X.copy() for _batch, X in iter_matrices(store, table, source, key,
                                                     batch_size=batch_size)]
    return _checked_fit_rows(np.concatenate(parts) if parts else np.empty((0, 0)), source, table)


def _checked_fit_rows(Xf: np.ndarray, source: FeatureSource, table: str) -> np.ndarray:
    if source.attributes:
        const = [a for a, lo, hi in zip(source.attributes, Xf.min(axis=0), Xf.max(axis=0),
                                        strict=True) if lo == hi]
        if const:
            raise InvalidRiskInput(f"table {table!r}: attribute(s) {const} are constant over the "
                                   f"{Xf.shape[0]:,} fit rows and cannot separate customers; "
                                   "leave them out")
    return Xf
