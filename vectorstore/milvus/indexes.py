"""Indexes and housekeeping on the Milvus backend.

A new vector index is a new collection (built with the index, filled with the rows, and
switched in behind the alias as one commit), so searches never meet a collection that is
released while its index changes. Scalar INVERTED indexes are added to the live collection.
Index definitions live in the table's description, so every later collection of the table
is built with them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidOption, StoreError
from ..store_helpers import check_index_params
from .catalog import CATALOG, PHYSICAL
from .conn import translate
from .filter import quote_string
from .txn import rebuild

if TYPE_CHECKING:
    from .backend import MilvusStore

INDEX_TYPES = ("HNSW", "IVF_FLAT", "IVF_SQ8", "FLAT")
_INDEX_PARAMS = {"HNSW": {"M", "efConstruction"}, "IVF_FLAT": {"nlist"}, "IVF_SQ8": {"nlist"},
                 "FLAT": set()}
_PARAM_ALIASES = {"m": "M", "ef_construction": "efConstruction", "num_partitions": "nlist"}


def create_vector_index(store: MilvusStore, name: str, column: str | None, *,
                        index_type: str | None, replace: bool, **params: Any) -> None:
    d = store._describe(name)
    vec = d.info.vector(column)
    params = {_PARAM_ALIASES.get(k, k): v for k, v in params.items()}
    index_type = check_index_params("Milvus", index_type, "HNSW", _INDEX_PARAMS, params)
    if vec.name in d.indexes and not replace:
        raise StoreError(f"table {name!r}: column {vec.name!r} already has an index "
                         f"({d.indexes[vec.name]['index_type']}); pass replace=True to "
                         "rebuild it")
    if index_type == "HNSW":
        params = {"M": 16, "efConstruction": 200, **params}
    elif index_type.startswith("IVF"):
        n = store.count(name)
        params = {"nlist": max(1, min(65_536, int(np.sqrt(max(n, 1))))), **params}
    rebuild(store, name, index=(vec.name, {"index_type": index_type, "params": params}))


def create_scalar_index(store: MilvusStore, name: str, column: str, *, replace: bool) -> None:
    with store._lock(name):
        d = store._describe(name)
        d.info.check_columns([column])
        if column in d.info.vectors:
            raise InvalidOption(f"table {name!r}: {column!r} is a vector column; use "
                                "create_vector_index")
        if column in d.indexes and not replace:
            raise StoreError(f"table {name!r}: column {column!r} already has an index")
        if column not in d.indexes and column != d.info.key:
            with translate(name, "creating an index"):
                store._index_and_load(d.physical, [(column, "INVERTED", "", {})])
        indexes = {**d.indexes, column: {"index_type": "INVERTED", "params": {}}}
        with translate(name, "creating an index"):
            store._save_description(d.physical, d.info, indexes)


def sweep_collections(store: MilvusStore, name: str, *, grace: Any) -> list[str]:
    """Drop ``name``'s collections that its alias does not point at and whose catalogue row
    (written before the collection is created) is older than ``grace``."""
    with store._lock(name):
        current = store._describe(name).physical
        cutoff = (time.time() - grace.total_seconds()) * 1e6
        with translate(name, "listing collections"):
            rows = store._client.query(CATALOG, filter=f"table_name == {quote_string(name)}",
                                       output_fields=["created_us"])
        doomed = sorted(r["collection"] for r in rows if PHYSICAL in r["collection"]
                        and r["collection"] != current and r["created_us"] < cutoff)
        for c in doomed:
            store._drop_collection(c)
    return doomed
