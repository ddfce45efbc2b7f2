"""Vector and scalar indexes, compaction and versions of LanceDB tables.

A mixin of :class:`vectorstore.lance.backend.LanceStore` (it uses the store's ``_table``,
``_dataset`` and ``_translate``; declared below so the type checker sees them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from ..base import (
    ARTIFACT_TABLE,
    IndexInfo,
    VersionInfo,
)
from ..errors import (
    InvalidOption,
    StoreError,
)
from ..faults import boundary
from ..schema import Metric

INDEX_TYPES = ("IVF_HNSW_SQ", "IVF_PQ", "IVF_FLAT", "IVF_SQ", "IVF_HNSW_PQ", "IVF_RQ")
# IVF_FLAT: exact distances inside the probed partitions, so recall depends only on nprobes;
# with sqrt(n) partitions and the default 20 probes it keeps recall@k >= 0.95 at 20k and 200k
# rows (docs/benchmarks.md) and builds fastest; IVF_HNSW_SQ missed 0.95 at 20k x 64.
DEFAULT_INDEX_TYPE = "IVF_FLAT"
MIN_ROWS_FOR_INDEX = 256
DEFAULT_MIN_NPROBES = 20
_LANCE_METRIC = {Metric.COSINE: "cosine", Metric.DOT: "dot", Metric.L2: "l2"}


class LanceIndexes:
    """Index planning and builds, index listing, prewarm, optimize, versions and restore."""

    _table: Any
    _dataset: Any
    _translate: Any
    table_info: Any
    count: Any
    sweep_artifacts: Any

    def vector_index_plan(self, name: str, column: str | None = None, *,
                          index_type: str | None = None, **params: Any) -> dict[str, Any]:
        """The checked parameters of a vector index build (the defaults filled in):
        ``column``, ``index_type``, ``metric`` (Lance's name), ``rows`` and ``params``. Shared
        by the local build and distributed builders, so both build the same index."""
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
        params = dict(params)
        if "num_partitions" not in params and index_type.startswith("IVF"):
            # ~4,000 rows a partition for HNSW-backed partitions, sqrt(n) otherwise
            per = 4096 if "HNSW" in index_type else max(int(np.sqrt(n)), 1)
            params["num_partitions"] = max(1, n // per)
        return {"column": vec.name, "index_type": index_type,
                "metric": _LANCE_METRIC[vec.metric], "rows": n, "params": params}

    def create_vector_index(self, name: str, column: str | None = None, *,
                            index_type: str | None = None, replace: bool = True,
                            **params: Any) -> None:
        plan = self.vector_index_plan(name, column, index_type=index_type, **params)
        t = self._table(name)
        with self._translate(name, "creating a vector index"), boundary(name):
            t.create_index(metric=plan["metric"], vector_column_name=plan["column"],
                           index_type=plan["index_type"], replace=replace, **plan["params"])

    def scalar_index_type(self, name: str, column: str) -> str:
        """The scalar index a column gets: LABEL_LIST for lists, BTREE otherwise."""
        info = self.table_info(name)
        info.check_columns([column])
        typ = info.schema.field(column).type
        return "LABEL_LIST" if pa.types.is_list(typ) or pa.types.is_large_list(typ) else "BTREE"

    def create_scalar_index(self, name: str, column: str, *, replace: bool = True) -> None:
        from lancedb.index import BTree, LabelList

        listed = self.scalar_index_type(name, column) == "LABEL_LIST"
        t = self._table(name)
        with self._translate(name, "creating a scalar index"), boundary(name):
            t.create_index(column, config=LabelList() if listed else BTree(), replace=replace)

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
            target = self._dataset(name, t)  # the one searches read through
            for ix in t.list_indices():
                target.prewarm_index(ix.name)

    def optimize(self, name: str) -> None:
        """Compact the table, bring its indexes up to date, and sweep unreferenced
        content-addressed artifacts (see :meth:`VectorStore.sweep_artifacts`)."""
        t = self._table(name)
        with self._translate(name, "optimize"), boundary(name):
            t.optimize()
        if name != ARTIFACT_TABLE:
            self.sweep_artifacts()

    def versions(self, name: str) -> list[VersionInfo]:
        t = self._table(name)
        with self._translate(name, "listing versions"):
            return [VersionInfo(int(v["version"]), v["timestamp"], dict(v.get("metadata", {})))
                    for v in t.list_versions()]

    def version(self, name: str) -> int:
        t = self._table(name)
        with self._translate(name, "reading the version"):
            return int(self._dataset(name, t).version)

    def restore(self, name: str, version: int) -> None:
        """Put the table's rows, schema and description (vector columns, metadata) back as
        they were at ``version`` (the description lives in the version's manifest), as a
        new version: later versions stay listed."""
        t = self._table(name)
        history = self.versions(name)
        known = {v.version for v in history}
        if version not in known:
            raise StoreError(f"table {name!r} has no version {version}; versions: "
                             f"{min(known)}..{max(known)}")
        with self._translate(name, "restore"), boundary(name):
            t.restore(version)
