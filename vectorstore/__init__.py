"""Kindred's store layer: tables of Arrow data with named vector columns, behind one interface.

Backends are chosen by URI (:func:`connect`); each passes the same conformance suite. This
package knows nothing about customers or products.
"""

from ._moved import install as _install_moved
from .base import IndexInfo, VectorStore, VersionInfo, WriteMode
from .errors import (
    ArtifactCorrupt,
    ArtifactNotFound,
    BackendUnavailable,
    ColumnNotFound,
    ConcurrentWriteError,
    DimensionMismatch,
    InvalidFilter,
    InvalidName,
    InvalidOption,
    KeyConflict,
    KindredError,
    SchemaMismatch,
    StoreError,
    TableExists,
    TableNotFound,
    UnsupportedOperation,
)
from .filters import Filter, col, parse_filter
from .names import check_name
from .prefetch import prefetch
from .registry import connect, known_schemes, register_backend
from .schema import Capabilities, Metric, TableInfo, VectorColumn
from .table import Table
from .txn import Partition, PendingWrite, StagedPartition, Transaction, WriteResult

_install_moved()  # the old flat module paths (vectorstore.lance_backend ...) still import

__all__ = [
    "ArtifactCorrupt",
    "ArtifactNotFound",
    "BackendUnavailable",
    "Capabilities",
    "ColumnNotFound",
    "ConcurrentWriteError",
    "DimensionMismatch",
    "Filter",
    "IndexInfo",
    "InvalidFilter",
    "InvalidName",
    "InvalidOption",
    "KeyConflict",
    "KindredError",
    "Metric",
    "Partition",
    "PendingWrite",
    "SchemaMismatch",
    "StagedPartition",
    "StoreError",
    "Table",
    "TableExists",
    "TableInfo",
    "TableNotFound",
    "Transaction",
    "UnsupportedOperation",
    "VectorColumn",
    "VectorStore",
    "VersionInfo",
    "WriteMode",
    "WriteResult",
    "check_name",
    "col",
    "connect",
    "known_schemes",
    "parse_filter",
    "prefetch",
    "register_backend",
]
