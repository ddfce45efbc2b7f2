"""The ingest entry point: a source and a mapping -> validated rows in one store table.

One load is one commit: batches stream from the source through validation into a staged
step (``store.transaction``) that adds the columns new to the table and writes the rows, or
into ``create_table(data=...)`` for a new table; an error in fail mode is raised from inside
the stream, so nothing is committed, and a killed load leaves the table as it was. Customers
and products are upserted by id with a partial upsert (columns the load does not carry, such
as embeddings, keep their values and are never read; identical rows are counted unchanged).
Events are inserted when their event id is new, de-duplicated against the table and within
the load, so re-ingesting a source writes 0 rows: each batch's ids are looked up in the
event id's scalar index (built before the load when it is missing, on LanceDB), so memory
holds the load's ids and the stored ones it hits, never every stored id; the write is an
insert-if-absent merge (``insert_missing``) on that id. Events without an id get the row's
content hash plus its occurrence number among identical rows (repeats are kept; ``dedupe``
counts them once); an explicit id that comes again with other content is an error
(:mod:`ingest.identity`). A column new to the table holds nulls for the other rows; a type
change that would lose data is refused. Column names are made safe by :mod:`ingest.names`;
the source names are kept in the table's metadata, in the same commit. Every customer or
product row the load inserts or changes gets a new ``row_stamp`` and null derived-output
stamps in that commit (:mod:`ingest.freshness`), so the next refresh knows which rows to
recompute.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Generator, Iterator
from itertools import chain
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa

from vectorstore import TableInfo, VectorColumn, VectorStore
from vectorstore.schema import MetadataPatch

from .datamodel import EVENTS
from .errors import IngestError, MappingError, ValidationError
from .freshness import ROW_STAMP, STAMP_TYPE, new_stamp, source_touch
from .identity import DIGEST_COLUMN, KeyDigests
from .mapping import Mapping
from .names import SOURCE_NAMES_KEY, merged_source_names
from .piecewise import Item, piece_items, plan_pieces
from .result import IngestResult
from .runner import LOCAL, Runner, TaskContext, runner_for
from .sources import DEFAULT_BATCH_ROWS, CsvSource, MalformedRow, Source, open_source
from .validate import (
    Checked,
    Converted,
    Plan,
    RowError,
    Validator,
    convert_chunk,
    make_plan,
    rows_as_json,
)

OnError = Literal["fail", "skip", "quarantine"]
ON_ERROR_MODES: tuple[str, ...] = ("fail", "skip", "quarantine")
REJECT_KEY = "reject_id"
"""Key of a rejects table: a digest of the rejected row and why, so loading the same file
again (a re-run after a failure or a kill) records each reject once."""
REJECTS_SCHEMA = pa.schema([
    pa.field(REJECT_KEY, pa.string()),
    pa.field("source", pa.string()),
    pa.field("row", pa.int64()),
    pa.field("line", pa.int64()),
    pa.field("column", pa.string()),
    pa.field("value", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("row_json", pa.string()),
    pa.field("rejected_at", pa.timestamp("us", tz="UTC")),
])
_log = logging.getLogger(__name__)
HOLDING_KINDS_KEY = "holding_kinds"
"""Events table metadata: event kinds whose ``product_id`` the customer holds."""


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
    """The state of one load while its batches stream into the store: its counts, kept
    here and made into the (immutable) :class:`IngestResult` once, at the end."""

    def __init__(self, store: VectorStore, src: Source, mapping: Mapping, on_error: str,
                 max_errors: int,
                 progress: Callable[[int, int | None], None] | None = None,
                 runner: Runner = LOCAL) -> None:
        self.store = store
        self.runner = runner
        self.progress = progress
        self.src = src
        self.mapping = mapping
        self.on_error = on_error
        self.max_errors = max_errors
        self.rows_read = self.written = self.updated = self.unchanged = 0
        self.skipped = self.quarantined = 0
        self.created_table = False
        self.new_columns: list[str] = []
        self.errors: list[RowError] = []
        self.rejects: list[dict[str, Any]] = []
        self.failure: BaseException | None = None

    def _keep_errors(self, errors: list[RowError]) -> None:
        room = self.max_errors - len(self.errors)
        if room > 0:
            self.errors.extend(errors[:room])

    def _malformed(self, rows: list[MalformedRow]) -> None:
        if not rows:
            return
        self.rows_read += len(rows)
        errs = [RowError(self.src.name, m.row if m.row is not None else
                         (m.line - 1 if m.line is not None else 0), m.line, None, m.text,
                         m.reason) for m in rows]
        self._keep_errors(errs)
        if self.on_error == "skip":
            self.skipped += len(rows)
            return
        self.quarantined += len(rows)
        for e, m in zip(errs, rows, strict=True):
            self.rejects.append({"source": e.source, "row": e.row, "line": e.line,
                                 "column": None, "value": m.text, "reason": m.reason,
                                 "row_json": _json({"_text": m.text})})

    def _rejected(self, checked: Checked) -> None:
        n = checked.rejected.num_rows
        if self.on_error == "skip":
            self.skipped += n
            return
        self.quarantined += n
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
               pieces: Iterator[Item] | None = None) -> Iterator[pa.RecordBatch]:
        """The validated batches of ``chunks`` (converted on the runner), or of ``pieces``
        (read and converted on the runner, :mod:`ingest.piecewise`)."""
        try:
            # the per-batch map (type conversion and checks) on the runner, in chunk order;
            # the load's state (duplicates, occurrence numbers) is applied here, in order
            items = pieces if pieces is not None else (
                (conv, self.src.take_malformed())
                for conv in self.runner.map(_convert_task, chunks, shared=validator.plan))
            for conv, malformed in items:
                self._malformed(malformed)
                if conv is None:
                    continue
                chunk = conv.chunk
                self.rows_read += chunk.batch.num_rows
                checked = validator.resolve(conv)
                self.unchanged += checked.duplicates
                if checked.errors:
                    if self.on_error == "fail":
                        raise ValidationError(_error_message(self.src.name, checked.errors,
                                                             len(checked.errors)))
                    self._keep_errors(checked.errors)
                    self._rejected(checked)
                good = checked.good
                if good.num_rows:
                    yield good
                if self.progress is not None:
                    self.progress(self.rows_read, None)
            self._malformed(self.src.take_malformed())
            dups = validator.duplicate_errors()
            if dups:
                raise ValidationError(_error_message(self.src.name, dups, len(dups)))
        except BaseException as exc:
            self.failure = exc
            raise

    def result(self, renamed_columns: dict[str, str] | None = None) -> IngestResult:
        """What the load did, from its counts."""
        return IngestResult(
            table=self.mapping.table, source=self.src.name, on_error=self.on_error,
            rows_read=self.rows_read, written=self.written, updated=self.updated,
            unchanged=self.unchanged, skipped=self.skipped, quarantined=self.quarantined,
            created_table=self.created_table, new_columns=self.new_columns,
            renamed_columns=renamed_columns or {}, errors=self.errors)

    def finish_empty(self) -> IngestResult:
        """The source had no row to write: report (and quarantine) its malformed rows only."""
        self._malformed(self.src.take_malformed())
        self.write_rejects()
        return self.result()

    def write_rejects(self) -> None:
        if not self.rejects:
            return
        import hashlib

        name = rejects_table(self.mapping.table)
        now = dt.datetime.now(dt.UTC)
        for r in self.rejects:
            r["rejected_at"] = now
            what = _json([r.get(c) for c in ("source", "row", "line", "column", "value",
                                             "reason", "row_json")])
            r[REJECT_KEY] = hashlib.sha256(what.encode()).hexdigest()[:32]
        unique = list({r[REJECT_KEY]: r for r in self.rejects}.values())
        rows = pa.Table.from_pylist(unique, schema=REJECTS_SCHEMA)
        if not self.store.has_table(name):  # created holding its rows: one commit
            self.store.create_table(name, REJECTS_SCHEMA, key=REJECT_KEY, data=rows)
        elif self.store.table_info(name).key == REJECT_KEY:
            self.store.write(name, rows, mode="insert_missing")
        else:  # a rejects table from an earlier version, without the key
            self.store.write(name, rows.drop_columns([REJECT_KEY]))


def _convert_task(ctx: TaskContext, chunk: Any) -> Converted:
    """One chunk validated against the load's plan (``ctx.shared``), on any worker."""
    return convert_chunk(ctx.shared, chunk)


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, ensure_ascii=False)


def _existing_keys(store: VectorStore, table: str, key: str) -> KeyDigests:
    """The keys already stored in ``table`` with their event digests, for telling a re-load
    of events (unchanged) from an id reused for other content (an error).

    Reads every stored key, but only the key and digest columns (a projected scan, 262,144
    ids at a time) and keeps 24 bytes per key (two 64-bit hashes and the digest), never the
    rows: memory is bounded by the id column (10M stored events: 240 MB, plus one batch of
    ids and the sort buffers of the merges). The store's own append check reads the key
    column once more.
    """
    seen = KeyDigests()
    has_digest = DIGEST_COLUMN in store.table_info(table).schema.names
    cols = [key, DIGEST_COLUMN] if has_digest else [key]
    for b in store.scan(table, columns=cols, batch_size=262_144):
        seen.add_keys(b.column(0), b.column(1) if has_digest else None)
    return seen


def _key_indexed(store: VectorStore, table: str, key: str) -> bool:
    key_index = getattr(store, "key_index", None)
    return key_index is not None and key_index(table, key) is not None


def _ensure_key_index(store: VectorStore, table: str, key: str) -> bool:
    """True when each batch's event ids can be looked up in a scalar index of the stored ids.

    On a store with key indexes (LanceDB) a missing one is built first (its own commit, an
    index: no row changes), so a load never reads every stored id into memory; rows
    appended since the build sit in unindexed fragments, which a lookup scans too (``kindred
    index --table events`` brings them into the index). Other backends keep the stored-id
    set (their keys are primary keys, but a lookup of a batch of ids is not yet cheap on
    every one of them)."""
    if getattr(store, "key_index", None) is None:
        return False
    if not _key_indexed(store, table, key):
        store.create_scalar_index(table, key, replace=False)
        _log.info("built the scalar index on %s.%s for event de-duplication", table, key)
    return _key_indexed(store, table, key)


def _stored_lookup(store: VectorStore, table: str, key: str
                   ) -> Callable[[pa.Array], tuple[pa.Array, pa.Array | None]]:
    """Per batch: the stored rows among the batch's event ids (id and digest), one lookup
    answered by the id's scalar index, instead of holding every stored id in memory."""
    has_digest = DIGEST_COLUMN in store.table_info(table).schema.names
    cols = [key, DIGEST_COLUMN] if has_digest else [key]

    def stored(keys: pa.Array) -> tuple[pa.Array, pa.Array | None]:
        found = store.lookup(table, keys, columns=cols, key=key)
        ids = found.column(key).combine_chunks()
        return ids, found.column(DIGEST_COLUMN).combine_chunks() if has_digest else None

    return stored


def _typed_columns(plan: Plan) -> dict[str, pa.DataType]:
    """Source columns a CSV reader can type directly with validation's semantics."""
    raw = {c for _, c, _ in plan.flags} | {plan.list_column, plan.id_source}
    return {c.source: c.type for c in plan.columns
            if c.type in (pa.int64(), pa.float64()) and c.source not in raw and c.fmt is None}


def _holding_kinds(info: TableInfo, kinds: list[str]) -> MetadataPatch:
    """The events table's metadata patch noting the kinds whose product the customer holds.

    Consolidation reads ``holding_kinds`` and adds them to its own, so ``holdings.from_events``
    in a mapping reaches ``customers.holdings`` on the next consolidation.
    """
    have = list(info.metadata.get(HOLDING_KINDS_KEY) or [])
    merged = have + [k for k in kinds if k not in have]
    return {HOLDING_KINDS_KEY: merged} if merged != have else {}


def ingest(store: VectorStore, source: Any = None,
           mapping: Mapping | str | Path | dict[str, Any] | None = None, *,
           on_error: OnError = "fail", batch_rows: int = DEFAULT_BATCH_ROWS,
           max_errors: int = 100,
           progress: Callable[[int, int | None], None] | None = None,
           runner: Runner | str | None = None) -> IngestResult:
    """Load one source into the mapping's table; returns what was read, written and rejected.

    ``source`` is a path, database URL, DataFrame / Arrow object or :class:`Source` (default:
    the mapping's ``[source]``). ``mapping`` is a :class:`Mapping`, a TOML path or a dict.
    ``on_error``: ``fail`` (default: raise :class:`ValidationError` or
    :class:`SourceError` and write nothing), ``skip`` (drop and count bad rows) or
    ``quarantine`` (bad rows, with the reason, go to ``<table>_rejects``).
    ``progress`` is called after each batch with the rows read so far (the total of a
    streamed source is not known in advance, so the second argument is None).
    ``runner`` (:mod:`ingest.runner`) runs each batch's validation (type conversion and
    checks, :func:`~ingest.validate.convert_chunk`); on a distributed runner a Parquet or
    CSV file is also read there, piece by piece (:mod:`ingest.piecewise`). De-duplication
    and the write stay here, in batch order, so every runner writes the same rows and
    reports the same summary.
    """
    if mapping is None:
        raise MappingError("a mapping is required (Mapping, TOML path or dict)")
    if on_error not in ON_ERROR_MODES:
        raise IngestError(f"unknown on_error {on_error!r}; expected one of "
                          f"{', '.join(ON_ERROR_MODES)}")
    m = _as_mapping(mapping)
    src = _open(source, m)
    src.tolerate_malformed = on_error != "fail"
    load = _Load(store, src, m, on_error, max_errors, progress,
                 runner_for(store, runner, step="ingest"))

    chunks = src.chunks(batch_rows)
    # a CSV file is typed from a sample of its first rows read as text, then read typed
    # from its first block on; other sources are typed from their first chunk
    sample = src.sample(batch_rows) if isinstance(src, CsvSource) else None
    first = None if sample is not None else next(chunks, None)
    if sample is None and first is None:
        return load.finish_empty()
    existing = store.table_info(m.table) if store.has_table(m.table) else None
    if sample is not None:
        head = sample
    else:
        assert first is not None  # both None returned above
        head = first.batch
    plan = make_plan(m, head, existing,
                     text_source=src.kind in ("csv", "tsv", "jsonl"))
    if isinstance(src, CsvSource):
        src.column_types = _typed_columns(plan)
        if first is None:
            first = next(chunks, None)
            if first is None:
                return load.finish_empty()
    vec_cols = [VectorColumn(n, d) for n, d in plan.vectors.items()
                if existing is None or n not in existing.vectors]
    pieces = None
    split = plan_pieces(src, load.runner, batch_rows) if load.runner.distributed else None
    if split is not None:  # the workers read the whole file, the first chunk included
        if isinstance(chunks, Generator):
            chunks.close()
        src.take_malformed()
        pieces = piece_items(load.runner, plan, *split)
    _write(store, load, m, plan, first, chunks, existing, vec_cols, pieces)
    load.write_rejects()
    return load.result({r: n for n, r in plan.source_names.items() if r not in m.rename})


def _write(store: VectorStore, load: _Load, m: Mapping, plan: Plan, first: Any,
           chunks: Iterator[Any], existing: TableInfo | None, vec_cols: list[VectorColumn],
           pieces: Iterator[Item] | None = None) -> None:
    """Stream the validated batches into one commit.

    A new table is created holding the rows (``create_table(data=...)``). Into an existing
    one, a staged step adds the new columns and writes the rows: a partial upsert by key
    (customers, products), or ``insert_missing`` for events (their ids were already
    de-duplicated against the table by validation; a concurrent load of the same events is
    still written once).
    """
    events = m.table == EVENTS
    validator = Validator(plan, load.src.name, dedupe=events,
                          defer_duplicates=load.on_error == "fail")
    batches = load.stream(chain([first], chunks), validator, pieces)
    stamped = not events and plan.key is not None  # entity rows carry change stamps
    try:
        if existing is None:
            schema = plan.schema
            if stamped and ROW_STAMP not in schema.names:
                stamp = new_stamp()
                schema = schema.append(pa.field(ROW_STAMP, STAMP_TYPE))
                batches = (b.append_column(ROW_STAMP, pa.repeat(pa.scalar(stamp, STAMP_TYPE),
                                                                 b.num_rows))
                           for b in batches)
            counted = _counting(batches)
            kinds = list(dict.fromkeys(m.holdings.from_events)) if events else []
            meta: dict[str, Any] = {HOLDING_KINDS_KEY: kinds} if kinds else {}
            if plan.source_names:
                meta[SOURCE_NAMES_KEY] = plan.source_names
            store.create_table(m.table, schema, key=plan.key, vectors=vec_cols,
                               metadata=meta or None, data=counted)
            load.created_table = True
            load.written = counted.rows
            return
        if events and store.count(m.table):
            if _ensure_key_index(store, m.table, plan.key):
                validator.stored = _stored_lookup(store, m.table, plan.key)
            else:
                validator.seen = _existing_keys(store, m.table, plan.key)
        with store.transaction(m.table) as tx:
            if plan.new_fields:
                vec_names = {v.name for v in vec_cols}
                tx.add_columns([f for f in plan.new_fields if f.name not in vec_names],
                               vectors=vec_cols)
                load.new_columns = [f.name for f in plan.new_fields]
            touch = None
            if stamped:
                if ROW_STAMP not in tx.info.schema.names:
                    tx.add_columns([pa.field(ROW_STAMP, STAMP_TYPE)])
                touch = source_touch(tx.info)
            pending = tx.write(batches, mode="insert_missing" if events else "upsert",
                               touch=touch)
            if events:
                tx.set_metadata(_holding_kinds(tx.info, m.holdings.from_events))
            names = merged_source_names(tx.info.metadata, plan.source_names)
            if names is not None:  # one entry per column: a concurrent load's entries stay
                tx.set_metadata({(SOURCE_NAMES_KEY, c): n for c, n in names.items()})
    except BaseException as exc:
        if load.failure is not None and load.failure is not exc:
            raise load.failure from None
        raise
    if load.failure is not None:
        raise load.failure
    assert pending.result is not None
    load.written = pending.result.inserted
    load.updated = pending.result.updated
    load.unchanged += pending.result.unchanged


class _counting:
    """An iterator of batches that counts the rows it passed on."""

    def __init__(self, batches: Iterator[pa.RecordBatch]) -> None:
        self.batches = batches
        self.rows = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for b in self.batches:
            self.rows += b.num_rows
            yield b


def __getattr__(name: str) -> Any:
    """``IngestSummary``, the former name of :class:`IngestResult`, for one release."""
    if name == "IngestSummary":
        from . import result

        return result.__getattr__(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
