"""The ingest entry point: a source and a mapping -> validated rows in one store table.

One load is one atomic ``store.write``: batches stream from the source through validation
into that single call, and an error in fail mode is raised from inside the stream, so the
store commits nothing. Customers and products are upserted by id (columns the load does not
carry, such as embeddings, keep their values); events are appended, de-duplicated by event id
(or content hash) against the table and within the load, so re-ingesting a source writes 0
rows. A column new to the table is added first (existing rows get nulls); a type change that
would lose data is refused. A load that fails leaves the store as it was: the table it created
is dropped, the columns it added are dropped again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from vectorstore import VectorColumn, VectorStore, col

from .errors import IngestError, MappingError, ValidationError
from .mapping import Mapping
from .sources import DEFAULT_BATCH_ROWS, CsvSource, MalformedRow, Source, open_source
from .validate import (
    Checked,
    KeySet,
    Plan,
    RowError,
    Validator,
    make_plan,
    rows_as_json,
    stored_events,
)

OnError = Literal["fail", "skip", "quarantine"]
ON_ERROR_MODES: tuple[str, ...] = ("fail", "skip", "quarantine")
REJECTS_SCHEMA = pa.schema([
    pa.field("source", pa.string()),
    pa.field("row", pa.int64()),
    pa.field("line", pa.int64()),
    pa.field("column", pa.string()),
    pa.field("value", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("row_json", pa.string()),
    pa.field("rejected_at", pa.timestamp("us", tz="UTC")),
])
_CARRY_CHUNK = 4096
_log = logging.getLogger(__name__)
HOLDING_KINDS_KEY = "holding_kinds"
"""Events table metadata: event kinds whose ``product_id`` the customer holds."""


@dataclass
class IngestSummary:
    """What one load did. ``written`` counts inserted rows, ``updated`` rows replaced by key,
    ``unchanged`` events already stored (or repeated in the load), ``skipped`` and
    ``quarantined`` rejected rows."""

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
    new_columns: list[str] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    """The first rejected values (at most 100), for display."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["errors"] = [str(e) for e in self.errors]
        return d

    def __str__(self) -> str:
        return (f"{self.table} <- {self.source}: read {self.rows_read}, written {self.written}, "
                f"updated {self.updated}, unchanged {self.unchanged}, skipped {self.skipped}, "
                f"quarantined {self.quarantined}")


def rejects_table(table: str) -> str:
    """Name of the quarantine table of ``table``."""
    return f"{table}_rejects"


def _as_mapping(mapping: Mapping | str | Path | dict[str, Any]) -> Mapping:
    if isinstance(mapping, Mapping):
        return mapping
    if isinstance(mapping, dict):
        return Mapping.from_dict(mapping)
    if isinstance(mapping, str | Path):
        return Mapping.load(mapping)
    raise MappingError(f"expected a Mapping, a TOML path or a dict, got {type(mapping).__name__}")


def _open(source: Any, mapping: Mapping) -> Source:
    opts = mapping.source.options() if mapping.source is not None else {}
    if source is None:
        if mapping.source is None or not mapping.source.path:
            raise MappingError("no source given and the mapping has no [source] path")
        source = mapping.source.path
    if not isinstance(source, str | Path | Source):
        opts = {}
    opts = {k: v for k, v in opts.items() if v is not None or k == "quote_char"}
    return open_source(source, **opts)


def _error_message(source: str, errors: list[RowError], total: int) -> str:
    more = f" (and {total - 1} more)" if total > 1 else ""
    return f"{errors[0]}{more}; nothing was written (use on_error='skip' or 'quarantine' " \
           "to load the other rows)"


class _Load:
    """The state of one load while its batches stream into the store."""

    def __init__(self, store: VectorStore, src: Source, mapping: Mapping, on_error: str,
                 summary: IngestSummary, max_errors: int,
                 progress: Callable[[int, int | None], None] | None = None) -> None:
        self.store = store
        self.progress = progress
        self.src = src
        self.mapping = mapping
        self.on_error = on_error
        self.summary = summary
        self.max_errors = max_errors
        self.rejects: list[dict[str, Any]] = []
        self.failure: BaseException | None = None

    def _keep_errors(self, errors: list[RowError]) -> None:
        room = self.max_errors - len(self.summary.errors)
        if room > 0:
            self.summary.errors.extend(errors[:room])

    def _malformed(self, rows: list[MalformedRow]) -> None:
        if not rows:
            return
        self.summary.rows_read += len(rows)
        errs = [RowError(self.src.name, m.row if m.row is not None else
                         (m.line - 1 if m.line is not None else 0), m.line, None, m.text,
                         m.reason) for m in rows]
        self._keep_errors(errs)
        if self.on_error == "skip":
            self.summary.skipped += len(rows)
            return
        self.summary.quarantined += len(rows)
        for e, m in zip(errs, rows, strict=True):
            self.rejects.append({"source": e.source, "row": e.row, "line": e.line,
                                 "column": None, "value": m.text, "reason": m.reason,
                                 "row_json": _json({"_text": m.text})})

    def _rejected(self, checked: Checked) -> None:
        n = checked.rejected.num_rows
        if self.on_error == "skip":
            self.summary.skipped += n
            return
        self.summary.quarantined += n
        by_row: dict[int, list[RowError]] = {}
        for e in checked.errors:
            by_row.setdefault(e.row, []).append(e)
        texts = rows_as_json(checked.rejected)
        lines = checked.rejected_lines
        for i, row in enumerate(checked.rejected_rows.tolist()):
            errs = by_row.get(row, [])
            first = errs[0] if errs else None
            self.rejects.append({
                "source": self.src.name, "row": row,
                "line": int(lines[i]) if lines is not None else None,
                "column": first.column if first else None,
                "value": first.value if first else None,
                "reason": "; ".join(f"{e.column}: expected {e.expected}" if e.column
                                    else e.expected for e in errs),
                "row_json": texts[i]})

    def stream(self, chunks: Iterator[Any], validator: Validator,
               carry: list[str]) -> Iterator[pa.RecordBatch]:
        try:
            for chunk in chunks:
                self.summary.rows_read += chunk.batch.num_rows
                self._malformed(self.src.take_malformed())
                checked = validator.check(chunk)
                self.summary.unchanged += checked.duplicates
                if checked.errors:
                    if self.on_error == "fail":
                        raise ValidationError(_error_message(self.src.name, checked.errors,
                                                             len(checked.errors)))
                    self._keep_errors(checked.errors)
                    self._rejected(checked)
                good = checked.good
                if carry and good.num_rows:
                    good = self._with_carried(good, carry)
                if good.num_rows:
                    yield good
                if self.progress is not None:
                    self.progress(self.summary.rows_read, None)
            self._malformed(self.src.take_malformed())
            dups = validator.duplicate_errors()
            if dups:
                raise ValidationError(_error_message(self.src.name, dups, len(dups)))
        except BaseException as exc:
            self.failure = exc
            raise

    def _with_carried(self, batch: pa.RecordBatch, carry: list[str]) -> pa.RecordBatch:
        """Add the stored values of columns the load lacks, so an upsert keeps them."""
        key = self.mapping.key
        keys = batch.column(key)
        found: list[pa.Table] = []
        for start in range(0, len(keys), _CARRY_CHUNK):
            part = keys.slice(start, _CARRY_CHUNK).to_pylist()
            found.append(self.store.to_arrow(self.mapping.table, columns=[key, *carry],
                                             filter=col(key).isin(part)))
        existing = pa.concat_tables(found) if found else None
        if existing is None or existing.num_rows == 0:
            return batch
        existing = existing.combine_chunks()
        idx = pc.index_in(keys, value_set=existing.column(key))
        out = batch
        for c in carry:
            out = out.append_column(existing.schema.field(c),
                                    existing.column(c).take(idx).combine_chunks())
        return out

    def finish_empty(self) -> IngestSummary:
        """The source had no row to write: report (and quarantine) its malformed rows only."""
        self._malformed(self.src.take_malformed())
        self.write_rejects()
        return self.summary

    def write_rejects(self) -> None:
        if not self.rejects:
            return
        name = rejects_table(self.mapping.table)
        self.store.create_table(name, REJECTS_SCHEMA, exist_ok=True)
        now = dt.datetime.now(dt.UTC)
        for r in self.rejects:
            r["rejected_at"] = now
        self.store.write(name, pa.Table.from_pylist(self.rejects, schema=REJECTS_SCHEMA))


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, ensure_ascii=False)


def _existing_keys(store: VectorStore, table: str, key: str) -> KeySet:
    """The keys already stored in ``table``, for de-duplicating a re-load of events.

    Reads every stored key, but only the key column (a projected scan, 262,144 ids at a
    time) and keeps 16 bytes per key (two 64-bit hashes), never the rows: memory is bounded
    by the id column (10M stored events: 160 MB, plus one batch of ids and the sort buffers
    of :class:`KeySet` merges). The store's own append check reads the key column once more.
    """
    seen = KeySet()
    for b in store.scan(table, columns=[key], batch_size=262_144):
        seen.add_keys(b.column(0))
    return seen


def _typed_columns(plan: Plan) -> dict[str, pa.DataType]:
    """Source columns a CSV reader can type directly with validation's semantics."""
    raw = {c for _, c, _ in plan.flags} | {plan.list_column, plan.id_source}
    return {c.source: c.type for c in plan.columns
            if c.type in (pa.int64(), pa.float64()) and c.source not in raw and c.fmt is None}


def _record_holding_kinds(store: VectorStore, table: str, kinds: list[str]) -> None:
    """Note in the events table's metadata the kinds whose product the customer holds.

    Consolidation reads ``holding_kinds`` and adds them to its own, so ``holdings.from_events``
    in a mapping reaches ``customers.holdings`` on the next consolidation.
    """
    if not kinds:
        return
    meta = store.table_info(table).metadata
    have = list(meta.get(HOLDING_KINDS_KEY) or [])
    merged = have + [k for k in kinds if k not in have]
    if merged != have:
        store.set_metadata(table, {HOLDING_KINDS_KEY: merged})


def ingest(store: VectorStore, source: Any = None,
           mapping: Mapping | str | Path | dict[str, Any] | None = None, *,
           on_error: OnError = "fail", batch_rows: int = DEFAULT_BATCH_ROWS,
           max_errors: int = 100,
           progress: Callable[[int, int | None], None] | None = None) -> IngestSummary:
    """Load one source into the mapping's table; returns what was read, written and rejected.

    ``source`` is a path, database URL, DataFrame / Arrow object or :class:`Source` (default:
    the mapping's ``[source]``). ``mapping`` is a :class:`Mapping`, a TOML path or a dict.
    ``on_error``: ``fail`` (default: raise :class:`ValidationError` or
    :class:`SourceError` and write nothing), ``skip`` (drop and count bad rows) or
    ``quarantine`` (bad rows, with the reason, go to ``<table>_rejects``).
    ``progress`` is called after each batch with the rows read so far (the total of a
    streamed source is not known in advance, so the second argument is None).
    """
    if mapping is None:
        raise MappingError("a mapping is required (Mapping, TOML path or dict)")
    if on_error not in ON_ERROR_MODES:
        raise IngestError(f"unknown on_error {on_error!r}; expected one of "
                          f"{', '.join(ON_ERROR_MODES)}")
    m = _as_mapping(mapping)
    src = _open(source, m)
    src.tolerate_malformed = on_error != "fail"
    summary = IngestSummary(table=m.table, source=src.name, on_error=on_error)
    load = _Load(store, src, m, on_error, summary, max_errors, progress)

    chunks = src.chunks(batch_rows)
    # a CSV file is typed from a sample of its first rows read as text, then read typed
    # from its first block on; other sources are typed from their first chunk
    sample = src.sample(batch_rows) if isinstance(src, CsvSource) else None
    first = None if sample is not None else next(chunks, None)
    if sample is None and first is None:
        return load.finish_empty()
    existing = store.table_info(m.table) if store.has_table(m.table) else None
    plan = make_plan(m, sample if sample is not None else first.batch, existing,
                     text_source=src.kind in ("csv", "tsv", "jsonl"))
    if isinstance(src, CsvSource):
        src.column_types = _typed_columns(plan)
        if first is None:
            first = next(chunks, None)
            if first is None:
                return load.finish_empty()
    vec_cols = [VectorColumn(n, d) for n, d in plan.vectors.items()
                if existing is None or n not in existing.vectors]
    added: list[str] = []
    if existing is None:
        store.create_table(m.table, plan.schema, key=plan.key, vectors=vec_cols)
        summary.created_table = True
        existing_rows = 0
    else:
        if plan.new_fields:
            vec_names = {v.name for v in vec_cols}
            store.add_columns(m.table, [f for f in plan.new_fields if f.name not in vec_names],
                              vectors=vec_cols)
            added = [f.name for f in plan.new_fields] + \
                [v.name for v in vec_cols if v.name not in {f.name for f in plan.new_fields}]
            summary.new_columns = [f.name for f in plan.new_fields]
        existing_rows = store.count(m.table)
    try:
        _write(store, load, m, plan, first, chunks, existing_rows, summary.created_table)
    except BaseException:
        _undo(store, m.table, summary.created_table, added)
        raise
    if m.table == "events":
        _record_holding_kinds(store, m.table, m.holdings.from_events)
    load.write_rejects()
    return summary


def _write(store: VectorStore, load: _Load, m: Mapping, plan: Plan, first: Any,
           chunks: Iterator[Any], existing_rows: int, created: bool) -> None:
    """Stream the validated batches into one ``store.write`` (one commit).

    Into a table this load has just created, the write is an ``overwrite`` of the empty
    table: the same commit as an append, without the store's second pass over every key for
    uniqueness, which validation has already checked (with file lines in its errors).
    """
    events = m.table == "events"
    validator = Validator(plan, load.src.name, dedupe=events,
                          defer_duplicates=load.on_error == "fail")
    carry: list[str] = []
    if events:
        mode = "overwrite" if created else "append"
        if existing_rows:
            validator.seen = stored_events(store, m.table, plan)
    elif existing_rows:
        mode = "upsert"
        info = store.table_info(m.table)
        written_cols = set(plan.schema.names)
        carry = [c for c in info.schema.names if c not in written_cols]
    else:  # empty table: every key is new, and validation keeps them unique in the load
        mode = "overwrite" if created else "append"

    batches = load.stream(chain([first], chunks), validator, carry)
    try:
        result = store.write(m.table, batches, mode=mode)
    except BaseException as exc:
        if load.failure is not None and load.failure is not exc:
            raise load.failure from None
        raise
    if load.failure is not None:
        raise load.failure
    load.summary.written = result.inserted
    load.summary.updated = result.updated


def _undo(store: VectorStore, table: str, created: bool, added: list[str]) -> None:
    """After a failed write: drop the table this load created, or the columns it added, so
    the store is as it was before the load. A failure here is not allowed to hide the
    load's own error."""
    try:
        if created:
            if store.count(table) == 0:
                store.drop_table(table, missing_ok=True)
        elif added:
            store.drop_columns(table, added)
    except Exception as exc:  # the load's own error is the one to raise
        _log.warning("could not undo the failed load's changes to table %r: %s", table, exc)
