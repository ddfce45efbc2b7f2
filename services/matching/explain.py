"""Why a prospect was picked: its nearest current consumers and what it shares with them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel

from ingest.freshness import is_derived
from vectorstore import Metric, VectorStore
from vectorstore.filters import Cmp, Has, Not, all_of

from ..errors import MatchingError, NotEnoughData
from ._data import CUSTOMER_KEY, CUSTOMERS, HOLDINGS, resolve_column, vector_matrix


class Neighbour(BaseModel):
    customer_id: str
    similarity: float
    shared: dict[str, Any]


class Explanation(BaseModel):
    """The customer's nearest consumers of the product and the attributes they share."""

    customer_id: str
    product: str
    vector_column: str
    metric: str
    holds_product: bool
    neighbours: list[Neighbour]
    shared_counts: dict[str, int]
    """attribute -> how many of the neighbours share the customer's value."""


def _attributes(schema: pa.Schema, vectors: set[str]) -> list[str]:
    out = []
    for f in schema:
        t = f.type
        if (f.name == CUSTOMER_KEY or f.name in vectors or is_derived(f.name)
                or pa.types.is_list(t) or pa.types.is_large_list(t)
                or pa.types.is_fixed_size_list(t) or pa.types.is_binary(t)):
            continue
        out.append(f.name)
    return out


def _same(a: Any, b: Any, tolerance: float) -> bool:
    if a is None or b is None:
        return False
    if isinstance(a, bool) or isinstance(b, bool) or not isinstance(a, int | float):
        return a == b
    return abs(a - b) <= tolerance * max(abs(a), abs(b), 1e-12)


def explain(store: VectorStore, customer_id: str, product: str, *,
            vector_column: str | None = None, k: int = 5,
            attributes: Sequence[str] | None = None, numeric_tolerance: float = 0.1,
            table: str = CUSTOMERS, exact: bool = True) -> Explanation:
    """The ``k`` consumers of ``product`` nearest to ``customer_id`` in ``vector_column``.

    An attribute is shared when the values are equal (text, categories, booleans) or within
    ``numeric_tolerance`` relative difference (numbers). ``attributes`` defaults to every
    scalar column except the key and derived columns.
    """
    info = store.table_info(table)
    column = resolve_column(info, vector_column)
    attrs = list(attributes) if attributes is not None else _attributes(info.schema,
                                                                        set(info.vectors))
    info.check_columns([CUSTOMER_KEY, HOLDINGS, *attrs])
    me = store.to_arrow(table, columns=[CUSTOMER_KEY, HOLDINGS, column, *attrs],
                        filter=Cmp(CUSTOMER_KEY, "=", customer_id))
    if me.num_rows == 0:
        raise MatchingError(f"table {table!r} has no customer {customer_id!r}")
    if me.column(column).null_count:
        raise MatchingError(f"customer {customer_id!r} has no {column!r} vector yet")
    v = vector_matrix(me.column(column), info.vectors[column].dim)[0]
    holds = product in (me.column(HOLDINGS)[0].as_py() or [])
    flt = all_of([Has(HOLDINGS, product), Not(Cmp(CUSTOMER_KEY, "=", customer_id))])
    if store.count(table, flt) == 0:
        raise NotEnoughData(f"product {product!r} has no other consumers to compare with")
    res = store.search(table, v, k=k, vector_column=column, filter=flt,
                       columns=[CUSTOMER_KEY, *attrs], exact=exact)
    metric = info.vectors[column].metric
    sims = (-np.asarray(res.column("distance")) if metric is Metric.L2
            else np.asarray(res.column("score")))
    mine = {a: me.column(a)[0].as_py() for a in attrs}
    neighbours = []
    counts = dict.fromkeys(attrs, 0)
    for i, row in enumerate(res.select([CUSTOMER_KEY, *attrs]).to_pylist()):
        shared = {a: row[a] for a in attrs if _same(mine[a], row[a], numeric_tolerance)}
        for a in shared:
            counts[a] += 1
        neighbours.append(Neighbour(customer_id=row[CUSTOMER_KEY], similarity=float(sims[i]),
                                    shared=shared))
    return Explanation(customer_id=customer_id, product=product, vector_column=column,
                       metric=str(metric), holds_product=holds, neighbours=neighbours,
                       shared_counts={a: c for a, c in counts.items() if c})
