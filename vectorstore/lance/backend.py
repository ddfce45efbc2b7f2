"""Embedded LanceDB backend: a directory (or object-store prefix) of Lance tables.

Each table's description (key, vector columns, metadata) lives in its own manifest, in the
schema metadata, so data and description change in the same commit and are versioned
together: ``restore`` brings both back. Every write is one commit staged through
:mod:`vectorstore.lance_txn`. ``memory://`` stores live in a private temporary directory
removed on close: pylance cannot reach lancedb's in-memory tables, and a directory gives
them exactly the staging and commit path of a directory store.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..base import (
    Data,
    FilterLike,
    VectorStore,
    _check_positions,
    _sorted_positions,
)
from ..conform import conform
from ..dsn import remember_secret
from ..errors import (
    BackendUnavailable,
    StoreError,
    TableExists,
    TableNotFound,
    native_free,
)
from ..faults import boundary, fault_point
from ..handle import StoreHandle
from ..names import check_name
from ..schema import Capabilities, Metric, TableInfo, VectorColumn, new_table_info
from ..store_helpers import check_options
from .filter import compile_filter
from .indexes import (
    _LANCE_METRIC,
    DEFAULT_MIN_NPROBES,
    INDEX_TYPES,
    LanceIndexes,
)
from .location import OBJECT_STORE_SCHEMES, is_secret_option, object_store_location
from .parts import LancePartitions
from .stage import Feed
from .txn import DESCRIPTION_KEY, LanceTransaction, describe, read_description

LEGACY_CATALOG = "_kindred_catalog"
_OPTIONS = {"storage_options", "read_consistency_interval"}
_SEARCH_PARAMS = {"nprobes", "refine_factor", "ef"}


def _object_store_reason(message: str) -> str:
    """The object store's own reason (``NoSuchBucket: The specified bucket does not exist``)
    from a native error, or its first line without source locations."""
    code = re.search(r"<Code>([^<]+)</Code>", message)
    text = re.search(r"<Message>([^<]+)</Message>", message)
    if code:
        return code.group(1) + (f": {text.group(1)}" if text else "")
    return native_free(message.splitlines()[0] if message else message)[:300]


class LanceStore(LancePartitions, LanceIndexes, VectorStore):
    """Tables in an embedded LanceDB database (see :mod:`vectorstore.base` for the contract)."""

    scheme = "lance"
    capabilities = Capabilities(versions=True, ann_index=True, scalar_index=True, prefilter=True,
                                index_types=INDEX_TYPES, partitions=True)

    def __init__(self, uri: str, *, storage_options: dict[str, str] | None = None,
                 read_consistency_interval: float | timedelta | None = 0.0) -> None:
        import lancedb

        if isinstance(read_consistency_interval, int | float):
            read_consistency_interval = timedelta(seconds=read_consistency_interval)
        self.uri = uri
        self._scratch: str | None = None
        path = uri
        if uri.startswith("memory://"):
            self._scratch = path = tempfile.mkdtemp(prefix="kindred-memory-")
            self._cleanup = weakref.finalize(self, shutil.rmtree, path, True)
        self._path = path
        self._storage_options = dict(storage_options or {}) or None
        for k, v in (self._storage_options or {}).items():
            if is_secret_option(k):
                remember_secret(str(v))
        try:
            self._db = lancedb.connect(path, storage_options=storage_options,
                                       read_consistency_interval=read_consistency_interval)
        except (ValueError, OSError, RuntimeError) as exc:
            raise BackendUnavailable(f"cannot open the LanceDB store at {path}: "
                                     f"{_object_store_reason(str(exc))}") from exc
        self._tables: dict[str, Any] = {}
        # reads go through the tables' Lance datasets (see _dataset), sharing one cache session
        self._datasets: dict[str, Any] = {}
        self._session: Any = None
        self._data_versions: dict[str, tuple[int, str]] = {}
        self._null_counts: dict[tuple[str, str, int, str], int] = {}
        self._lock = threading.RLock()
        self._adopt_legacy_catalog()

    @classmethod
    def open(cls, uri: str, **options: Any) -> LanceStore:
        check_options(options, _OPTIONS, "LanceDB")
        path = uri
        for prefix in ("lance://", "file://"):
            if uri.startswith(prefix):
                path = uri[len(prefix):]
        if uri.startswith("memory://"):
            path = "memory://"
        if uri.split("://", 1)[0].lower() in OBJECT_STORE_SCHEMES:
            path, from_uri = object_store_location(uri)
            given = options.get("storage_options") or {}
            options = {**options, "storage_options": {**from_uri, **given} or None}
        return cls(path, **options)

    def __repr__(self) -> str:
        return f"LanceStore({self.uri!r})"

    def worker_handle(self) -> StoreHandle:
        """The directory or object-store prefix and its storage options (a ``memory://``
        store: its private directory, so workers on this machine reach the same tables)."""
        opts: dict[str, Any] = {}
        if self._storage_options:
            opts["storage_options"] = dict(self._storage_options)
        return StoreHandle(self._path, opts)

    def dataset_location(self, name: str) -> tuple[str, dict[str, str] | None]:
        """The Lance dataset URI of table ``name`` and its storage options, for engines
        that read or index Lance datasets themselves (lance-ray)."""
        return self._table_uri(name), (dict(self._storage_options)
                                       if self._storage_options else None)

    # ------------------------------------------------------------------ internals
    def _table(self, name: str) -> Any:
        check_name(name, "table name")
        with self._lock:
            t = self._tables.get(name)
            if t is None:
                try:
                    t = self._db.open_table(name)
                except (ValueError, FileNotFoundError) as exc:
                    raise TableNotFound(f"table {name!r} does not exist in {self.uri}") from exc
                self._tables[name] = t
            return t

    def _dataset(self, name: str, table: Any = None) -> Any:
        """The table as a Lance dataset at its latest version.

        Reads that need the latest version go through the dataset: its version check is a
        native call (~10 us, where lancedb's ``Table.version`` costs ~0.3 ms of round trips
        to its event loop), its schema needs no I/O, and a search is one native call where
        lancedb's query builder spends ~3 ms of a 10 ms search. The dataset is a snapshot,
        moved to the latest version when one appears; all of this store's datasets share one
        session, so the index cache survives the move.
        """
        with self._lock:
            ds = self._datasets.get(name)
        if ds is not None:
            try:
                latest = ds.latest_version
            except (OSError, ValueError):  # dropped meanwhile
                ds = None
            else:
                if latest == ds.version:
                    return ds
                ds = ds.checkout_version(latest)
        if ds is None:
            t = table if table is not None else self._table(name)
            with self._lock:
                if self._session is None:
                    import lance

                    self._session = lance.Session()
            with self._translate(name, "opening"):
                ds = t.to_lance(session=self._session)
        with self._lock:
            self._datasets[name] = ds
        return ds

    def _table_uri(self, name: str) -> str:
        return str(self._dataset(name).uri)

    @contextlib.contextmanager
    def _translate(self, name: str, action: str) -> Iterator[None]:
        try:
            yield
        except StoreError:
            raise
        except (ValueError, RuntimeError, OSError, pa.ArrowException) as exc:
            msg = native_free(str(exc).split("\n")[0])
            if "was not found" in msg or "Not found" in msg:
                raise TableNotFound(f"table {name!r} does not exist in {self.uri}") from exc
            raise StoreError(f"{action} on table {name!r} failed: {msg}") from exc

    def _adopt_legacy_catalog(self) -> None:
        """Stores written before descriptions moved into the tables' manifests kept them in a
        catalogue table: copy each entry into its table (vector columns the table no longer
        has are left out), then drop the catalogue."""
        if LEGACY_CATALOG not in self._all_tables():
            return
        cat = self._db.open_table(LEGACY_CATALOG).to_arrow()
        names = set(self._all_tables())
        for name, raw in zip(cat.column("name").to_pylist(),
                             cat.column("description").to_pylist(), strict=True):
            if name not in names or raw is None:
                continue
            ds = self._dataset(name)
            if DESCRIPTION_KEY in (ds.schema.metadata or {}):
                continue
            d = json.loads(raw)
            present = set(ds.schema.names)
            vectors = {v["name"]: VectorColumn.from_dict(v) for v in d.get("vectors", [])
                       if v["name"] in present}
            info = TableInfo(name, ds.schema.remove_metadata(), d.get("key"), vectors,
                             d.get("metadata", {}))
            ds.update_schema_metadata({DESCRIPTION_KEY.decode(): describe(info).decode()})
        self._db.drop_table(LEGACY_CATALOG)

    def table_info(self, name: str) -> TableInfo:
        t = self._table(name)
        with self._translate(name, "reading the schema"):
            return read_description(name, self._dataset(name, t).schema)

    # ------------------------------------------------------------------ tables
    def create_table(self, name: str, schema: pa.Schema, *, key: str | None = None,
                     vectors: Sequence[VectorColumn] = (), metadata: dict[str, Any] | None = None,
                     exist_ok: bool = False, data: Data | None = None) -> TableInfo:
        info = new_table_info(name, schema, key=key, vectors=vectors, metadata=metadata)
        with self._lock:
            if name in self._all_tables():
                if exist_ok and data is None:
                    return self.table_info(name)
                raise TableExists(f"table {name!r} already exists in {self.uri}")
            with self._translate(name, "create"):
                if data is not None and self._create_with_rows(info, data):
                    return info
                described = info.schema.with_metadata({DESCRIPTION_KEY: describe(info)})
                with boundary(name):
                    self._tables[name] = self._db.create_table(name, schema=described)
                self._datasets.pop(name, None)
        return info

    def replace_table(self, name: str, schema: pa.Schema, *, key: str | None = None,
                      vectors: Sequence[VectorColumn] = (),
                      metadata: dict[str, Any] | None = None,
                      data: Data | None = None) -> TableInfo:
        """One commit: a new version of ``name`` that overwrites its rows, schema and
        description (a kill leaves the old table or the new one, never none)."""
        info = new_table_info(name, schema, key=key, vectors=vectors, metadata=metadata)
        with self._lock:
            if name not in self._all_tables():
                return self.create_table(name, schema, key=key, vectors=vectors,
                                         metadata=metadata, data=data)
            with self._translate(name, "replace"):
                if data is not None and self._create_with_rows(info, data, mode="overwrite"):
                    return info
                described = info.schema.with_metadata({DESCRIPTION_KEY: describe(info)})
                with boundary(name):
                    self._tables[name] = self._db.create_table(name, schema=described,
                                                               mode="overwrite")
                self._datasets.pop(name, None)
        return info

    def _create_with_rows(self, info: TableInfo, data: Data, *, mode: str = "create") -> bool:
        """Create the table holding ``data`` in its first commit; False if there are no rows.
        A failure leaves no table (at most a directory without a version, see
        :meth:`_all_tables`)."""
        rows = conform(info, data, require_key=info.key is not None,
                       unique_key=info.key is not None)
        first = next(rows, None)
        if first is None:
            return False
        described = info.schema.with_metadata({DESCRIPTION_KEY: describe(info)})
        feed = Feed(itertools.chain([first], rows), described)
        fault_point("commit", info.name)
        self._tables[info.name] = feed.run(
            lambda reader: self._db.create_table(info.name, data=reader, schema=described,
                                                 mode=mode))
        self._datasets.pop(info.name, None)
        fault_point("committed", info.name)
        return True

    def _all_tables(self) -> list[str]:
        """Tables with a committed version (a create that failed before its first commit can
        leave a directory lancedb lists but cannot open: not a table)."""
        names: list[str] = []
        token = None
        while True:
            resp = self._db.list_tables(page_token=token)
            names.extend(resp.tables)
            token = resp.page_token
            if not token:
                break
        return [n for n in names if self._opens(n)]

    def _opens(self, name: str) -> bool:
        with self._lock:
            if name in self._tables:
                return True
        try:
            self._table(name)
        except StoreError:
            return False
        return True

    def _hidden_tables(self) -> list[str]:
        return [n for n in self._all_tables() if n.startswith("_kindred")]

    def list_tables(self) -> list[str]:
        return sorted(n for n in self._all_tables() if not n.startswith("_kindred"))

    def drop_table(self, name: str, *, missing_ok: bool = False) -> None:
        check_name(name, "table name")
        with self._lock:
            self._tables.pop(name, None)
            self._datasets.pop(name, None)
            self._data_versions.pop(name, None)
            if name not in self._all_tables():
                if missing_ok:
                    return
                raise TableNotFound(f"table {name!r} does not exist in {self.uri}")
            with self._translate(name, "drop"), boundary(name):
                self._db.drop_table(name)

    def drop_columns(self, name: str, columns: Sequence[str]) -> TableInfo:
        info = self.table_info(name)
        cols = self._columns_to_drop(info, columns)
        if cols:
            with self.transaction(name) as tx:
                tx.drop = cols
        return self.table_info(name)

    # ------------------------------------------------------------------ staged writes
    def transaction(self, name: str) -> LanceTransaction:
        self._table(name)
        with self._translate(name, "staging"):
            return LanceTransaction(self, name)

    def delete(self, name: str, filter: FilterLike) -> int:
        info = self.table_info(name)
        f = self._bind_filter(info, filter)
        if f is None:
            raise StoreError(f"delete on table {name!r} needs a filter (use drop_table or "
                             "overwrite to remove every row)")
        t = self._table(name)
        with self._translate(name, "delete"), boundary(name):
            res = t.delete(compile_filter(f))
        return int(res.num_deleted_rows)

    # ------------------------------------------------------------------ reads
    def count(self, name: str, filter: FilterLike = None) -> int:
        info = self.table_info(name)
        f = self._bind_filter(info, filter)
        t = self._table(name)
        with self._translate(name, "count"):
            return int(t.count_rows(compile_filter(f) if f is not None else None))

    def take(self, name: str, positions: np.ndarray | Sequence[int], *,
             columns: Sequence[str] | None = None) -> pa.Table:
        info = self.table_info(name)
        info.check_columns(columns)
        pos = _sorted_positions(positions)
        t = self._table(name)
        with self._translate(name, "take"):
            _check_positions(name, pos, int(t.count_rows()))
            # Lance returns taken rows in the order of the offsets asked for (the conformance
            # suite checks it, as lancedb's docstring does not promise it)
            q = t.take_offsets(pos.tolist())
            out = (q.select(list(columns)) if columns is not None else q).to_arrow()
        names = list(columns) if columns is not None else info.schema.names
        return out.select(names).replace_schema_metadata(None)

    def scan(self, name: str, *, columns: Sequence[str] | None = None, filter: FilterLike = None,
             batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        info = self.table_info(name)
        info.check_columns(columns)
        f = self._bind_filter(info, filter)
        t = self._table(name)
        with self._translate(name, "scan"):
            q = t.search().limit(None)
            if columns is not None:
                q = q.select(list(columns))
            if f is not None:
                q = q.where(compile_filter(f))
            reader = q.to_batches(batch_size=batch_size)
        for b in reader:
            for start in range(0, b.num_rows, batch_size):
                yield b.slice(start, batch_size).replace_schema_metadata(None)

    def search(self, name: str, query: Any, *, k: int = 10, vector_column: str | None = None,
               filter: FilterLike = None, columns: Sequence[str] | None = None,
               exact: bool = False, params: dict[str, Any] | None = None) -> pa.Table:
        info = self.table_info(name)
        vec, q, params = self._check_search(info, query, k, vector_column, params, _SEARCH_PARAMS)
        many = q.ndim == 2
        if columns is None:
            columns = [c for c in info.schema.names if c not in info.vectors]
        info.check_columns(columns)
        f = self._bind_filter(info, filter)
        where = compile_filter(f) if f is not None else None
        t = self._table(name)
        queries = list(q) if many else [q]

        def run(bypass: bool) -> pa.Table:
            nearest = {"column": vec.name, "q": q, "k": k, "use_index": not bypass,
                       "metric": _LANCE_METRIC[vec.metric]}
            if not bypass:
                nearest.update({p: int(v) for p, v in params.items()})
                if "nprobes" not in params:  # lancedb's default: >= 20, more when needed
                    nearest["minimum_nprobes"] = DEFAULT_MIN_NPROBES
            return self._dataset(name, t).to_table(columns=[*columns, "_distance"],
                                                   filter=where, prefilter=True, nearest=nearest)

        with self._translate(name, "search"):
            res = run(exact)
            # an ANN index can miss filtered rows; guarantee k rows whenever k rows match
            short = not exact and where is not None and res.num_rows < k * len(queries)
            if short and self.count(name, f) > res.num_rows // len(queries):
                res = run(True)
        return self._shape_result(res, vec, many)

    @staticmethod
    def _shape_result(res: pa.Table, vec: VectorColumn, many: bool) -> pa.Table:
        d = res.column("_distance").cast(pa.float64())
        # LanceDB: l2 is the squared distance; cosine and dot distances are 1 - similarity
        value = pc.sqrt(pc.max_element_wise(d, 0.0)) if vec.metric is Metric.L2 else pc.subtract(1.0, d)
        keep = [c for c in res.column_names if c not in ("_distance", "_rowid", "query_index")]
        out = res.select(keep).append_column(vec.metric.result_column, value)
        if many:
            out = out.append_column("query_index", res.column("query_index").cast(pa.int64()))
            order = pc.sort_indices(
                out, sort_keys=[("query_index", "ascending"),
                                (vec.metric.result_column,
                                 "descending" if vec.metric.higher_is_closer else "ascending")])
            out = out.take(order)
        return out


    def close(self) -> None:
        with self._lock:
            self._tables.clear()
            self._datasets.clear()
        if self._scratch is not None:
            self._cleanup()
