"""Embedded LanceDB backend: a directory (or object-store prefix, or memory) of Lance tables.

Table descriptions (key, vector columns, metadata) live in a catalogue table, one row per
table, so a metadata update does not make a new version of the data. ``restore`` puts back
the description a table had at the version it returns to (the catalogue is versioned too).
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .base import (
    Data,
    FilterLike,
    IndexInfo,
    VectorStore,
    VersionInfo,
    WriteMode,
    WriteResult,
    _check_positions,
    _sorted_positions,
)
from .conform import conform
from .errors import (
    InvalidOption,
    KeyConflict,
    SchemaMismatch,
    StoreError,
    TableExists,
    TableNotFound,
    native_free,
)
from .lance_filter import compile_filter
from .names import check_name
from .schema import Capabilities, Metric, TableInfo, VectorColumn, new_table_info

CATALOG = "_kindred_catalog"
INDEX_TYPES = ("IVF_HNSW_SQ", "IVF_PQ", "IVF_FLAT", "IVF_SQ", "IVF_HNSW_PQ", "IVF_RQ")
# IVF_FLAT: exact distances inside the probed partitions, so recall depends only on nprobes;
# with sqrt(n) partitions and the default 20 probes it keeps recall@k >= 0.95 at 20k and 200k
# rows (docs/benchmarks.md) and builds fastest; IVF_HNSW_SQ missed 0.95 at 20k x 64.
DEFAULT_INDEX_TYPE = "IVF_FLAT"
MIN_ROWS_FOR_INDEX = 256
DEFAULT_MIN_NPROBES = 20
_OPTIONS = {"storage_options", "read_consistency_interval"}
_SEARCH_PARAMS = {"nprobes", "refine_factor", "ef"}
_LANCE_METRIC = {Metric.COSINE: "cosine", Metric.DOT: "dot", Metric.L2: "l2"}


def _describe(info: TableInfo) -> str:
    return json.dumps({"key": info.key, "vectors": [v.to_dict() for v in info.vectors.values()],
                       "metadata": info.metadata}, sort_keys=True, default=str)


def _info(name: str, schema: pa.Schema, desc_json: str | None) -> TableInfo:
    if desc_json is None:  # a Lance table made elsewhere: every float32 vector column, cosine
        vectors = {f.name: VectorColumn(f.name, f.type.list_size) for f in schema
                   if pa.types.is_fixed_size_list(f.type) and pa.types.is_float32(f.type.value_type)}
        return TableInfo(name=name, schema=schema.remove_metadata(), vectors=vectors)
    desc = json.loads(desc_json)
    vectors = {v["name"]: VectorColumn.from_dict(v) for v in desc.get("vectors", [])}
    return TableInfo(name=name, schema=schema.remove_metadata(), key=desc.get("key"),
                     vectors=vectors, metadata=desc.get("metadata", {}))


def _entries(catalog: pa.Table) -> dict[str, str]:
    """Catalogue rows as table name -> description JSON."""
    return dict(zip(catalog.column("name").to_pylist(),
                    catalog.column("description").to_pylist(), strict=True))


class LanceStore(VectorStore):
    """Tables in an embedded LanceDB database (see :mod:`vectorstore.base` for the contract)."""

    scheme = "lance"
    capabilities = Capabilities(versions=True, ann_index=True, scalar_index=True, prefilter=True,
                                index_types=INDEX_TYPES)

    def __init__(self, uri: str, *, storage_options: dict[str, str] | None = None,
                 read_consistency_interval: float | timedelta | None = 0.0) -> None:
        import lancedb

        if isinstance(read_consistency_interval, int | float):
            read_consistency_interval = timedelta(seconds=read_consistency_interval)
        self.uri = uri
        self._db = lancedb.connect(uri, storage_options=storage_options,
                                   read_consistency_interval=read_consistency_interval)
        self._tables: dict[str, Any] = {}
        # searches run on the tables' Lance datasets (see _dataset), sharing one cache session
        self._datasets: dict[str, Any] = {}
        self._session: Any = None
        self._descriptions: tuple[int, dict[str, str]] | None = None
        self._lock = threading.RLock()

    @classmethod
    def open(cls, uri: str, **options: Any) -> LanceStore:
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise InvalidOption(
                f"unknown option(s) {', '.join(unknown)} for the LanceDB backend; "
                f"accepted: {', '.join(sorted(_OPTIONS))}"
            )
        path = uri
        for prefix in ("lance://", "file://"):
            if uri.startswith(prefix):
                path = uri[len(prefix):]
        if uri.startswith("memory://"):
            path = "memory://"
        return cls(path, **options)

    def __repr__(self) -> str:
        return f"LanceStore({self.uri!r})"

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

    def _dataset(self, name: str, table: Any = None) -> Any | None:
        """The table as a Lance dataset at its latest version, or None for in-memory stores.

        Reads that need the latest version go through the dataset: its version check is a
        native call (~10 us, where lancedb's ``Table.version`` costs ~0.3 ms of round trips
        to its event loop), its schema needs no I/O, and a search is one native call where
        lancedb's query builder spends ~3 ms of a 10 ms search. The dataset is a snapshot,
        moved to the latest version when one appears; all of this store's datasets share one
        session, so the index cache survives the move.
        """
        if self.uri.startswith("memory://"):
            return None
        with self._lock:
            ds = self._datasets.get(name)
        if ds is not None:
            latest = ds.latest_version
            if latest == ds.version:
                return ds
            ds = ds.checkout_version(latest)
        else:
            t = table if table is not None else self._table(name)
            with self._lock:
                if self._session is None:
                    import lance

                    self._session = lance.Session()
            ds = t.to_lance(session=self._session)
        with self._lock:
            self._datasets[name] = ds
        return ds

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

    def _catalog(self) -> Any:
        """The catalogue table: one row per table with its key, vector columns and metadata."""
        with self._lock:
            t = self._tables.get(CATALOG)
            if t is None:
                schema = pa.schema([pa.field("name", pa.string(), nullable=False),
                                    pa.field("description", pa.string())])
                t = self._db.create_table(CATALOG, schema=schema, exist_ok=True)
                self._tables[CATALOG] = t
            return t

    def _description(self, name: str) -> str | None:
        """The catalogue entry of a table, cached until the catalogue's version changes.

        A LanceDB query costs milliseconds of planning; the version check is cheaper, and it
        still sees changes made by other processes.
        """
        cat = self._catalog()
        ds = self._dataset(CATALOG, cat)
        version = ds.version if ds is not None else cat.version
        with self._lock:
            cached = self._descriptions
        if cached is None or cached[0] != version:  # read the very version just checked
            cached = (version, _entries(ds.to_table() if ds is not None else cat.to_arrow()))
            with self._lock:
                self._descriptions = cached
        return cached[1].get(name)

    def table_info(self, name: str) -> TableInfo:
        t = self._table(name)
        with self._translate(name, "reading the schema"):
            ds = self._dataset(name, t)
            return _info(name, ds.schema if ds is not None else t.schema,
                         self._description(name))

    # ------------------------------------------------------------------ tables
    def create_table(self, name: str, schema: pa.Schema, *, key: str | None = None,
                     vectors: Sequence[VectorColumn] = (), metadata: dict[str, Any] | None = None,
                     exist_ok: bool = False) -> TableInfo:
        info = new_table_info(name, schema, key=key, vectors=vectors, metadata=metadata)
        with self._lock:
            if name in self._all_tables():
                if exist_ok:
                    return self.table_info(name)
                raise TableExists(f"table {name!r} already exists in {self.uri}")
            with self._translate(name, "create"):
                self._write_description(info)
                self._tables[name] = self._db.create_table(name, schema=info.schema)
        return info

    def _write_description(self, info: TableInfo) -> None:
        row = pa.table({"name": [info.name], "description": [_describe(info)]},
                       schema=self._catalog().schema)
        (self._catalog().merge_insert("name").when_matched_update_all()
         .when_not_matched_insert_all().execute(row))

    def _all_tables(self) -> list[str]:
        names: list[str] = []
        token = None
        while True:
            resp = self._db.list_tables(page_token=token)
            names.extend(resp.tables)
            token = resp.page_token
            if not token:
                return names

    def _hidden_tables(self) -> list[str]:
        return [n for n in self._all_tables() if n.startswith("_kindred") and n != CATALOG]

    def list_tables(self) -> list[str]:
        return sorted(n for n in self._all_tables() if not n.startswith("_kindred"))

    def drop_table(self, name: str, *, missing_ok: bool = False) -> None:
        check_name(name, "table name")
        with self._lock:
            self._tables.pop(name, None)
            self._datasets.pop(name, None)
            if name not in self._all_tables():
                if missing_ok:
                    return
                raise TableNotFound(f"table {name!r} does not exist in {self.uri}")
            with self._translate(name, "drop"):
                self._db.drop_table(name)
                self._catalog().delete(f"name = '{name}'")  # name is a checked identifier

    def _save_info(self, info: TableInfo) -> TableInfo:
        with self._translate(info.name, "updating metadata"):
            self._write_description(info)
        return self.table_info(info.name)

    def set_metadata(self, name: str, updates: dict[str, Any]) -> TableInfo:
        info = self.table_info(name)
        return self._save_info(info.with_metadata(updates))

    def add_columns(self, name: str, fields: Sequence[pa.Field], *,
                    vectors: Sequence[VectorColumn] = ()) -> TableInfo:
        info = self.table_info(name)
        new_fields = list(fields) + [v.field() for v in vectors]
        for f in new_fields:
            check_name(f.name, "column name")
            if f.name in info.schema.names:
                raise SchemaMismatch(f"table {name!r} already has a column {f.name!r}")
        if not new_fields:
            return info
        t = self._table(name)
        with self._translate(name, "adding columns"):
            t.add_columns([f.with_nullable(True) for f in new_fields])
        info = self.table_info(name)
        if vectors:
            vecs = dict(info.vectors)
            vecs.update({v.name: v for v in vectors})
            info = self._save_info(TableInfo(name, info.schema, info.key, vecs, info.metadata))
        return info

    def drop_columns(self, name: str, columns: Sequence[str]) -> TableInfo:
        info = self.table_info(name)
        cols = self._columns_to_drop(info, columns)
        if not cols:
            return info
        with self._translate(name, "dropping columns"):
            self._table(name).drop_columns(cols)
        info = self.table_info(name)
        if any(c in info.vectors for c in cols):
            vecs = {k: v for k, v in info.vectors.items() if k not in cols}
            info = self._save_info(TableInfo(name, info.schema, info.key, vecs, info.metadata))
        return info

    # ------------------------------------------------------------------ writes
    def write(self, name: str, data: Data, *, mode: WriteMode = "append") -> WriteResult:
        info = self.table_info(name)
        if mode not in ("append", "overwrite", "upsert"):
            raise InvalidOption(f"unknown write mode {mode!r}; expected append, overwrite or upsert")
        if mode == "upsert" and info.key is None:
            raise KeyConflict(f"table {name!r} has no key column: upsert needs one")
        schema = info.schema
        counter = {"rows": 0}
        failure: list[BaseException] = []

        # append keeps the key unique, as a primary key does on SQL backends: the stored keys
        # (that column only) are read once and every incoming batch is checked against them
        existing = (self._key_values(name, info.key)
                    if mode == "append" and info.key is not None else None)

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                for b in conform(info, data, require_key=info.key is not None,
                                 unique_key=info.key is not None and mode != "overwrite"):
                    if existing is not None and len(existing) and b.num_rows:
                        clash = pc.filter(b.column(info.key),
                                          pc.is_in(b.column(info.key), value_set=existing))
                        if len(clash):
                            raise KeyConflict(
                                f"table {name!r}: key {info.key}={clash[0].as_py()!r} is already "
                                "in the table (append adds new keys only; use mode='upsert')")
                    counter["rows"] += b.num_rows
                    yield b
            except BaseException as exc:
                failure.append(exc)
                raise

        reader = pa.RecordBatchReader.from_batches(schema, batches())
        t = self._table(name)
        try:
            with self._translate(name, f"{mode} write"):
                if mode == "upsert":
                    res = (t.merge_insert(info.key).when_matched_update_all()
                           .when_not_matched_insert_all().execute(reader))
                    return WriteResult(inserted=res.num_inserted_rows, updated=res.num_updated_rows)
                t.add(reader, mode=mode)
                return WriteResult(inserted=counter["rows"])
        except StoreError:
            if failure and isinstance(failure[0], StoreError):
                raise failure[0] from None
            raise

    def _key_values(self, name: str, key: str) -> pa.Array:
        return self.to_arrow(name, columns=[key]).column(key).combine_chunks()

    def update(self, name: str, data: Data, *, key: str | None = None) -> int:
        info = self.table_info(name)
        key, incoming = self._update_data(info, data, key)
        if incoming is None:
            return 0
        existing = self._key_values(name, key)
        missing = pc.invert(pc.is_in(incoming.column(key), value_set=existing))
        if pc.any(missing).as_py():
            bad = pc.filter(incoming.column(key), missing)
            raise KeyConflict(
                f"table {name!r}: {len(bad)} key(s) to update are not in the table, "
                f"e.g. {key}={bad[0].as_py()!r}"
            )
        t = self._table(name)
        with self._translate(name, "update"):
            res = t.merge_insert(key).when_matched_update_all().execute(incoming)
        return int(res.num_updated_rows)

    def delete(self, name: str, filter: FilterLike) -> int:
        info = self.table_info(name)
        f = self._bind_filter(info, filter)
        if f is None:
            raise StoreError(f"delete on table {name!r} needs a filter (use drop_table or "
                             "overwrite to remove every row)")
        t = self._table(name)
        with self._translate(name, "delete"):
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
            ds = self._dataset(name)
            if ds is not None:
                nearest = {"column": vec.name, "q": q, "k": k, "use_index": not bypass,
                           "metric": _LANCE_METRIC[vec.metric]}
                if not bypass:
                    nearest.update({p: int(v) for p, v in params.items()})
                    if "nprobes" not in params:  # lancedb's default: >= 20, more when needed
                        nearest["minimum_nprobes"] = DEFAULT_MIN_NPROBES
                return ds.to_table(columns=[*columns, "_distance"], filter=where, prefilter=True,
                                   nearest=nearest)
            b = t.search(queries if many else q, vector_column_name=vec.name)
            b = b.distance_type(_LANCE_METRIC[vec.metric]).limit(k).select([*columns, "_distance"])
            if where is not None:
                b = b.where(where, prefilter=True)
            if bypass:
                b = b.bypass_vector_index()
            else:
                if "nprobes" in params:
                    b = b.nprobes(int(params["nprobes"]))
                if "refine_factor" in params:
                    b = b.refine_factor(int(params["refine_factor"]))
                if "ef" in params:
                    b = b.ef(int(params["ef"]))
            return b.to_arrow()

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

    # ------------------------------------------------------------------ indexes & versions
    def create_vector_index(self, name: str, column: str | None = None, *,
                            index_type: str | None = None, replace: bool = True,
                            **params: Any) -> None:
        info = self.table_info(name)
        vec = info.vector(column)
        index_type = (index_type or DEFAULT_INDEX_TYPE).upper()
        if index_type not in INDEX_TYPES:
            raise InvalidOption(f"unknown index type {index_type!r}; accepted: {', '.join(INDEX_TYPES)}")
        n = self.count(name)
        if n < MIN_ROWS_FOR_INDEX:
            raise StoreError(f"table {name!r} has {n} rows: an ANN index needs at least "
                             f"{MIN_ROWS_FOR_INDEX} (exact search is fast at this size)")
        allowed = {"num_partitions", "num_sub_vectors", "m", "ef_construction", "num_bits",
                   "sample_rate", "max_iterations"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise InvalidOption(f"unknown index parameter(s) {', '.join(unknown)}; "
                                f"accepted: {', '.join(sorted(allowed))}")
        if "num_partitions" not in params and index_type.startswith("IVF"):
            # ~4,000 rows a partition for HNSW-backed partitions, sqrt(n) otherwise
            per = 4096 if "HNSW" in index_type else max(int(np.sqrt(n)), 1)
            params["num_partitions"] = max(1, n // per)
        t = self._table(name)
        with self._translate(name, "creating a vector index"):
            t.create_index(metric=_LANCE_METRIC[vec.metric], vector_column_name=vec.name,
                           index_type=index_type, replace=replace, **params)

    def create_scalar_index(self, name: str, column: str, *, replace: bool = True) -> None:
        info = self.table_info(name)
        info.check_columns([column])
        typ = info.schema.field(column).type
        kind = "LABEL_LIST" if pa.types.is_list(typ) or pa.types.is_large_list(typ) else "BTREE"
        t = self._table(name)
        with self._translate(name, "creating a scalar index"):
            t.create_scalar_index(column, replace=replace, index_type=kind)

    def list_indexes(self, name: str) -> list[IndexInfo]:
        info = self.table_info(name)
        t = self._table(name)
        with self._translate(name, "listing indexes"):
            out = []
            for ix in t.list_indices():
                cols = tuple(ix.columns)
                out.append(IndexInfo(name=ix.name, columns=cols, index_type=str(ix.index_type),
                                     vector=any(c in info.vectors for c in cols)))
            return out

    def prewarm(self, name: str) -> None:
        t = self._table(name)
        with self._translate(name, "prewarming indexes"):
            target = self._dataset(name) or t  # the one searches read through
            for ix in t.list_indices():
                target.prewarm_index(ix.name)

    def optimize(self, name: str) -> None:
        t = self._table(name)
        with self._translate(name, "optimize"):
            t.optimize()

    def versions(self, name: str) -> list[VersionInfo]:
        t = self._table(name)
        with self._translate(name, "listing versions"):
            return [VersionInfo(int(v["version"]), v["timestamp"], dict(v.get("metadata", {})))
                    for v in t.list_versions()]

    def version(self, name: str) -> int:
        t = self._table(name)
        with self._translate(name, "reading the version"):
            ds = self._dataset(name, t)
            return int(ds.version if ds is not None else t.version)

    def restore(self, name: str, version: int) -> None:
        """Put the table's rows and schema back at ``version``, and its description (vector
        columns, metadata) back to what it was then."""
        t = self._table(name)
        history = self.versions(name)
        known = {v.version for v in history}
        if version not in known:
            raise StoreError(f"table {name!r} has no version {version}; versions: "
                             f"{min(known)}..{max(known)}")
        later = [v.timestamp for v in history if v.version > version]
        with self._translate(name, "restore"):
            then = self._description_before(name, min(later)) if later else None
            t.restore(version)
            ds = self._dataset(name, t)
            schema = ds.schema if ds is not None else t.schema
            info = _info(name, schema, then or self._description(name))
            present = set(info.schema.names)
            vectors = {c: v for c, v in info.vectors.items() if c in present}
            self._write_description(TableInfo(name, info.schema, info.key, vectors,
                                              info.metadata))

    def _description_before(self, name: str, moment: Any) -> str | None:
        """The catalogue entry of ``name`` as it stood just before ``moment``, a table
        version's commit time: a description is always written after the data change it
        describes, so this is the description of the version before that commit."""
        cat = self._catalog()
        earlier = [int(v["version"]) for v in cat.list_versions() if v["timestamp"] < moment]
        if not earlier:
            return None
        ds = self._dataset(CATALOG, cat)
        if ds is not None:
            rows = ds.checkout_version(max(earlier)).to_table()
        else:  # an in-memory catalogue: a handle of its own, so the shared one stays latest
            then = self._db.open_table(CATALOG)
            then.checkout(max(earlier))
            rows = then.to_arrow()
        return _entries(rows).get(name)

    def close(self) -> None:
        with self._lock:
            self._tables.clear()
            self._datasets.clear()

