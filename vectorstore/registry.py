"""URI scheme -> backend class, imported lazily (in the spirit of fsspec's registry).

``connect("path/to/dir")`` and ``connect("lance://path")`` open embedded LanceDB,
``connect("memory://")`` an in-memory LanceDB, ``connect("postgresql://...")`` PostgreSQL with
pgvector, ``connect("milvus://file.db")`` Milvus Lite on a local file and
``connect("milvus://host:port")`` a Milvus server. Other packages add schemes with
:func:`register_backend`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from .base import VectorStore
from .dsn import check_location, scheme_of_text
from .errors import BackendUnavailable


@dataclass(frozen=True)
class BackendSpec:
    target: str
    """``module:Class`` of the backend."""
    extra: str | None = None
    """The ``pip install kindred[extra]`` that provides its dependencies."""


_REGISTRY: dict[str, BackendSpec] = {
    "lance": BackendSpec("vectorstore.lance.backend:LanceStore"),
    "memory": BackendSpec("vectorstore.lance.backend:LanceStore"),
    "file": BackendSpec("vectorstore.lance.backend:LanceStore"),
    "s3": BackendSpec("vectorstore.lance.backend:LanceStore"),
    "gs": BackendSpec("vectorstore.lance.backend:LanceStore"),
    "az": BackendSpec("vectorstore.lance.backend:LanceStore"),
    "postgresql": BackendSpec("vectorstore.pgvector.store:PgVectorStore", extra="pgvector"),
    "postgres": BackendSpec("vectorstore.pgvector.store:PgVectorStore", extra="pgvector"),
    "milvus": BackendSpec("vectorstore.milvus.backend:MilvusStore", extra="milvus"),
}


def register_backend(scheme: str, target: str, *, extra: str | None = None,
                     replace: bool = False) -> None:
    """Map a URI scheme to ``"module:Class"`` (a :class:`VectorStore` subclass)."""
    scheme = scheme.lower()
    if scheme in _REGISTRY and not replace:
        raise ValueError(f"scheme {scheme!r} is already registered to {_REGISTRY[scheme].target}")
    _REGISTRY[scheme] = BackendSpec(target, extra)


def known_schemes() -> list[str]:
    return sorted(_REGISTRY)


def scheme_of(uri: str) -> str:
    """The registry key for a URI: its scheme, or ``lance`` for a plain path.

    A location that is neither a URI nor a plausible path (a keyword connection string such as
    ``host=db password=...``) is refused with :class:`InvalidLocation` (see
    :func:`vectorstore.dsn.check_location`): it must never become a directory.
    """
    check_location(uri)
    # a Windows drive letter ("C:\\x") is a one-letter scheme: that is a path
    return scheme_of_text(uri).split("+", 1)[0] or "lance"


def backend_class(uri: str) -> type[VectorStore]:
    scheme = scheme_of(uri)
    spec = _REGISTRY.get(scheme)
    if spec is None:
        raise BackendUnavailable(
            f"no backend for URI scheme {scheme!r}; known schemes: {', '.join(known_schemes())} "
            "(or a plain directory path for embedded LanceDB)"
        )
    module_name, _, cls_name = spec.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f": install it with pip install 'kindred[{spec.extra}]'" if spec.extra else ""
        raise BackendUnavailable(
            f"the {scheme!r} backend needs a package that is not installed ({exc.name}){hint}"
        ) from exc
    return getattr(module, cls_name)


def connect(uri: str, **options: Any) -> VectorStore:
    """Open the store at ``uri`` with backend-specific ``options`` (unknown ones are an error)."""
    if not isinstance(uri, str) or not uri.strip():
        raise BackendUnavailable(f"store URI must be a non-empty string, got {uri!r}")
    cls = backend_class(uri)
    try:
        return cls.open(uri, **options)  # type: ignore[attr-defined]
    except OSError as exc:  # a directory that cannot be created or read
        from .dsn import redact_location

        raise BackendUnavailable(f"cannot open the store at {redact_location(uri)}: "
                                 f"{exc.strerror or type(exc).__name__}") from exc
