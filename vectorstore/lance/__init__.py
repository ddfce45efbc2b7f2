"""The LanceDB backend: a directory, memory or object storage (s3://, gs://, az://) of Lance
tables; fragments are the partitions, staged fragments plus one commit make a transaction.

``backend`` (the store), ``txn`` (the staged transaction and its commit), ``parts``
(partitions: scan and stage fragments), ``stage`` and ``fields`` (staged fragment files and
the Lance field ids they use), ``filter`` (filters to a quoted Lance predicate),
``location`` (object-store URIs and their secret options).
"""

from .backend import LanceStore
from .filter import compile_filter
from .txn import LanceTransaction

__all__ = ["LanceStore", "LanceTransaction", "compile_filter"]
