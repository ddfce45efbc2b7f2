"""One error tree for the ingest package (sources, validation, consolidation, embedders)."""

from __future__ import annotations

from vectorstore.errors import ArtifactCorrupt, KindredError


class IngestError(KindredError):
    """Base class of every error raised by :mod:`ingest`."""


class SourceError(IngestError):
    """A source cannot be read: missing file, unknown kind, malformed content."""


class MappingError(IngestError):
    """A mapping (TOML file or options) is invalid."""


class ValidationError(IngestError):
    """A row does not fit the target table: names source, row, column, value and expectation."""


class SchemaEvolutionError(IngestError):
    """A load would change a column's type in a way that loses data."""


class ConsolidationError(IngestError):
    """Events cannot be consolidated into customer features."""


class EmbeddingError(IngestError):
    """An embedder cannot fit or transform: unknown column, empty input, model problem."""


class ModelIntegrityError(EmbeddingError, ArtifactCorrupt):
    """Model weights or fitted state do not match their recorded checksum or versions."""


class RunnerError(IngestError):
    """The execution runner cannot start (Ray not installed or unreachable) or lost a worker."""
