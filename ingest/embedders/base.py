"""The embedder interface, safe (pickle-free) state serialisation and the helpers runners share.

An embedder takes its parameters in ``__init__``, learns its state in ``fit`` from the Arrow
record batches handed to it (:class:`~ingest.embedders.data.FitData`: the embed runner's
streamed scan of a table, or rows in memory) and maps a record batch to a
``FixedSizeListArray<float32>[dim_]`` in ``transform``. Its fitted state is plain numpy arrays
plus JSON, saved as an ``.npz`` (read back with ``allow_pickle=False``) in a store artifact
named after its content, ``<table>.<column>.embedder.<sha256 prefix>``: the store records its
sha256 and checks it on every read, and the library versions it was fitted with are stored
beside it and compared on load, so a customer added next month is embedded exactly like the
others.

The ``embed`` runner is :mod:`ingest.embedders.runner` (the driver: one commit per step) and
:mod:`ingest.embedders.partition` (one partition's work, a function of the partition and the
fitted state).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import io
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from vectorstore import ArtifactNotFound, Metric, TableInfo, VectorStore

from ..datamodel import META_EMBEDDERS
from ..progress import Progress as Progress  # re-exported: the embedders import it from here
from .errors import (
    DimensionConflictError,
    EmbeddingError,
    EmptyInputError,
    ModelIntegrityError,
    UnknownColumnError,
)

if TYPE_CHECKING:
    from .data import FitData

STATE_FORMAT = 1
_META_KEY = "__kindred_state__"


def library_versions(names: Sequence[str]) -> dict[str, str]:
    """Installed versions of the named distributions (``"missing"`` when absent)."""
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = "missing"
    return out


def to_vector_array(vectors: np.ndarray) -> pa.FixedSizeListArray:
    """A ``(n, d)`` array as an Arrow ``fixed_size_list<float32>[d]`` array (no copy if float32)."""
    v = np.ascontiguousarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise EmbeddingError(f"expected a 2-d array of vectors, got shape {v.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1])


def from_vector_array(arr: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    """A fixed-size-list vector column as a ``(n, dim)`` float32 array; null rows become zeros."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.list_(pa.float32(), dim))
    n = len(arr)
    if n == 0:
        return np.zeros((0, dim), np.float32)
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        out = np.zeros((n, dim), np.float32)
        filled = arr.filter(arr.is_valid())
        out[valid] = filled.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
        return out
    flat = arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return flat.reshape(n, dim)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


class Embedder(ABC):
    """Maps rows of a table to fixed-size float32 vectors (scikit-learn style).

    Subclasses set ``kind``, ``metric`` and ``version_libs`` (the distributions whose versions
    must match for the fitted state to be reused), implement :meth:`fit`, :meth:`transform`,
    :meth:`input_columns`, :meth:`get_params` and the state hooks.
    """

    kind: ClassVar[str] = ""
    metric: ClassVar[Metric] = Metric.COSINE
    version_libs: ClassVar[tuple[str, ...]] = ("numpy", "pyarrow")
    default_column: ClassVar[str] = ""

    dim_: int

    # ------------------------------------------------------------------ the interface
    @abstractmethod
    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (JSON-compatible)."""

    @abstractmethod
    def input_columns(self, info: TableInfo) -> list[str]:
        """Columns of the table that :meth:`transform` reads (checked against the schema)."""

    def fit(self, data: Any, table: str | None = None, *, batch_size: int = 65_536,
            key: str | None = None) -> Embedder:
        """Learn the state from ``data``; returns self.

        ``data``: the :class:`~ingest.embedders.data.FitData` the embed runner hands over,
        Arrow rows (a table, a record batch, a list of batches; ``key`` names their key
        column), or a store and a table name (``fit(store, table)``: the runner's scan)."""
        from .data import as_fit_data

        return self._fit(as_fit_data(data, table, batch_size=batch_size, key=key,
                                     related=self.related_tables()))

    @abstractmethod
    def _fit(self, data: FitData) -> Embedder:
        """Learn the state from the rows (and related tables) of ``data``."""

    def related_tables(self) -> list[str]:
        """Tables besides the embedded one whose rows :meth:`fit` reads (none by default)."""
        return []

    @abstractmethod
    def transform(self, batch: pa.RecordBatch) -> pa.FixedSizeListArray:
        """Vectors of the rows of ``batch`` (one row's vector never depends on the others)."""

    def prepare(self, store: VectorStore, table: str, keys: pa.Array | None) -> Any:
        """What :meth:`transform_rows` needs beyond the rows themselves, read once by the
        driver for the rows about to be computed (``keys``; None: every row). Nothing by
        default; the behaviour embedder reads those customers' events."""
        return None

    def transform_rows(self, batch: pa.RecordBatch, context: Any = None
                       ) -> pa.FixedSizeListArray:
        """Vectors of table rows (``batch`` holds :meth:`input_columns`), with the context
        :meth:`prepare` returned; :meth:`transform` by default."""
        return self.transform(batch)

    @property
    def model_name(self) -> str:
        """What the ``model`` field of the column metadata says."""
        return self.kind

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "dim_")

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Fitted state as (numeric arrays, JSON-compatible dict)."""
        return {}, {}

    def _load_state(self, arrays: dict[str, np.ndarray], info: dict[str, Any]) -> None:  # noqa: B027
        """Restore the state written by :meth:`_state` (nothing for stateless embedders)."""

    # ------------------------------------------------------------------ serialisation
    def to_bytes(self) -> bytes:
        """The fitted state as an ``.npz`` of plain arrays with a JSON header (no pickle)."""
        self._check_fitted()
        arrays, info = self._state()
        header = {
            "format": STATE_FORMAT, "kind": self.kind, "params": self.get_params(),
            "dim": int(self.dim_), "state": info, "versions": library_versions(self.version_libs),
        }
        for name, a in arrays.items():
            if np.asarray(a).dtype == object:
                raise EmbeddingError(f"state array {name!r} holds Python objects: cannot store it")
        buf = io.BytesIO()
        payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
        payload[_META_KEY] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), np.uint8)
        np.savez(buf, **payload)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, *, check_versions: bool = True,
                   what: str = "embedder state") -> Embedder:
        """Rebuild a fitted embedder from :meth:`to_bytes` output (any known kind).

        Every part is checked first (:func:`ingest.embedders.state.check_state`): a damaged
        or crafted state is one :class:`ModelIntegrityError` naming ``what``, never a
        traceback from the parser or an ``IndexError`` later.
        """
        from .state import check_state, embedder_class

        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:  # zipfile, numpy and OS errors on a damaged file
            raise ModelIntegrityError(f"{what} is not a readable npz file "
                                      f"({type(exc).__name__})") from None
        try:
            header = json.loads(arrays.pop(_META_KEY).tobytes().decode())
        except (KeyError, ValueError) as exc:
            raise ModelIntegrityError(f"{what} has no readable header") from exc
        if not isinstance(header, dict):
            raise ModelIntegrityError(f"{what} has no readable header")
        kind = header.get("kind")
        klass = embedder_class(kind, EMBEDDERS) if cls is Embedder else cls
        if klass is None or klass.kind != kind:
            raise ModelIntegrityError(f"{what} is of kind {kind!r}, expected "
                                      f"{cls.kind or 'a known kind'!r}")
        if header.get("format") != STATE_FORMAT:
            raise ModelIntegrityError(f"{what} has format {header.get('format')!r}, not "
                                      f"{STATE_FORMAT}")
        if check_versions:
            now = library_versions(klass.version_libs)
            saved = header.get("versions", {})
            saved = saved if isinstance(saved, dict) else {}
            diff = {k: (saved.get(k), v) for k, v in now.items() if saved.get(k) != v}
            if diff:
                detail = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in sorted(diff.items()))
                raise ModelIntegrityError(
                    f"the {kind} embedder state was fitted with other library versions ({detail}); "
                    "refit it, or load with check_versions=False to accept the difference")
        check_state(kind, header, arrays, what)
        try:
            emb = klass(**header["params"])
            emb.dim_ = int(header["dim"])
            emb._load_state(arrays, header["state"])
        except (EmbeddingError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelIntegrityError(f"{what} does not fit the {kind} embedder "
                                      f"({type(exc).__name__}: {exc})") from None
        return emb

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise EmbeddingError(f"the {self.kind} embedder is not fitted: call fit() first")


EMBEDDERS: dict[str, type[Embedder]] = {}


def register(cls: type[Embedder]) -> type[Embedder]:
    """Class decorator: make an embedder kind loadable by :meth:`Embedder.from_bytes`."""
    EMBEDDERS[cls.kind] = cls
    return cls


# ---------------------------------------------------------------------- checks shared by runners
def check_table(store: VectorStore, table: str, *, need_key: bool = True) -> TableInfo:
    """The table's info; EmptyInputError if it has no rows, EmbeddingError if it has no key."""
    info = store.table_info(table)
    if need_key and info.key is None:
        raise EmbeddingError(f"table {table!r} has no key column: vectors are written back by key")
    if store.count(table) == 0:
        raise EmptyInputError(f"table {table!r} has no rows: nothing to fit or embed")
    return info


def check_columns(info: TableInfo, columns: Sequence[str], what: str = "input") -> None:
    """UnknownColumnError naming the first column that is not in the table."""
    names = set(info.schema.names)
    for c in columns:
        if c not in names:
            raise UnknownColumnError(
                f"table {info.name!r} has no {what} column {c!r}; columns: "
                f"{', '.join(info.schema.names)}")


def check_target(info: TableInfo, column: str, dim: int, metric: Metric) -> bool:
    """True if ``column`` already exists as a matching vector column; error if it conflicts."""
    if column in info.vectors:
        vc = info.vectors[column]
        if vc.dim != dim or vc.metric != metric:
            raise DimensionConflictError(
                f"table {info.name!r} already has vector column {column!r} with dim {vc.dim}, "
                f"metric {vc.metric}; this embedder makes dim {dim}, metric {metric}: "
                "choose another column name or drop the column")
        return True
    if column in info.schema.names:
        raise DimensionConflictError(
            f"table {info.name!r} already has a column {column!r} of type "
            f"{info.schema.field(column).type} that is not a vector column")
    return False


def artifact_name(table: str, column: str) -> str:
    """The prefix of the state artifacts of ``table.column`` (their names end with the
    state's sha256 prefix; the table metadata names the current one)."""
    return f"{table}.{column}.embedder"


@dataclass
class EmbedResult:
    """What one :func:`embed` run did."""

    table: str
    column: str
    rows_embedded: int
    rows_skipped: int = 0
    dim: int = 0
    seconds: float = 0.0
    state_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    rows_written: int | None = None
    """Rows whose values or stamps were written (None: as many as embedded)."""
    mode: str = "all"
    """``all`` (every row computed), ``stale`` (only rows changed since) or ``fit``."""

    @property
    def message(self) -> str:
        written = self.rows_embedded if self.rows_written is None else self.rows_written
        if self.rows_embedded == 0 and written == 0:
            return (f"{self.table}.{self.column}: nothing to do, all {self.rows_skipped} rows are "
                    "up to date (nothing written)")
        if self.rows_embedded == 0:
            return (f"{self.table}.{self.column}: no vector changed; the stamps of {written} "
                    "rows were written")
        which = "new or changed rows" if self.mode == "stale" else "rows"
        return (f"{self.table}.{self.column}: embedded {self.rows_embedded} {which} "
                f"({self.rows_skipped} skipped: unchanged or no input) in {self.seconds:.1f}s")


class MeanAccumulator:
    """Streaming float64 sum of vectors, for the population mean recorded in the metadata."""

    def __init__(self, dim: int) -> None:
        self.sum = np.zeros(dim, np.float64)
        self.n = 0

    def add(self, vectors: np.ndarray) -> None:
        self.sum += vectors.sum(axis=0, dtype=np.float64)
        self.n += len(vectors)

    def add_mean(self, mean: list[float] | None, n: int) -> None:
        if mean is not None and n:
            self.sum += np.asarray(mean, np.float64) * n
            self.n += n

    @property
    def mean(self) -> list[float]:
        return (self.sum / max(self.n, 1)).tolist()


def metadata_entry(table: str, column: str, embedder: Embedder, artifact: str,
                   state_sha256: str, mean: list[float], extra: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """``metadata["embedders"][column]`` as docs/data-model.md describes."""
    entry = {
        "kind": embedder.kind, "model": embedder.model_name, "dim": int(embedder.dim_),
        "metric": str(embedder.metric), "params": embedder.get_params(),
        "state_artifact": artifact, "state_sha256": state_sha256,
        "versions": library_versions(embedder.version_libs),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mean": [float(x) for x in mean],
    }
    entry.update(extra or {})
    return entry


def save_state(store: VectorStore, table: str, column: str, embedder: Embedder
               ) -> tuple[str, str]:
    """Store the fitted state as a content-addressed artifact (before the commit that
    references it); returns its name and sha256."""
    data = embedder.to_bytes()
    name = store.save_artifact(artifact_name(table, column), data,
                               {"kind": embedder.kind, "table": table, "column": column,
                                "versions": library_versions(embedder.version_libs)})
    return name, hashlib.sha256(data).hexdigest()


def load_embedder(store: VectorStore, table: str, column: str, *,
                  check_versions: bool = True) -> Embedder:
    """The fitted embedder that wrote ``table.column`` (sha256, HMAC when
    ``KINDRED_ARTIFACT_KEY`` is set, versions and every array's shape checked); any kind, its
    module imported on demand. A missing, tampered or unreadable state is one
    :class:`ModelIntegrityError` naming it and how to rebuild it."""
    from vectorstore.errors import ArtifactCorrupt

    meta = store.table_info(table).metadata.get(META_EMBEDDERS, {}).get(column)
    if meta is None:
        raise EmbeddingError(f"table {table!r} has no embedder recorded for column {column!r}")
    kind = meta.get("kind") if isinstance(meta, dict) else None
    rebuild = f"re-run `kindred embed {kind or '<kind>'} --output {column}` to fit it again"
    name = meta.get("state_artifact") if isinstance(meta, dict) else None
    if not isinstance(name, str):
        raise ModelIntegrityError(f"the metadata of {table}.{column} names no state artifact; "
                                  f"{rebuild}")
    try:
        data, art = store.get_artifact(name)
    except ArtifactNotFound as exc:
        raise ModelIntegrityError(f"the fitted state {name!r} of {table}.{column} is missing "
                                  f"from the store; {rebuild}") from exc
    except ArtifactCorrupt as exc:
        raise ModelIntegrityError(f"the fitted state of {table}.{column}: {exc}; "
                                  f"{rebuild}") from None
    if art["sha256"] != meta.get("state_sha256"):
        raise ModelIntegrityError(
            f"the fitted state {name!r} of {table}.{column} has sha256 {art['sha256']}, but "
            f"the table metadata records {meta.get('state_sha256')}: refusing to use it; "
            f"{rebuild}")
    try:
        return Embedder.from_bytes(data, check_versions=check_versions,
                                   what=f"the fitted state {name!r} of {table}.{column}")
    except ModelIntegrityError as exc:
        raise ModelIntegrityError(f"{exc}; {rebuild}") from None



