"""What one load did (:func:`ingest.pipeline.ingest`): :class:`IngestResult`, the one
result type of a load, which the facade (:meth:`services.facade.Kindred.ingest`) returns as
is and the CLI prints under ``--json``, and :class:`RowError`, one rejected value.

A frozen pydantic model, like the facade's other results (:mod:`services.models`): the load
counts in its own state and builds the result once, at its end. Only pydantic is imported
here, so the CLI can load the result types without the pipeline.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class RowError:
    """One value that does not fit: where it is, what it is, what was expected."""

    source: str
    row: int
    line: int | None
    column: str | None
    value: str | None
    expected: str

    def location(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        return f"{where} (row {self.row})"

    def __str__(self) -> str:
        col = f", column {self.column!r}" if self.column else ""
        val = "missing" if self.value is None else repr(_short(self.value))
        return f"{self.location()}{col}: value {val}; expected {self.expected}"

    def __getitem__(self, key: str) -> Any:
        """``error["column"]``: the facade gave errors as dicts before they were typed; the
        dict access is kept for one release, with a DeprecationWarning."""
        warnings.warn(f"RowError[{key!r}] is deprecated: use .{key}", DeprecationWarning,
                      stacklevel=2)
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class IngestResult(BaseModel):
    """What one load did. ``written`` counts inserted rows, ``updated`` rows replaced by key,
    ``unchanged`` events already stored (or repeated in the load), ``skipped`` and
    ``quarantined`` rejected rows; ``created_table`` whether the load created the table and
    ``new_columns`` the columns it added.

    ``.model_dump(mode="json")`` is what ``kindred ingest --json`` prints (each error as an
    object of its fields)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    table: str
    source: str
    on_error: str
    rows_read: int = 0
    written: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    quarantined: int = 0
    created_table: bool = False
    new_columns: list[str] = Field(default_factory=list)
    renamed_columns: dict[str, str] = Field(default_factory=dict)
    """Source name -> table name of the columns whose names were made safe
    (:mod:`ingest.names`; explicit renames are not listed)."""
    errors: list[RowError] = Field(default_factory=list)
    """The first rejected values (at most ``max_errors``, 100 by default), for display."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict, each error as its one-line text."""
        d = self.model_dump()
        d["errors"] = [str(e) for e in self.errors]
        return d

    def __str__(self) -> str:
        return (f"{self.table} <- {self.source}: read {self.rows_read}, written {self.written}, "
                f"updated {self.updated}, unchanged {self.unchanged}, skipped {self.skipped}, "
                f"quarantined {self.quarantined}")


def __getattr__(name: str) -> Any:
    """``IngestSummary``, the former name of :class:`IngestResult`, for one release."""
    if name == "IngestSummary":
        warnings.warn("ingest.IngestSummary is deprecated: use ingest.IngestResult (the same "
                      "fields)", DeprecationWarning, stacklevel=2)
        return IngestResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
