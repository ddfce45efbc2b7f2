"""Milvus backend (Milvus Lite on a local file, or a Milvus server): one alias per table.

A table is a Milvus **alias** pointing at a physical collection
(``<table>__kindred_<64 hex>``, a name no table can have). Its description (exact Arrow
schema, key, vector columns, metadata, index definitions) is a row of the catalogue
collection ``_kindred_catalog`` keyed by the physical collection. Milvus cannot add a field
to a collection, so a step that adds columns, changes the description together with rows,
or rewrites many rows builds a new collection (a copy of the newest rows with the step
applied) and switches the alias to it: that switch is the step's one commit. Small row-only
steps are one ``upsert`` request, metadata-only steps one catalogue row (see
:mod:`vectorstore.milvus.txn`). Types are mapped as :mod:`vectorstore.milvus.types` says;
filters compile to Milvus expressions in :mod:`vectorstore.milvus.filter`.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pymilvus  # noqa: F401 (a missing extra fails here, with the registry's install hint)

from ..base import ARTIFACT_GRACE, ARTIFACT_TABLE, FilterLike, IndexInfo, VectorStore
from ..conform import conform
from ..errors import (
    ConcurrentWriteError,
    InvalidOption,
    StoreError,
    TableExists,
    TableNotFound,
    UnsupportedOperation,
)
from ..faults import fault_point
from ..names import check_name
from ..schema import Capabilities, Metric, TableInfo, VectorColumn, new_table_info
from ..store_helpers import check_options
from . import types as mt
from .catalog import (
    CATALOG,
    PHYSICAL,
    Described,
    catalog_schema,
    delete_row,
    describe_text,
    get_row,
    get_stamp,
    parse_description,
    put_row,
)
from .conn import (
    CommitLock,
    MilvusTarget,
    change_alias,
    open_client,
    parse_milvus_uri,
    release_lite,
    translate,
)
from .filter import compile_filter, literal
from .indexes import INDEX_TYPES, create_scalar_index, create_vector_index, sweep_collections
from .search import search
from .txn import MilvusTransaction, rebuild

_METRIC = {Metric.COSINE: "COSINE", Metric.DOT: "IP", Metric.L2: "L2"}
_SEARCH_PARAMS = {"ef", "nprobe", "nprobes"}
_OPTIONS = {"database", "token", "timeout"}
MAX_TOPK = 16_384
_PAGE = 4_096
_INSERT_ROWS = 2_048


class MilvusStore(VectorStore):
    """Tables in one Milvus database (see the module docstring)."""

    scheme = "milvus"
    capabilities = Capabilities(versions=False, ann_index=True, scalar_index=True,
                                prefilter=True, index_types=INDEX_TYPES, partitions=False)

    def __init__(self, uri: str, *, database: str | None = None, token: str | None = None,
                 timeout: float = 60.0) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            raise InvalidOption(f"timeout must be a positive number of seconds, got {timeout!r}")
        self._target: MilvusTarget = parse_milvus_uri(uri, database, token)
        self.uri = (f"milvus://{self._target.lite_path}" if self._target.lite_path
                    else None if self._target.token else uri)
        self._catalog = CATALOG
        self._closed = False
        self._client = open_client(self._target, float(timeout))
        self._readers: dict[str, int] = {}
        self._loaded: set[str] = set()
        self._retired: set[str] = set()
        with translate(CATALOG, "opening the catalogue"):
            self._ensure_catalog()

    @classmethod
    def open(cls, uri: str, **options: Any) -> MilvusStore:
        check_options(options, _OPTIONS, "Milvus")
        return cls(uri, **options)

    def __repr__(self) -> str:
        return f"MilvusStore({self._target.display!r})"

    # ------------------------------------------------------------------ catalogue
    def _ensure_catalog(self) -> None:
        if self._client.has_collection(CATALOG):
            self._client.load_collection(CATALOG)  # a reopened file has nothing loaded
            return
        try:
            self._client.create_collection(CATALOG, schema=catalog_schema())
        except Exception:
            if not self._client.has_collection(CATALOG):  # not another client's at once
                raise
            return
        self._index_and_load(CATALOG, [(mt.PAD, "FLAT", "L2", {})])

    def _get_catalog_row(self, pk: str) -> str | None:
        return get_row(self._client, pk)

    def _put_catalog_row(self, pk: str, table: str, text: str) -> None:
        put_row(self._client, pk, table, text)

    def _delete_catalog_row(self, pk: str) -> None:
        delete_row(self._client, pk)

    def _describe(self, name: str) -> Described:
        """The committed description of ``name`` (TableNotFound if there is no such table)."""
        from pymilvus.exceptions import MilvusException

        check_name(name, "table name")
        for _ in range(5):  # a commit may switch the alias between the two reads
            try:
                physical = self._client.describe_alias(name)["collection_name"]
            except MilvusException:
                raise TableNotFound(f"table {name!r} does not exist in {self._target.display}"
                                    ) from None
            with translate(name, "reading the description"):
                text = self._get_catalog_row(physical)
            if text is not None:
                if physical not in self._loaded:
                    with translate(name, "loading"):
                        self._client.load_collection(physical)
                    self._loaded.add(physical)
                return parse_description(name, physical, text)
            time.sleep(0.01)
        raise StoreError(f"table {name!r}: its collection has no description in {CATALOG}")

    def _save_description(self, physical: str, info: TableInfo,
                          indexes: dict[str, dict[str, Any]]) -> None:
        self._put_catalog_row(physical, info.name, describe_text(info, indexes))

    def table_info(self, name: str) -> TableInfo:
        return self._describe(name).info

    def _description_token(self, name: str) -> object | None:
        """The collection the alias points at and when its description row was written: a
        commit either switches the alias or rewrites that row."""
        from pymilvus.exceptions import MilvusException

        check_name(name, "table name")
        try:
            physical = self._client.describe_alias(name)["collection_name"]
        except MilvusException:
            raise TableNotFound(f"table {name!r} does not exist in {self._target.display}"
                                ) from None
        with translate(name, "reading the description version"):
            stamp = get_stamp(self._client, physical)
        return None if stamp is None else (physical, stamp)

    def _aliases(self) -> list[str]:
        with translate(CATALOG, "listing tables"):
            return sorted(self._client.list_aliases().get("aliases", []))

    def list_tables(self) -> list[str]:
        return [a for a in self._aliases() if not a.startswith("_kindred")]

    def _hidden_tables(self) -> list[str]:
        return [a for a in self._aliases()
                if a.startswith("_kindred") and not a.startswith("_kindred_lock_")]

    # ------------------------------------------------------------------ collections
    def _index_and_load(self, physical: str, specs: list[tuple[str, str, str, dict]]) -> None:
        for fld, index_type, metric, params in specs:
            ip = self._client.prepare_index_params()
            ip.add_index(fld, index_type=index_type, metric_type=metric, index_name=fld,
                         params=params)
            self._client.create_index(physical, ip, sync=False)
        self._client.load_collection(physical)
        self._loaded.add(physical)

    def _new_collection(self, info: TableInfo, indexes: dict[str, dict[str, Any]]) -> str:
        """Create an empty, loaded collection for ``info`` (not yet any table's)."""
        from pymilvus import DataType, MilvusClient

        physical = f"{info.name}{PHYSICAL}{secrets.token_hex(32)}"
        with translate(info.name, "creating a collection"):  # first: optimize can find it
            self._save_description(physical, info, indexes)
        schema = MilvusClient.create_schema(auto_id=info.key is None, enable_dynamic_field=False)
        if info.key is None:
            schema.add_field(mt.ROW_ID, DataType.INT64, is_primary=True, auto_id=True)
        specs: list[tuple[str, str, str, dict]] = []
        for f in info.schema:
            if f.name == info.key:
                dtype, kw = mt.key_field(info.name, f)
                schema.add_field(f.name, getattr(DataType, dtype), is_primary=True, **kw)
                continue
            vec = info.vectors.get(f.name)
            dtype, kw = mt.milvus_field(info.name, f, vector=vec is not None)
            if "element_type" in kw:
                kw["element_type"] = getattr(DataType, kw["element_type"])
            if vec is not None:
                schema.add_field(f.name, DataType.FLOAT_VECTOR, **kw)
                schema.add_field(mt.has_field(f.name), DataType.BOOL)
                ix = indexes.get(f.name) or {"index_type": "FLAT", "params": {}}
                specs.append((f.name, ix["index_type"], _METRIC[vec.metric], ix.get("params", {})))
            else:
                schema.add_field(f.name, getattr(DataType, dtype), nullable=True, **kw)
                if f.name in indexes:
                    specs.append((f.name, "INVERTED", "", {}))
        if not info.vectors:
            schema.add_field(mt.PAD, DataType.FLOAT_VECTOR, dim=mt.PAD_DIM)
            specs.append((mt.PAD, "FLAT", "L2", {}))
        with translate(info.name, "creating a collection"):
            self._client.create_collection(physical, schema=schema)
            try:
                self._index_and_load(physical, specs)
            except BaseException:
                self._drop_collection(physical)
                raise
        return physical

    def _drop_collection(self, physical: str) -> None:
        with contextlib.suppress(Exception):
            self._client.drop_collection(physical)
        with contextlib.suppress(Exception):
            self._delete_catalog_row(physical)

    def _retire(self, physical: str) -> None:
        """Drop a collection no alias points at any more, once this process stops reading it."""
        if self._readers.get(physical):
            self._retired.add(physical)
        else:
            self._drop_collection(physical)

    def _insert(self, name: str, physical: str, info: TableInfo, table: pa.Table,
                lock: CommitLock | None = None) -> None:
        for start in range(0, table.num_rows, _INSERT_ROWS):
            rows = mt.to_rows(info, table.slice(start, _INSERT_ROWS))
            with translate(name, "writing rows"):
                self._client.insert(physical, rows)
            if lock is not None:
                lock.renew()

    def _lock(self, name: str) -> CommitLock:
        if self._closed:
            raise StoreError(f"{self!r} is closed")
        return CommitLock(self, name)

    # ------------------------------------------------------------------ tables
    def create_table(self, name: str, schema: pa.Schema, *, key: str | None = None,
                     vectors: Sequence[VectorColumn] = (), metadata: dict[str, Any] | None = None,
                     exist_ok: bool = False, data: Any = None) -> TableInfo:
        info = new_table_info(name, schema, key=key, vectors=vectors, metadata=metadata)
        mt.check_info(info)
        if name == CATALOG:
            raise TableExists(f"table name {name!r} is reserved by the Milvus backend")
        json.dumps(info.metadata)
        with self._lock(name):
            if name in self._aliases():
                if exist_ok and data is None:
                    return self.table_info(name)
                raise TableExists(f"table {name!r} already exists in {self._target.display}")
            physical = self._new_collection(info, {})
            try:
                if data is not None:
                    rows = list(conform(info, data, require_key=key is not None,
                                        unique_key=key is not None))
                    if rows:
                        self._insert(name, physical, info, pa.Table.from_batches(rows))
                with translate(name, "create"):
                    self._save_description(physical, info, {})
                    fault_point("commit", name)
                    change_alias(self._client, "create", name, physical)
            except BaseException:
                self._drop_collection(physical)
                raise
        fault_point("committed", name)
        return info

    def drop_table(self, name: str, *, missing_ok: bool = False) -> None:
        with self._lock(name):
            try:
                d = self._describe(name)
            except TableNotFound:
                if missing_ok:
                    return
                raise
            with translate(name, "drop"):
                change_alias(self._client, "drop", name)
            self._retire(d.physical)

    def drop_columns(self, name: str, columns: Sequence[str]) -> TableInfo:
        d = self._describe(name)
        cols = self._columns_to_drop(d.info, columns)
        if not cols:
            return d.info
        rebuild(self, name, drop=cols)
        return self.table_info(name)

    def transaction(self, name: str) -> Any:
        check_name(name, "table name")
        return MilvusTransaction(self, name)

    def _scan_partition(self, partition: Any, *, columns: Sequence[str] | None = None,
                        batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        """The table's rows ordered by key (the whole table is one partition)."""
        return self.scan(partition.table, columns=columns, batch_size=batch_size)

    # ------------------------------------------------------------------ reads
    def _expr(self, info: TableInfo, filter: FilterLike) -> str:
        f = self._bind_filter(info, filter)
        return "" if f is None else compile_filter(f, info)

    def count(self, name: str, filter: FilterLike = None) -> int:
        for attempt in range(3):  # a commit may drop the collection just described
            d = self._describe(name)
            try:
                return self._count_expr(d, self._expr(d.info, filter))
            except TableNotFound:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _count_expr(self, d: Described, expr: str) -> int:
        with translate(d.info.name, "count"):
            rows = self._client.query(d.physical, filter=expr, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def scan(self, name: str, *, columns: Sequence[str] | None = None, filter: FilterLike = None,
             batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        d = self._describe(name)
        d.info.check_columns(columns)
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise InvalidOption(f"batch_size must be a positive integer, got {batch_size!r}")
        expr = self._expr(d.info, filter)
        names = list(columns) if columns is not None else d.info.schema.names
        return self._scan_physical(d, names, expr, batch_size)

    def _scan_physical(self, d: Described, names: list[str], expr: str = "",
                       batch_size: int = _PAGE) -> Iterator[pa.RecordBatch]:
        """Rows of ``d``'s collection in primary-key order (Milvus's query iterator)."""
        fields = [d.info.schema.field(c) for c in names]
        wanted = mt.output_fields(d.info, names) or [d.info.key or mt.ROW_ID]
        self._readers[d.physical] = self._readers.get(d.physical, 0) + 1
        try:
            with translate(d.info.name, "scan"):
                it = self._client.query_iterator(d.physical, batch_size=min(batch_size, MAX_TOPK),
                                                 filter=expr, output_fields=wanted)
            try:
                while True:
                    try:
                        with translate(d.info.name, "scan"):
                            page = it.next()
                    except TableNotFound:
                        raise ConcurrentWriteError(
                            f"table {d.info.name!r} was rewritten by another writer while it "
                            "was read (its old collection is gone): read it again") from None
                    if not page:
                        break
                    if not fields:
                        yield pa.RecordBatch.from_struct_array(
                            pa.array([{}] * len(page), pa.struct([])))
                        continue
                    yield mt.from_rows(page, fields, d.info)
            finally:
                with contextlib.suppress(Exception):
                    it.close()
        finally:
            self._readers[d.physical] -= 1
            if not self._readers[d.physical] and d.physical in self._retired:
                self._retired.discard(d.physical)
                self._drop_collection(d.physical)

    def _rows_by_key(self, d: Described, keys: pa.Array) -> pa.Table:
        """The stored rows (every column) whose key is in ``keys``."""
        info, key = d.info, d.info.key
        typ = info.schema.field(key).type
        fields = list(info.schema)
        batches = []
        values = keys.to_pylist()
        for start in range(0, len(values), 1000):
            part = ", ".join(literal(v, typ) for v in values[start:start + 1000])
            with translate(info.name, "reading rows by key"):
                rows = self._client.query(d.physical, filter=f"{key} in [{part}]",
                                          output_fields=mt.output_fields(info, info.schema.names))
            if rows:
                batches.append(mt.from_rows(rows, fields, info))
        return pa.Table.from_batches(batches, schema=info.schema)

    def delete(self, name: str, filter: FilterLike) -> int:
        if filter is None:
            raise StoreError(f"delete on table {name!r} needs a filter (use drop_table or "
                             "overwrite to remove every row)")
        with self._lock(name):
            d = self._describe(name)
            expr = self._expr(d.info, filter)
            fault_point("commit", name)
            with translate(name, "delete"):
                res = self._client.delete(d.physical, filter=expr)
        fault_point("committed", name)
        return int(res.get("delete_count", 0)) if isinstance(res, dict) else len(res)

    # ------------------------------------------------------------------ search
    def search(self, name: str, query: Any, *, k: int = 10, vector_column: str | None = None,
               filter: FilterLike = None, columns: Sequence[str] | None = None,
               exact: bool = False, params: dict[str, Any] | None = None) -> pa.Table:
        for attempt in range(3):  # a commit may drop the collection just described
            try:
                return search(self, name, query, k=k, vector_column=vector_column,
                              filter=filter, columns=columns, exact=exact, params=params,
                              accepted=_SEARCH_PARAMS)
            except TableNotFound:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ indexes
    def create_vector_index(self, name: str, column: str | None = None, *,
                            index_type: str | None = None, replace: bool = True,
                            **params: Any) -> None:
        create_vector_index(self, name, column, index_type=index_type, replace=replace,
                            **params)

    def create_scalar_index(self, name: str, column: str, *, replace: bool = True) -> None:
        """An INVERTED index; the key needs none (Milvus indexes its primary key itself), so
        that one is only recorded."""
        create_scalar_index(self, name, column, replace=replace)

    def list_indexes(self, name: str) -> list[IndexInfo]:
        d = self._describe(name)
        return [IndexInfo(name=f"{c}_idx", columns=(c,), index_type=ix["index_type"],
                          vector=c in d.info.vectors) for c, ix in sorted(d.indexes.items())]

    def prewarm(self, name: str) -> None:
        d = self._describe(name)
        with translate(name, "loading"):
            self._client.load_collection(d.physical)

    def optimize(self, name: str) -> None:
        """Compact the collection, drop collections of failed steps older than the grace
        period, and sweep unreferenced content-addressed artifacts."""
        d = self._describe(name)
        with translate(name, "optimize"):
            self._client.flush(d.physical)
            self._client.compact(d.physical)
        self.sweep_collections(name)
        if name != ARTIFACT_TABLE:
            self.sweep_artifacts()

    def sweep_collections(self, name: str, *, grace: Any = ARTIFACT_GRACE) -> list[str]:
        """Drop ``name``'s collections that no alias points at (left by a killed step) and
        that are older than ``grace``; returns their names."""
        return sweep_collections(self, name, grace=grace)

    def versions(self, name: str) -> Any:
        raise UnsupportedOperation(
            "the Milvus backend keeps no table versions: each step replaces the collection "
            "behind the table's alias, and the old one is dropped (versions/restore need "
            "LanceDB)")

    version = versions
    data_version = versions

    def restore(self, name: str, version: int) -> None:
        self.versions(name)

    def stage_partition(self, partition: Any, data: Any, *, rows: Any = None,
                        info: Any = None) -> Any:
        raise UnsupportedOperation(
            "the Milvus backend has no partitions another process can stage: a table is one "
            "collection, written in one commit from the transaction (use tx.stage; distributed "
            "runners need LanceDB)")

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            self._client.close()
        release_lite(self._target)
