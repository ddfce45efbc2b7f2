"""The Milvus backend (Milvus Lite on a local file, or a server): collections behind aliases.

``backend`` (the store), ``txn`` (the staged transaction: one alias switch or one upsert),
``catalog`` (table descriptions), ``conn`` (URIs, clients, the commit lock, error
translation), ``types`` (Arrow <-> Milvus fields), ``filter`` (filters to Milvus
expressions), ``search`` and ``indexes``.
"""

from .backend import MilvusStore
from .txn import MilvusTransaction

__all__ = ["MilvusStore", "MilvusTransaction"]
