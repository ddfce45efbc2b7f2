"""Typed results of the facade (:class:`services.facade.Kindred`), as pydantic models.

Every model serialises with ``.model_dump(mode="json")``: that is exactly what the CLI prints
under ``--json``, so scripts and applications see the same shapes. :class:`IngestResult` is
the ingest layer's own result (:mod:`ingest.result`), re-exported here.
"""

from __future__ import annotations

import warnings
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ingest.result import IngestResult as IngestResult


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)


class VectorColumnStats(_Model):
    name: str
    dim: int
    metric: str
    embedder: str | None = None
    """Embedder kind recorded in the table metadata (tabular, text, behavior, combined)."""
    model: str | None = None
    created_at: str | None = None


class IndexState(_Model):
    name: str
    columns: list[str]
    index_type: str
    vector: bool


class DerivedColumnStats(_Model):
    """How far a derived output (a vector column, the risk scores, a propensity column, the
    recommendations) is behind its table."""

    output: str
    column: str | None
    """The column holding its values."""
    rows: int
    stale: int
    """Rows whose source changed (or that were added) after the output was written for them."""
    missing: int | None = None
    """Rows with no value at all (null)."""
    refreshed_at: str | None = None
    """When the output was last written (created or refreshed)."""


class TableStats(_Model):
    name: str
    rows: int
    key: str | None
    columns: int
    vectors: list[VectorColumnStats] = Field(default_factory=list)
    indexes: list[IndexState] = Field(default_factory=list)
    version: int | None = None
    """Current version (backends that keep versions), else None."""
    n_versions: int | None = None
    disk_bytes: int | None = None
    """Bytes on disk for a local LanceDB table, else None (not measurable through the store)."""
    source_names: dict[str, str] = Field(default_factory=dict)
    derived: list[DerivedColumnStats] = Field(default_factory=list)
    """Freshness of every derived output recorded in the table's metadata."""
    """Table column -> the source column name it was loaded from, where they differ."""


class StoreStats(_Model):
    store: str
    """Where the store is (passwords redacted)."""
    backend: str
    versions_supported: bool
    tables: list[TableStats]
    artifacts: list[str] = Field(default_factory=list)

    @property
    def disk_bytes(self) -> int | None:
        sizes = [t.disk_bytes for t in self.tables if t.disk_bytes is not None]
        return sum(sizes) if sizes else None


class VersionRecord(_Model):
    version: int
    timestamp: datetime | str | None
    current: bool = False


class MigrationResult(_Model):
    source: str
    target: str
    tables: dict[str, int]
    """Rows present on the target after the copy, per table."""
    artifacts: list[str]
    replaced: dict[str, int] = {}
    """Tables that existed on the target and were dropped first (``replace``), with the rows
    they held."""


class StepResult(_Model):
    """A generic summary of one pipeline step (ingest, consolidate, embed, index, score...)."""

    step: str
    table: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class GenerateResult(_Model):
    out_dir: str
    files: dict[str, str]
    """Kind of file (customers, transactions, web_events, products, truth) -> path."""
    customers: int
    details: dict[str, Any] = Field(default_factory=dict)


class ReportResult(_Model):
    html: str
    images: list[str]
    sections: list[str]


class RiskEvaluation(_Model):
    """One row per detector: ROC-AUC, average precision, precision@n against a label."""

    label: str
    positive: Any = None
    """The label value that marks an anomaly (None: a bool or 0/1 label)."""
    column: str | None
    rows: list[Any]


class _DictAccess(_Model):
    """``result["name"]`` as well as ``result.name``: these results were plain dicts before
    they were typed; the dict access is kept for one release, with a DeprecationWarning."""

    def __getitem__(self, key: str) -> Any:
        warnings.warn(f"{type(self).__name__}[{key!r}] is deprecated: use .{key}",
                      DeprecationWarning, stacklevel=2)
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)


class RecommendedItem(_DictAccess):
    """One recommended item: its score, its score in the list (after coverage), whether it
    can be had again, the parts of the score and the reasons in words."""

    item: str
    score: float
    list_score: float
    repeatable: bool
    parts: dict[str, float]
    reasons: list[str]


class CustomerRecommendations(_DictAccess):
    """One customer's recommendations with their reasons (``Kindred.recommendations``)."""

    customer_id: str
    active_days: int
    holdings: list[str]
    source: str
    recommendations: list[RecommendedItem]
