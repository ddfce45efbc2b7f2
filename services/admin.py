"""Store-level administration over the store interface only: stats, migration, URI redaction.

Nothing here knows a backend's internals: migration is scan -> create_table -> write plus
metadata and artifacts, so it works between any two backends (LanceDB -> PostgreSQL, ...).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa

import vectorstore
from ingest.datamodel import META_EMBEDDERS
from ingest.progress import LabelledProgress as Progress  # the name callers import from here
from vectorstore import StoreError, VectorStore, dsn
from vectorstore.errors import native_free
from vectorstore.registry import scheme_of

from .models import DerivedColumnStats, IndexState, MigrationResult, TableStats, VectorColumnStats


def redact(text: str) -> str:
    """``text`` with every password removed (see :func:`vectorstore.dsn.redact`)."""
    return dsn.redact(text)


def local_path(uri: str) -> Path | None:
    """The directory of an embedded LanceDB store given by a plain path or ``lance://``/``file://``."""
    if scheme_of(uri) != "lance":
        return None
    parts = urlsplit(uri)
    if parts.scheme in ("lance", "file"):
        return Path(parts.netloc + parts.path)
    return Path(uri)


def store_uri(store: VectorStore) -> str:
    """A printable (password-free) description of where a store lives."""
    uri = getattr(store, "uri", None) or getattr(store, "dsn", None) or repr(store)
    return redact(str(uri))


def _disk_bytes(store: VectorStore, table: str) -> int | None:
    root = getattr(store, "uri", None)
    if store.scheme != "lance" or not isinstance(root, str) or "://" in root:
        return None
    path = Path(root) / f"{table}.lance"
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def table_stats(store: VectorStore, name: str) -> TableStats:
    """Row count, vector columns with their embedders, indexes, version, disk size and the
    source names of renamed columns."""
    info = store.table_info(name)
    embedders = info.metadata.get(META_EMBEDDERS, {}) if isinstance(info.metadata, dict) else {}
    vectors = []
    for v in info.vectors.values():
        emb = embedders.get(v.name, {}) if isinstance(embedders, dict) else {}
        vectors.append(VectorColumnStats(
            name=v.name, dim=v.dim, metric=str(v.metric),
            embedder=emb.get("kind"), model=emb.get("model"), created_at=emb.get("created_at"),
        ))
    try:
        indexes = [IndexState(name=i.name, columns=list(i.columns), index_type=i.index_type,
                              vector=i.vector) for i in store.list_indexes(name)]
    except StoreError:
        indexes = []
    version = n_versions = None
    if store.capabilities.versions:
        try:
            n_versions = len(store.versions(name))
            version = store.version(name)
        except StoreError:
            pass
    from ingest.freshness import derived_outputs, freshness
    from ingest.names import source_names

    derived = []
    if info.key is not None:
        for output, column, refreshed in derived_outputs(info):
            f = freshness(store, name, output, column, refreshed, info=info)
            derived.append(DerivedColumnStats(output=output, column=column, rows=f.rows,
                                              stale=f.stale, missing=f.missing,
                                              refreshed_at=f.refreshed_at))

    return TableStats(
        name=name, rows=store.count(name), key=info.key, columns=len(info.schema),
        vectors=vectors, indexes=indexes, version=version, n_versions=n_versions,
        disk_bytes=_disk_bytes(store, name), source_names=source_names(info.metadata),
        derived=derived,
    )


class _Copy:
    """The batches of one table's copy, with the 1-based source rows of the batch in flight
    (so a write error can say which source rows it is about)."""

    def __init__(self, src: VectorStore, name: str, batch_size: int,
                 tick: Callable[[int], None]) -> None:
        self.src, self.name, self.batch_size, self.tick = src, name, batch_size, tick
        self.first = self.last = 0

    def reader(self, schema: pa.Schema) -> pa.RecordBatchReader:
        def gen() -> Iterator[pa.RecordBatch]:
            for batch in self.src.scan(self.name, batch_size=self.batch_size):
                self.first, self.last = self.last + 1, self.last + batch.num_rows
                yield batch
                self.tick(batch.num_rows)

        return pa.RecordBatchReader.from_batches(schema, gen())

    def error(self, exc: StoreError) -> StoreError:
        """``exc`` restated with source rows: a batch-relative 0-based ``row N`` in a
        backend's message becomes the 1-based row of the source table."""
        text = native_free(str(exc).strip().splitlines()[0] if str(exc).strip() else "")

        def absolute(m: re.Match[str]) -> str:
            return f"{m.group(1)} {self.first + int(m.group(2))}"

        if self.first:
            text = re.sub(r"\b(row|list element) (\d+)\b", absolute, text, count=1)
        where = f" (source rows {self.first:,}-{self.last:,})" if self.first else ""
        out = type(exc)(f"copying table {self.name!r} to the target failed{where}: {text}")
        return out


def _check_not_same(src: VectorStore, dst: VectorStore) -> None:
    if dsn.same_store(src, dst):
        raise StoreError(
            f"the migration target {store_uri(dst)} is the source store {store_uri(src)} "
            "(the same directory or database schema, however it is spelled): migrating a "
            "store onto itself would drop what it copies; choose another target")


PLAN_ARTIFACT = "migration.plan"
"""The target's record of a migration in progress (removed when it completes)."""


def _fingerprint(store: VectorStore, name: str) -> str:
    """What a copy of ``name`` depends on: its description and its data version (row count
    on backends without versions)."""
    import hashlib
    import json

    info = store.table_info(name)
    try:
        data: object = store.data_version(name)
    except StoreError:
        data = store.count(name)
    desc = json.dumps({"schema": str(info.schema), "key": info.key,
                       "vectors": sorted(v.to_dict()["name"] for v in info.vectors.values()),
                       "metadata": info.metadata, "data": data}, sort_keys=True, default=str)
    return hashlib.sha256(desc.encode()).hexdigest()


def _source_id(src: VectorStore) -> list[str]:
    return [str(v) for v in dsn.store_identity(src)] if src.scheme == "lance" else \
        [store_uri(src)]


def _read_plan(dst: VectorStore) -> dict | None:
    import json

    if PLAN_ARTIFACT not in dst.list_artifacts():
        return None
    data, _ = dst.get_artifact(PLAN_ARTIFACT)
    try:
        plan = json.loads(data)
    except ValueError:
        return None
    return plan if isinstance(plan, dict) else None


def _save_plan(dst: VectorStore, plan: dict) -> None:
    import json

    dst.put_artifact(PLAN_ARTIFACT, json.dumps(plan, sort_keys=True).encode(),
                     {"kind": "migration plan"})


def migrate(src: VectorStore, dst: VectorStore, *, tables: Sequence[str] | None = None,
            replace: bool = False, batch_size: int = 10_000,
            progress: Progress | None = None,
            on_replace: Callable[[dict[str, int]], None] | None = None) -> MigrationResult:
    """Copy tables (rows, key, vector columns, metadata) and artifacts from ``src`` to ``dst``.

    Refuses a target that is the source (see :func:`vectorstore.dsn.same_store`: another
    spelling of the same path or database counts). A table that already exists on the
    target is an error unless ``replace``: then ``on_replace`` is told which tables (and how
    many rows) will be dropped, before anything is. Indexes are not copied: build them on the
    target with ``index``, as their types differ between backends.

    Resumable: the target first records a plan (:data:`PLAN_ARTIFACT`: the source, the
    tables, which of them the caller agreed to replace, and which are done), then receives
    every artifact in one commit (before the tables whose metadata names them), then each
    table created holding its rows in one commit (``create_table(data=...)``: a table never
    appears empty or half-copied), and the plan is removed at the end. A migration killed at
    any point is finished by running it again, without ``replace``: the tables the plan made
    or was allowed to replace are (re)copied, completed ones whose source did not change since
    are kept.
    """
    _check_not_same(src, dst)
    names = list(tables) if tables else src.list_tables()
    plan = _read_plan(dst)
    source = _source_id(src)
    if plan is not None and plan.get("source") != source and not replace:
        raise StoreError(
            f"the target {store_uri(dst)} holds an unfinished migration from another store "
            f"({plan.get('uri', '?')}): run that migration again to finish it, or pass "
            "replace=True (--replace) to start this one over it")
    if plan is None or plan.get("source") != source:
        plan = {"source": source, "uri": store_uri(src), "tables": {}}
    entries: dict[str, dict] = plan["tables"]
    existing = set(dst.list_tables())
    # a target table is ours to drop when the plan made it or was allowed to replace it
    ours = {n for n in names if n in entries}
    clash = [n for n in names if n in existing and n not in ours]
    if clash and not replace:
        raise StoreError(f"the target already has table(s) {', '.join(clash)}: "
                         "pass replace=True (--replace) to overwrite them")
    fingerprints = {n: _fingerprint(src, n) for n in names}
    todo = [n for n in names if not (n in existing and entries.get(n, {}).get("done")
                                     == fingerprints[n])]
    # every target table about to be dropped: clashes the caller agreed to replace, and, on
    # a resumed run, tables the first run was allowed to replace or copied (now stale)
    replaced = {n: dst.count(n) for n in todo if n in existing}
    if replaced and on_replace is not None:
        on_replace(replaced)
    for n in todo:
        entries[n] = {"done": None}
    _save_plan(dst, plan)
    artifacts = dst.copy_artifacts(src, [a for a in src.list_artifacts() if a != PLAN_ARTIFACT])
    copied: dict[str, int] = {}
    for name in names:
        if name not in todo:
            copied[name] = dst.count(name)
            continue
        _copy_table(src, dst, name, batch_size, progress)
        copied[name] = dst.count(name)
        entries[name]["done"] = fingerprints[name]
        _save_plan(dst, plan)
    dst.delete_artifact(PLAN_ARTIFACT)
    return MigrationResult(source=store_uri(src), target=store_uri(dst), tables=copied,
                           artifacts=artifacts, replaced=replaced)


def _copy_table(src: VectorStore, dst: VectorStore, name: str, batch_size: int,
                progress: Progress | None) -> None:
    """Create the target's ``name`` holding the source's rows, replacing the target's table
    of that name if there is one: one commit where the backend can replace a table in one
    (:meth:`vectorstore.VectorStore.replace_table`)."""
    info = src.table_info(name)
    total = src.count(name)
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress(f"copy {name}", done[0], total)

    if progress:
        progress(f"copy {name}", 0, total)
    copy = _Copy(src, name, batch_size, tick)
    try:
        dst.replace_table(name, info.schema, key=info.key, vectors=list(info.vectors.values()),
                          metadata=info.metadata, data=copy.reader(info.schema))
    except StoreError as exc:
        raise copy.error(exc) from exc
    except OSError as exc:  # a read-only or full target
        raise StoreError(f"copying table {name!r} to the target {store_uri(dst)} "
                         f"failed: {exc.strerror or exc}") from exc


def open_store(uri: str, *, must_exist: bool) -> VectorStore:
    """Open the store at ``uri``; with ``must_exist``, a missing local directory is an error."""
    from .errors import StoreMissing

    path = local_path(uri)
    if must_exist and path is not None and not path.is_dir():
        raise StoreMissing(f"no Kindred store at {path} (create one with `kindred init`, "
                           "or point --store / KINDRED_STORE at an existing one)")
    return vectorstore.connect(uri)
