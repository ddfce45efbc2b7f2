"""The embedder interface, safe (pickle-free) state serialisation and the ``embed`` runner.

An embedder takes its parameters in ``__init__``, learns its state in ``fit`` from a streamed
pass over a table (``store.scan`` batches) and maps a record batch to a
``FixedSizeListArray<float32>[dim_]`` in ``transform``. Its fitted state is plain numpy arrays
plus JSON, saved as an ``.npz`` (read back with ``allow_pickle=False``) in a store artifact
named after its content, ``<table>.<column>.embedder.<sha256 prefix>``: the store records its
sha256 and checks it on every read, and the library versions it was fitted with are stored
beside it and compared on load, so a customer added next month is embedded exactly like the
others.

:func:`embed` fits (or reuses) an embedder and writes, in ONE commit of a staged step
(``store.transaction``), the vector column (and auxiliary columns), its vectors partition by
partition, and ``metadata["embedders"][column]`` with the state artifact's name (the artifact
itself is stored just before that commit). A vector column is registered if and only if its
data is committed; a failure or a killed process writes nothing to the table (at most an
unreferenced artifact, swept by ``optimize``). Every input problem (unknown column, empty
table, dimension conflict, missing model...) is raised before anything is written. Memory is
bounded by one partition's new vectors plus the fitted state (an embedder with an
incremental plan keeps only the changed rows' vectors of a partition).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import io
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from vectorstore import (
    ArtifactNotFound,
    Metric,
    Partition,
    TableInfo,
    Transaction,
    VectorColumn,
    VectorStore,
)

from ..runner import PartitionContext, Runner, runner_for
from .errors import (
    DimensionConflictError,
    EmbeddingError,
    EmptyInputError,
    ModelIntegrityError,
    UnknownColumnError,
)

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
    stateful: ClassVar[bool] = False
    """Loading it is costly (a model): a distributed runner keeps one per worker."""

    dim_: int

    # ------------------------------------------------------------------ the interface
    @abstractmethod
    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (JSON-compatible)."""

    @abstractmethod
    def input_columns(self, info: TableInfo) -> list[str]:
        """Columns of the table that :meth:`transform` reads (checked against the schema)."""

    @abstractmethod
    def fit(self, store: VectorStore, table: str, *, batch_size: int = 65_536) -> Embedder:
        """Learn the state from a streamed pass over ``table``; returns self."""

    @abstractmethod
    def transform(self, batch: pa.RecordBatch) -> pa.FixedSizeListArray:
        """Vectors of the rows of ``batch`` (one row's vector never depends on the others)."""

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
        payload = {k: np.asarray(v) for k, v in arrays.items()}
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

    @property
    def message(self) -> str:
        if self.rows_embedded == 0:
            return (f"{self.table}.{self.column}: nothing to do, all {self.rows_skipped} rows are "
                    "up to date (nothing written)")
        return (f"{self.table}.{self.column}: embedded {self.rows_embedded} rows "
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

    meta = store.table_info(table).metadata.get("embedders", {}).get(column)
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


Progress = Callable[[int, "int | None"], None]
"""``progress(rows_done, total)``, called after each scanned batch (total None if unknown)."""


# ---------------------------------------------------------------------- the runner
def embed(store: VectorStore, table: str, embedder: Embedder, column: str | None = None, *,
          fit: bool = True, batch_size: int = 16_384, progress: Progress | None = None,
          runner: Runner | str | None = None) -> EmbedResult:
    """Fit ``embedder`` on ``table`` (unless ``fit=False``), write its vectors into ``column``.

    The vector column is added if missing (an existing one must have the same dimension and
    metric). Vectors are staged partition by partition and committed with the state
    artifact's name in the column metadata as one step (see the module docstring).
    Embedders with an incremental plan (the text embedder) only rewrite changed rows.
    ``progress(rows_done, total)`` is called after each batch (rows scanned, skipped ones
    included, out of the table's row count). If anything fails part-way (including an
    exception raised by ``progress``), the table is left exactly as it was.
    """
    column = column or embedder.default_column or f"vec_{embedder.kind}"
    return embed_columns(store, table, [(embedder, column)], fit=fit, batch_size=batch_size,
                         progress=progress, runner=runner)[0]


def embed_columns(store: VectorStore, table: str, targets: Sequence[tuple[Embedder, str]], *,
                  fit: bool = True, batch_size: int = 16_384, progress: Progress | None = None,
                  runner: Runner | str | None = None) -> list[EmbedResult]:
    """:func:`embed` for several (embedder, column) pairs over one scan, in ONE commit: the
    columns appear together or not at all (e.g. a column and its magnitude-preserving
    companion). An embedder with an incremental plan must be the only target."""
    from vectorstore import check_name

    t0 = time.perf_counter()
    if not targets:
        raise EmbeddingError("nothing to embed: no (embedder, column) given")
    if len(targets) > 1 and any(hasattr(e, "plan") for e, _ in targets):
        raise EmbeddingError("an embedder with an incremental plan is embedded on its own")
    names = [c for _, c in targets]
    if len(set(names)) != len(names):
        raise EmbeddingError(f"the same column is named twice: {names}")
    info = check_table(store, table)
    for emb, column in targets:
        check_name(column, "vector column name")
        check_columns(info, emb.input_columns(info))
        if fit:
            emb.fit(store, table, batch_size=max(batch_size, 65_536))
        else:
            emb._check_fitted()
    results = []
    with store.transaction(table) as tx:
        plans = []
        for emb, column in targets:
            vc = VectorColumn(column, int(emb.dim_), emb.metric)
            exists = check_target(tx.info, column, vc.dim, vc.metric)
            aux = [f for f in _aux_fields(emb, column) if f.name not in tx.info.schema.names]
            if not exists or aux:
                tx.add_columns(aux, vectors=[] if exists else [vc])
            plans.append((emb, column, vc, exists))
        if len(plans) == 1:
            emb, column, vc, exists = plans[0]
            stage_results = [_stage(tx, emb, column, vc, emb.input_columns(info), exists,
                                    batch_size, progress, runner)]
        else:
            stage_results = _stage_many(tx, plans, info, batch_size, progress, runner)
        for (emb, column, _vc, _exists), result in zip(plans, stage_results, strict=True):
            meta = tx.info.metadata.get("embedders", {}).get(column)
            if result.rows_embedded == 0 and meta is not None:
                result.state_sha256 = meta.get("state_sha256", "")
            else:
                name, sha = save_state(store, table, column, emb)
                tx.set_metadata({("embedders", column): metadata_entry(
                    table, column, emb, name, sha, result.extra.pop("mean"))})
                result.state_sha256 = sha
            results.append(result)
    seconds = time.perf_counter() - t0
    for result in results:
        result.extra.pop("mean", None)
        result.seconds = seconds
    return results


@dataclass
class _EmbedWork:
    """The broadcast state of one embed step's per-partition work."""

    targets: list[tuple[Embedder, str, int]]
    """(fitted embedder, vector column, dimension) per column written."""
    key: str
    read: list[str]
    batch_size: int
    planned: bool = False
    """The single target has an incremental plan (only changed rows are re-embedded)."""


@dataclass
class _PartOut:
    """What one partition's work returns to the driver: sums for the column means, counts."""

    sums: list[np.ndarray]
    n: list[int]
    embedded: int = 0
    skipped: int = 0


def _embed_partition(ctx: PartitionContext, part: Partition) -> _PartOut:
    """Compute and stage one partition's vectors (runs wherever the runner puts it)."""
    w: _EmbedWork = ctx.shared
    key = w.key
    accs = [MeanAccumulator(dim) for _, _, dim in w.targets]
    out = _PartOut([], [])
    if part.rows == 0:
        return _part_out(out, accs)
    batches = ctx.scan(part, columns=w.read, batch_size=w.batch_size)
    if not w.planned:  # every row: vectors stream into the partition's files
        def vectors() -> Any:
            for batch in batches:
                cols = {key: batch.column(key)}
                for (emb, column, dim), acc in zip(w.targets, accs, strict=True):
                    v = emb.transform(batch)
                    acc.add(from_vector_array(v, dim))
                    cols[column] = v
                out.embedded += batch.num_rows
                yield pa.record_batch(cols)
                ctx.progress(batch.num_rows)
        ctx.stage(part, vectors())
        return _part_out(out, accs)
    (embedder, column, dim), acc = w.targets[0], accs[0]
    rows, chunks, offset = [], [], 0
    for batch in batches:
        mask, aux_arrays = _plan(embedder, batch, column)
        assert mask is not None
        out.skipped += int((~mask).sum())
        if column in batch.schema.names:
            acc.add(from_vector_array(batch.column(column), dim)[~mask])
        if mask.any():
            keep = pa.array(mask)
            changed = batch.filter(keep)
            v = embedder.transform(changed)
            acc.add(from_vector_array(v, dim))
            chunks.append(pa.table({key: changed.column(key), column: v,
                                    **{k: a.filter(keep) for k, a in aux_arrays.items()}}))
            rows.append(np.flatnonzero(mask) + offset)
            out.embedded += changed.num_rows
        offset += batch.num_rows
        ctx.progress(batch.num_rows)
    if chunks:
        ctx.stage(part, pa.concat_tables(chunks), rows=np.concatenate(rows))
    return _part_out(out, accs)


def _part_out(out: _PartOut, accs: list[MeanAccumulator]) -> _PartOut:
    out.sums = [a.sum for a in accs]
    out.n = [a.n for a in accs]
    return out


def _run_embed(tx: Transaction, work: _EmbedWork, runner: Runner | None,
               progress: Progress | None) -> tuple[list[MeanAccumulator], int, int]:
    """Every partition's work on the runner; the column accumulators and row counts."""
    run = runner_for(tx.store, runner, step="embed")
    accs = [MeanAccumulator(dim) for _, _, dim in work.targets]
    total = tx.store.count(tx.name) if progress is not None else None
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress(done[0], total)

    gpu = any(str(getattr(e, "device", "cpu")).startswith("cuda") for e, _, _ in work.targets)
    embedded = skipped = 0
    for out in run.map_partitions(tx, _embed_partition, shared=work, progress=tick,
                                  stateful=any(getattr(e, "stateful", False)
                                               for e, _, _ in work.targets),
                                  resources={"num_gpus": 1} if gpu and run.distributed
                                  else None):
        for acc, s, n in zip(accs, out.sums, out.n, strict=True):
            acc.sum += s
            acc.n += n
        embedded += out.embedded
        skipped += out.skipped
    return accs, embedded, skipped


def _stage(tx: Transaction, embedder: Embedder, column: str, vc: VectorColumn,
           inputs: list[str], exists: bool, batch_size: int, progress: Progress | None,
           runner: Runner | None = None) -> EmbedResult:
    """Compute and stage the vectors of every partition; the result holds the column mean."""
    key = tx.info.key
    assert key is not None
    read = [key, *dict.fromkeys(inputs)]
    read += [f.name for f in _aux_fields(embedder, column) if f.name not in read]
    planned = hasattr(embedder, "plan")
    if exists and planned:
        read.append(column)  # unchanged rows' vectors still count towards the column mean
    read = [c for c in read if c in tx.base.schema.names]  # not the columns this step adds
    work = _EmbedWork([(embedder, column, vc.dim)], key, read, batch_size, planned)
    (acc,), embedded, skipped = _run_embed(tx, work, runner, progress)
    return EmbedResult(tx.name, column, embedded, skipped, vc.dim, extra={"mean": acc.mean})


def _stage_many(tx: Transaction, plans: list[tuple[Embedder, str, VectorColumn, bool]],
                info: TableInfo, batch_size: int, progress: Progress | None,
                runner: Runner | None = None) -> list[EmbedResult]:
    """Stage every row's vectors of several embedders, one scan per partition."""
    key = tx.info.key
    assert key is not None
    read = [key]
    for emb, *_ in plans:
        read += [c for c in emb.input_columns(info) if c not in read]
    read = [c for c in read if c in tx.base.schema.names]
    work = _EmbedWork([(emb, column, vc.dim) for emb, column, vc, _ in plans], key, read,
                      batch_size)
    accs, embedded, _ = _run_embed(tx, work, runner, progress)
    return [EmbedResult(tx.name, column, embedded, 0, vc.dim, extra={"mean": acc.mean})
            for (_, column, vc, _), acc in zip(plans, accs, strict=True)]


def _aux_fields(embedder: Embedder, column: str) -> list[pa.Field]:
    fn = getattr(embedder, "aux_fields", None)
    return list(fn(column)) if fn is not None else []


def _plan(embedder: Embedder, batch: pa.RecordBatch, column: str
          ) -> tuple[np.ndarray | None, dict[str, pa.Array]]:
    fn = getattr(embedder, "plan", None)
    if fn is None:
        return None, {}
    return fn(batch, column)
