"""The pgvector backend's search: the statement planned from the table's description, run
for every query of a call in one round trip with the description check (:mod:`.reads`), and
the rows shaped into the store's one meaning of ``score`` / ``distance``.

``search_per_statement`` is the earlier path (the description read first, then each query
in its own transaction, one round trip per statement), kept for the benchmark's comparison.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from ..base import FilterLike
from ..errors import InvalidOption
from ..schema import Metric, TableInfo, VectorColumn
from .decode import _decode_column
from .reads import Read

if TYPE_CHECKING:
    from .store import PgVectorStore

SEARCH_PARAMS = {"ef_search", "ef", "probes"}
OPS = {Metric.COSINE: "<=>", Metric.DOT: "<#>", Metric.L2: "<->"}


def _vector_literal(q: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in q.tolist()) + "]"


@dataclass(frozen=True)
class SearchPlan:
    """One search call planned from a description: its statement and each query's arguments."""

    vec: VectorColumn
    many: bool
    fields: list[pa.Field]
    stmt: sql.Composed
    count_stmt: sql.Composed
    wparams: list[Any]
    args: list[list[Any]]
    settings: dict[str, str]
    exact: bool
    filtered: bool
    k: int


def plan_search(store: PgVectorStore, info: TableInfo, query: Any, k: int,
                vector_column: str | None, filter: FilterLike, columns: Sequence[str] | None,
                exact: bool, params: dict[str, Any] | None) -> SearchPlan:
    """Check the call against ``info`` and build its statement (raises what search raises)."""
    vec, q, params = store._check_search(info, query, k, vector_column, params, SEARCH_PARAMS)
    settings = search_settings(params, k)
    if columns is None:
        columns = [c for c in info.schema.names if c not in info.vectors]
    info.check_columns(columns)
    f = store._bind_filter(info, filter)
    where, wparams = (sql.SQL(""), []) if f is None else store._where(info, f)
    fields = [info.schema.field(c) for c in columns]
    table = store._ident(info.name)
    dist = sql.SQL("{} {} %s::vector").format(sql.Identifier(vec.name), sql.SQL(OPS[vec.metric]))
    select = sql.SQL(", ").join([*map(sql.Identifier, columns), dist])
    stmt = (sql.SQL("SELECT {} FROM {}").format(select, table) + where
            + sql.SQL(" ORDER BY {} LIMIT %s").format(dist))
    count_stmt = sql.SQL("SELECT count(*) FROM {}").format(table) + where
    many = q.ndim == 2
    args = []
    for one in (list(q) if many else [q]):
        lit = _vector_literal(one)
        args.append([lit, *wparams, lit, k])
    return SearchPlan(vec, many, fields, stmt, count_stmt, wparams, args, settings, exact,
                      f is not None, k)


def search_settings(params: dict[str, Any], k: int) -> dict[str, str]:
    out: dict[str, str] = {}
    ef = params.get("ef_search", params.get("ef"))
    if ef is not None and (not isinstance(ef, int) or isinstance(ef, bool) or ef <= 0):
        raise InvalidOption(f"ef_search must be a positive integer, got {ef!r}")
    # HNSW returns at most ef_search rows: never ask for fewer than k
    out["hnsw.ef_search"] = str(min(max(ef or 40, k), 1000))
    if "probes" in params:
        probes = params["probes"]
        if not isinstance(probes, int) or isinstance(probes, bool) or probes <= 0:
            raise InvalidOption(f"probes must be a positive integer, got {probes!r}")
        out["ivfflat.probes"] = str(probes)
    return out


def _local_settings(store: PgVectorStore, settings: dict[str, str], exact: bool,
                    filtered: bool) -> dict[str, str]:
    local = dict(settings)
    if exact:
        local["enable_indexscan"] = "off"
        local["enable_bitmapscan"] = "off"
    elif filtered and store._iterative:
        local["hnsw.iterative_scan"] = "strict_order"
        local["ivfflat.iterative_scan"] = "relaxed_order"
    return local


def run_search(store: PgVectorStore, conn: psycopg.Connection, stmt: sql.Composed,
               args: list[Any], settings: dict[str, str], exact: bool, filtered: bool
               ) -> list[tuple]:
    """One query in its own transaction, its settings local to it."""
    with conn.transaction():
        for key, value in _local_settings(store, settings, exact, filtered).items():
            conn.execute("SELECT set_config(%s, %s, true)", [key, value])
        cur = store._cursor(conn)
        cur.execute(stmt, args)
        return cur.fetchall()


def search_read(store: PgVectorStore, plan: SearchPlan) -> Read[pa.Table]:
    """The :mod:`.reads` form of a search: its settings, then every query's statement (one
    round trip for them all); the answer tops up the queries short of ``k``."""
    local = _local_settings(store, plan.settings, plan.exact, plan.filtered)
    setup = sql.SQL("SELECT {}").format(sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, true)").format(sql.Literal(k), sql.Literal(v))
        for k, v in local.items()))

    def finish(conn: psycopg.Connection, rows: list[list[tuple]]) -> pa.Table:
        pieces = list(enumerate(rows))
        if not plan.exact and any(len(r) < plan.k for r in rows):
            pieces = _top_up(store, conn, plan, pieces)
        return shape(pieces, plan.fields, plan.vec, plan.many)

    return Read([(plan.stmt, args) for args in plan.args], finish, setup)


def _top_up(store: PgVectorStore, conn: psycopg.Connection, plan: SearchPlan,
            pieces: list[tuple[int, list[tuple]]]) -> list[tuple[int, list[tuple]]]:
    """The index ran out of candidates (a selective filter, or k above the largest
    ef_search of 1000): exact search for the queries short of k when more rows match (on
    the read's connection, its pipeline done)."""
    counted = conn.execute(plan.count_stmt, plan.wparams).fetchone()
    assert counted is not None  # count(*) returns one row
    out = []
    for i, rows in pieces:
        if len(rows) < plan.k and counted[0] > len(rows):
            rows = run_search(store, conn, plan.stmt, plan.args[i], plan.settings, True, True)
        out.append((i, rows))
    return out


def search_per_statement(store: PgVectorStore, plan: SearchPlan, name: str) -> pa.Table:
    """The earlier path: each query in its own transaction, one round trip per statement."""
    pieces = []
    with store._translate(name, "search"), store._connection() as conn:
        for i, args in enumerate(plan.args):
            rows = run_search(store, conn, plan.stmt, args, plan.settings, plan.exact,
                              plan.filtered)
            if not plan.exact and len(rows) < plan.k:
                counted = conn.execute(plan.count_stmt, plan.wparams).fetchone()
                assert counted is not None  # count(*) returns one row
                if counted[0] > len(rows):
                    rows = run_search(store, conn, plan.stmt, args, plan.settings, True, True)
            pieces.append((i, rows))
    return shape(pieces, plan.fields, plan.vec, plan.many)


def shape(pieces: list[tuple[int, list[tuple]]], fields: list[pa.Field], vec: VectorColumn,
          many: bool) -> pa.Table:
    rows = [r for _, rs in pieces for r in rs]
    ncol = len(fields)
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in range(ncol + 1)]
    arrays = [_decode_column(list(c), f) for c, f in zip(cols[:ncol], fields, strict=True)]
    d = np.asarray(cols[ncol], dtype=np.float64)
    if vec.metric is Metric.COSINE:
        d = 1.0 - d
    elif vec.metric is Metric.DOT:
        d = -d
    names = [f.name for f in fields]
    out = pa.table([*arrays, pa.array(d, pa.float64())],
                   names=[*names, vec.metric.result_column])
    if many:
        qi = np.repeat([i for i, _ in pieces], [len(rs) for _, rs in pieces]).astype(np.int64)
        out = out.append_column("query_index", pa.array(qi, pa.int64()))
    return out
