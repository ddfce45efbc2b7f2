"""The module paths the store layer had before its backends became packages, kept importable.

``import vectorstore.lance_backend`` (or ``from vectorstore import pg_txn``) gives the module
at its new home (:data:`MOVED`), the same module object, so monkeypatching it still reaches
the code. A meta-path finder that answers for those names only; it goes first, so an editable
install of another checkout (whose finder maps ``vectorstore.*`` to its own files) cannot
answer with that checkout's stale files.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from types import ModuleType

MOVED = {
    "vectorstore.lance_backend": "vectorstore.lance.backend",
    "vectorstore.lance_fields": "vectorstore.lance.fields",
    "vectorstore.lance_filter": "vectorstore.lance.filter",
    "vectorstore.lance_location": "vectorstore.lance.location",
    "vectorstore.lance_parts": "vectorstore.lance.parts",
    "vectorstore.lance_stage": "vectorstore.lance.stage",
    "vectorstore.lance_txn": "vectorstore.lance.txn",
    "vectorstore.milvus_backend": "vectorstore.milvus.backend",
    "vectorstore.milvus_catalog": "vectorstore.milvus.catalog",
    "vectorstore.milvus_conn": "vectorstore.milvus.conn",
    "vectorstore.milvus_filter": "vectorstore.milvus.filter",
    "vectorstore.milvus_indexes": "vectorstore.milvus.indexes",
    "vectorstore.milvus_search": "vectorstore.milvus.search",
    "vectorstore.milvus_txn": "vectorstore.milvus.txn",
    "vectorstore.milvus_types": "vectorstore.milvus.types",
    "vectorstore.pgvector_backend": "vectorstore.pgvector.store",
    "vectorstore.pg_txn": "vectorstore.pgvector.txn",
    "vectorstore.pg_filter": "vectorstore.pgvector.filter",
}
"""Old module name -> new module name."""


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname: str, path: Sequence[str] | None = None,
                  target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """The module ran at its new home already."""


def install() -> None:
    """Add the finder once."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedFinder())
