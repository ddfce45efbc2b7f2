"""Kindred's one error tree, rooted here because every layer imports the store.

::

    KindredError                      catch this to catch anything Kindred raises on purpose
    ├── StoreError                    vectorstore: tables, filters, artifacts, backends
    │   ├── BackendUnavailable ── InvalidLocation
    │   ├── TableNotFound, TableExists, ColumnNotFound, KeyConflict, InvalidName, ...
    │   ├── SchemaMismatch ── DimensionMismatch
    │   ├── ArtifactNotFound
    │   ├── ArtifactCorrupt ── ArtifactUnauthenticated, ArtifactUntrusted,
    │   │                      ModelIntegrityError (ingest and services)
    │   └── ConcurrentWriteError
    ├── IngestError                   ingest: sources, mapping, validation, consolidation
    │   └── EmbeddingError            embedders (UnknownColumnError, ModelNotFoundError, ...)
    └── ServiceError                  services: matching, risk, evaluation, facade
        ├── MatchingError, RiskError (ModelNotFound, ...), EvaluationError, ...
        └── StoreMissing

The store layer's errors: every backend translates its native exceptions into these, chaining the original as
``__cause__``, so callers catch one family whatever the backend. Messages name the table,
column and value involved.
"""

from __future__ import annotations

import re


class KindredError(Exception):
    """Root of every error Kindred raises on purpose (the tree is drawn above). The CLI
    prints one line for these and exits non-zero; anything else is a bug."""


class StoreError(KindredError):
    """Base class of every error raised by :mod:`vectorstore`."""


class BackendUnavailable(StoreError):
    """The backend for a URI cannot be used: unknown scheme, missing extra, server unreachable."""


class InvalidOption(StoreError, TypeError):
    """An option given to :func:`vectorstore.connect` or a call is unknown or has a bad value."""


class InvalidName(StoreError, ValueError):
    """A table or column name is not a plain identifier."""


class TableNotFound(StoreError, KeyError):
    """The named table does not exist."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "table not found"


class TableExists(StoreError):
    """A table of that name already exists."""


class ColumnNotFound(StoreError, KeyError):
    """A column named in a call is not in the table's schema."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "column not found"


class SchemaMismatch(StoreError, ValueError):
    """Data does not fit the table's schema (missing column, type that cannot be cast)."""


class DimensionMismatch(SchemaMismatch):
    """A vector has the wrong number of dimensions for its column."""


class InvalidFilter(StoreError, ValueError):
    """A filter is malformed or names columns or values that do not fit the schema."""


class KeyConflict(StoreError, ValueError):
    """A write would break the key: a missing or duplicate key value."""


class UnsupportedOperation(StoreError, NotImplementedError):
    """The backend does not support this operation (see its capability flags)."""


class ArtifactNotFound(StoreError, KeyError):
    """No artifact (fitted model, transform) is stored under that name."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "artifact not found"


class ArtifactCorrupt(StoreError):
    """A stored artifact does not match its recorded sha256."""


class ConcurrentWriteError(StoreError):
    """Another writer changed the table in a way this step cannot be rebuilt on (the same
    column of the same rows, a compaction of the rows it staged, the same new column or
    key); nothing was written. Re-run the step."""


class InvalidLocation(BackendUnavailable, ValueError):
    """A store location is neither a URI of a known shape nor a plausible directory path."""


class ArtifactUnauthenticated(ArtifactCorrupt):
    """``KINDRED_ARTIFACT_KEY`` is set and an artifact's HMAC is missing or does not match."""


class ArtifactUntrusted(ArtifactCorrupt):
    """A stored model refers to a type outside the allow-list of its kind: never loaded."""


class KindredWarning(UserWarning):
    """A warning the CLI shows as one ``Warning:`` line (a cache rebuilt, a sample taken)."""


class ArtifactRebuilt(KindredWarning):
    """A stored artifact (a cache) was missing, stale or unreadable and was rebuilt."""


_RUST_LOCATION = re.compile(r"(?:,\s*|\s+at\s+|\s*\()?(?:[A-Za-z]:)?(?:[/\\][^\s,:()]+)+\.rs:\d+(?::\d+)?\)?")
_NATIVE_PREFIX = re.compile(r"\b(?:LanceError|lance error|DataFusion error|External error|"
                            r"Arrow error)\s*\(\w+\)\s*:\s*|\bLanceError\(\w+\):\s*", re.I)


def native_free(message: str) -> str:
    """A native (Rust/Lance/DataFusion) error message fit for users: source paths such as
    ``/root/.cargo/registry/src/.../commit.rs:128:5`` and ``LanceError(IO):`` prefixes
    removed, whitespace collapsed. The original stays on the exception's ``__cause__``."""
    text = _RUST_LOCATION.sub("", message or "")
    text = _NATIVE_PREFIX.sub("", text)
    return re.sub(r"\s+", " ", text).strip(" ,;")
