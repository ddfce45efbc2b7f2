"""The names and small helpers the facade (:mod:`services.facade`) and its body modules
(``services.facade_*``) share: table names, keys, the preferred vector columns, progress
per step, JSON-friendly results, the finite-number and freshness checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from vectorstore import VectorStore

from .admin import Progress
from .errors import ServiceError

if TYPE_CHECKING:
    from .facade import Kindred

PREFERRED_VECTORS = ("vec_combined", "vec_tabular", "vec_behavior", "vec_text")
CUSTOMERS = "customers"
EVENTS = "events"
PRODUCTS = "products"
KEYS = {"customers": "customer_id", "events": "event_id", "products": "product_id"}


def _check_fresh(store: VectorStore, table: str, column: str | None,
                 output: str | None = None) -> None:
    """One warning line when the derived column a command reads has stale or empty rows."""
    from ingest.freshness import check_fresh

    check_fresh(store, table, column, output)


def _finite(**values: Any) -> None:
    """ServiceError naming the first option that is NaN or infinite (never silently used)."""
    import math

    for name, v in values.items():
        if isinstance(v, float) and not math.isfinite(v):
            raise ServiceError(f"{name} must be a finite number, got {v!r}")


def _for_step(progress: Progress | None, step: str) -> Any:
    """The ``(done, total)`` callback the lower layers take, reporting as ``step``."""
    if progress is None:
        return None
    return lambda done, total: progress(step, done, total)


def _plain(obj: Any) -> dict[str, Any]:
    """A dataclass or pydantic result as a JSON-friendly dict."""
    import dataclasses
    import json

    if isinstance(obj, BaseModel):
        d = obj.model_dump(mode="json")
    elif dataclasses.is_dataclass(obj):
        d = dataclasses.asdict(obj)
    else:
        d = dict(vars(obj))
    return json.loads(json.dumps(d, default=str))


def _missing(feature: str, module: str) -> ServiceError:
    return ServiceError(f"{feature} is not available: the {module} module is not installed "
                        "in this version of Kindred")


def default_vector_column(self: Kindred, table: str) -> str | None:
    """The body of :meth:`Kindred.default_vector_column`."""
    vectors = self._store.table_info(table).vectors
    if len(vectors) <= 1:
        return next(iter(vectors), None)
    for name in PREFERRED_VECTORS:
        if name in vectors:
            return name
    return None


def _named(self: Kindred, table: str, names: Sequence[str] | None) -> list[str] | None:
    """The body of :meth:`Kindred._named`."""
    from ingest.names import resolve_columns

    if not names or not self._store.has_table(table):
        return list(names) if names is not None else None
    info = self._store.table_info(table)
    return resolve_columns(info.schema.names, info.metadata, list(names))
