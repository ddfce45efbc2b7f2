"""Helpers every part of the facade shares: column-name resolution, table checks, progress
adapters, finite-number checks and the JSON-friendly view of a result.

Module functions over the facade's store (not methods of a mixin), so each concern module of
:mod:`services.facade` takes only what it uses and mypy sees every attribute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from pydantic import BaseModel

from ingest.progress import for_step
from vectorstore import VectorStore

from .. import admin
from ..errors import ServiceError

PREFERRED_VECTORS = ("vec_combined", "vec_tabular", "vec_behavior", "vec_text")


def default_vector_column(store: VectorStore, table: str) -> str | None:
    """The vector column used when a call names none: the only one, else the first of
    vec_combined, vec_tabular, vec_behavior, vec_text that exists (None if no vectors)."""
    vectors = store.table_info(table).vectors
    if len(vectors) <= 1:
        return next(iter(vectors), None)
    for name in PREFERRED_VECTORS:
        if name in vectors:
            return name
    return None


def named(store: VectorStore, table: str, names: Sequence[str] | None) -> list[str] | None:
    """Column names as the user gave them (source names too, e.g. ``ZIP Code``) -> the
    table's columns (:func:`ingest.names.resolve_column`); unknown names pass through
    for the step's own error."""
    from ingest.names import resolve_columns

    if not names or not store.has_table(table):
        return list(names) if names is not None else None
    info = store.table_info(table)
    return resolve_columns(info.schema.names, info.metadata, list(names))


def named_one(store: VectorStore, table: str, name: str) -> str:
    return (named(store, table, [name]) or [name])[0]


def require_table(store: VectorStore, name: str, hint: str) -> None:
    if not store.has_table(name):
        raise ServiceError(f"the store at {admin.store_uri(store)} has no {name!r} table: "
                           f"{hint}")


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


_for_step = for_step
"""The ``(done, total)`` callback the lower layers take, reporting as ``step``."""


def _plain(obj: Any) -> dict[str, Any]:
    """A dataclass or pydantic result as a JSON-friendly dict."""
    import dataclasses
    import json

    if isinstance(obj, BaseModel):
        d = obj.model_dump(mode="json")
    elif dataclasses.is_dataclass(obj):
        d = dataclasses.asdict(cast(Any, obj))  # an instance: results are never classes
    else:
        d = dict(vars(obj))
    return json.loads(json.dumps(d, default=str))


def _missing(feature: str, module: str) -> ServiceError:
    return ServiceError(f"{feature} is not available: the {module} module is not installed "
                        "in this version of Kindred")


def open_uri(uri: str, *, create: bool) -> VectorStore:
    """The store at ``uri``. Without ``create``, a local path must hold a store already: an
    existing directory that is empty (``kindred init``) or holds LanceDB tables; anything else
    (a missing path, a file, a directory of other files: a typo, or the data folder) is
    ``StoreMissing``. Other backends (PostgreSQL, Milvus, S3, memory) are opened as given."""
    from ..errors import StoreMissing

    path = admin.local_path(uri)
    if not create and path is not None and not _holds_store(path):
        what = ("does not exist" if not path.exists() else "is not a directory"
                if not path.is_dir() else "holds no Kindred store (no LanceDB tables)")
        raise StoreMissing(f"no Kindred store at {path}: it {what}; create one with "
                           "`kindred init` or Kindred(uri, create=True), or point --store / "
                           "KINDRED_STORE at an existing one")
    return admin.open_store(uri, must_exist=False)


def _holds_store(path: Any) -> bool:
    if not path.is_dir():
        return False
    entries = list(path.iterdir())
    return not entries or any(e.name.endswith(".lance") for e in entries)
