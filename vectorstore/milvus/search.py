"""Nearest-neighbour search on the Milvus backend, with the store's one meaning of scores.

Milvus returns cosine similarity and inner product as they are (``score``) and the
*squared* Euclidean distance for L2 (its square root is the ``distance``). Rows without a
vector are left out by their has-a-vector flag. ``exact=True`` on a column with an ANN index
scores the matching rows here with numpy (a FLAT column is already exact on the server); an
ANN query that returns fewer than ``k`` rows while more match (a selective filter) is
answered exactly too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from ..errors import InvalidOption
from ..schema import Metric, TableInfo, VectorColumn
from . import types as mt
from .conn import translate
from .filter import compile_filter

if TYPE_CHECKING:
    from .backend import MilvusStore
    from .catalog import Described

_METRIC = {Metric.COSINE: "COSINE", Metric.DOT: "IP", Metric.L2: "L2"}
MAX_TOPK = 16_384


def _search_params(vec: VectorColumn, index: dict[str, Any] | None, params: dict[str, Any],
                   k: int) -> dict[str, Any]:
    for key, value in params.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise InvalidOption(f"search parameter {key} must be a positive integer, got {value!r}")
    inner: dict[str, Any] = {}
    kind = (index or {}).get("index_type", "FLAT")
    if kind == "HNSW":
        inner["ef"] = max(params.get("ef", 64), k)
    elif kind.startswith("IVF"):
        nlist = int((index or {}).get("params", {}).get("nlist", 1))
        default = min(nlist, max(16, nlist // 4))
        inner["nprobe"] = min(nlist, params.get("nprobe", params.get("nprobes", default)))
    return {"metric_type": _METRIC[vec.metric], "params": inner}


def _scores(vec: VectorColumn, raw: np.ndarray | list[float]) -> np.ndarray:
    raw = np.asarray(raw, dtype=np.float64)
    return np.sqrt(np.maximum(raw, 0.0)) if vec.metric is Metric.L2 else raw


def _exact(store: MilvusStore, d: Described, vec: VectorColumn, q: np.ndarray, expr: str,
           k: int, columns: list[str]) -> list[tuple[pa.Table, np.ndarray]]:
    """Score every matching row with numpy: per query, its top-k rows and their scores."""
    names = list(dict.fromkeys([*columns, vec.name]))
    batches = list(store._scan_physical(d, names, expr))
    schema = pa.schema([d.info.schema.field(c) for c in names])
    rows = pa.Table.from_batches(batches, schema=schema)
    if rows.num_rows == 0:
        return [(rows.select(columns), np.zeros(0)) for _ in q]
    x = np.asarray(rows.column(vec.name).combine_chunks().flatten().to_numpy(
        zero_copy_only=False), dtype=np.float32).reshape(rows.num_rows, vec.dim)
    out = []
    for one in q:
        if vec.metric is Metric.L2:
            s = np.linalg.norm(x - one, axis=1).astype(np.float64)
            order = np.argsort(s, kind="stable")[:k]
        else:
            s = (x @ one).astype(np.float64)
            if vec.metric is Metric.COSINE:
                s = s / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(one), 1e-30)
            order = np.argsort(-s, kind="stable")[:k]
        out.append((rows.select(columns).take(pa.array(order)), s[order]))
    return out


def _ann(store: MilvusStore, d: Described, vec: VectorColumn, q: np.ndarray, expr: str,
         k: int, columns: list[str], params: dict[str, Any]) -> list[tuple[pa.Table, np.ndarray]]:
    info = d.info
    fields = [info.schema.field(c) for c in columns]
    with translate(info.name, "search"):
        hits = store._client.search(d.physical, data=[list(map(float, one)) for one in q],
                                    anns_field=vec.name, limit=k, filter=expr,
                                    output_fields=mt.output_fields(info, columns),
                                    search_params=_search_params(vec, d.indexes.get(vec.name),
                                                                 params, k))
    out = []
    for per_query in hits:
        rows = []
        for h in per_query:
            row = dict(h.get("entity") or {})
            if info.key is not None:
                row[info.key] = h[info.key]
            rows.append(row)
        table = pa.Table.from_batches([mt.from_rows(rows, fields, info)])
        out.append((table, _scores(vec, [h["distance"] for h in per_query])))
    return out


def search(store: MilvusStore, name: str, query: Any, *, k: int, vector_column: str | None,
           filter: Any, columns: Sequence[str] | None, exact: bool,
           params: dict[str, Any] | None, accepted: set[str]) -> pa.Table:
    d = store._describe(name)
    info: TableInfo = d.info
    vec, q, params = store._check_search(info, query, k, vector_column, params, accepted)
    if k > MAX_TOPK:
        raise InvalidOption(f"k={k:,} is more than Milvus returns ({MAX_TOPK:,})")
    many = q.ndim == 2
    cols = list(columns) if columns is not None else \
        [c for c in info.schema.names if c not in info.vectors]
    info.check_columns(cols)
    f = store._bind_filter(info, filter)
    guard = f"{mt.has_field(vec.name)} == true"
    expr = f"({compile_filter(f, info)}) and {guard}" if f is not None else guard
    queries = q if many else q[None, :]
    index = d.indexes.get(vec.name)
    if exact and index is not None:
        pieces = _exact(store, d, vec, queries, expr, k, cols)
    else:
        pieces = _ann(store, d, vec, queries, expr, k, cols, params)
        short = [i for i, (t, _) in enumerate(pieces) if t.num_rows < k]
        if short and index is not None and store._count_expr(d, expr) > min(
                pieces[i][0].num_rows for i in short):
            exact_rows = _exact(store, d, vec, queries[short], expr, k, cols)
            for i, piece in zip(short, exact_rows, strict=True):
                pieces[i] = piece
    tables = [t for t, _ in pieces]
    scores = np.concatenate([s for _, s in pieces]) if pieces else np.zeros(0)
    schema = pa.schema([info.schema.field(c) for c in cols])
    out = pa.concat_tables(tables) if tables else schema.empty_table()
    out = out.append_column(vec.metric.result_column, pa.array(scores, pa.float64()))
    if many:
        qi = np.repeat(np.arange(len(pieces)), [t.num_rows for t in tables]).astype(np.int64)
        out = out.append_column("query_index", pa.array(qi, pa.int64()))
    return out
