"""Store-level administration over the store interface only: stats, migration, URI redaction.

Nothing here knows a backend's internals: migration is scan -> create_table -> write plus
metadata and artifacts, so it works between any two backends (LanceDB -> PostgreSQL, ...).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa

import vectorstore
from vectorstore import StoreError, VectorStore, dsn
from vectorstore.errors import native_free
from vectorstore.registry import scheme_of

from .models import DerivedColumnStats, IndexState, MigrationResult, TableStats, VectorColumnStats

Progress = Callable[[str, int, int | None], None]
"""A progress callback: ``(step, done, total)``; ``total`` is None when unknown."""



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
    embedders = info.metadata.get("embedders", {}) if isinstance(info.metadata, dict) else {}
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


def migrate(src: VectorStore, dst: VectorStore, *, tables: Sequence[str] | None = None,
            replace: bool = False, batch_size: int = 10_000,
            progress: Progress | None = None,
            on_replace: Callable[[dict[str, int]], None] | None = None) -> MigrationResult:
    """Copy tables (rows, key, vector columns, metadata) and artifacts from ``src`` to ``dst``.

    Refuses a target that is the source (see :func:`vectorstore.dsn.same_store`: another
    spelling of the same path or database counts). Each table is written in one commit on the
    target; a table that already exists there is an error unless ``replace``: then
    ``on_replace`` is told which tables (and how many rows) will be dropped, before anything
    is. Indexes are not copied: build them on the target with ``index``, as their types differ
    between backends.
    """
    _check_not_same(src, dst)
    names = list(tables) if tables else src.list_tables()
    existing = set(dst.list_tables())
    clash = [n for n in names if n in existing]
    if clash and not replace:
        raise StoreError(f"the target already has table(s) {', '.join(clash)}: "
                         "pass replace=True (--replace) to overwrite them")
    replaced = {n: dst.count(n) for n in clash}
    if replaced and on_replace is not None:
        on_replace(replaced)
    copied: dict[str, int] = {}
    for name in names:
        info = src.table_info(name)
        total = src.count(name)
        if name in existing:
            dst.drop_table(name)
        dst.create_table(name, info.schema, key=info.key, vectors=list(info.vectors.values()),
                         metadata=info.metadata)
        done = [0]

        def tick(n: int, name: str = name, total: int = total, done: list[int] = done) -> None:
            done[0] += n
            if progress:
                progress(f"copy {name}", done[0], total)

        if progress:
            progress(f"copy {name}", 0, total)
        if total:
            copy = _Copy(src, name, batch_size, tick)
            try:
                dst.write(name, copy.reader(info.schema), mode="append")
            except StoreError as exc:
                dst.drop_table(name, missing_ok=True)
                raise copy.error(exc) from exc
            except OSError as exc:  # a read-only or full target
                with contextlib.suppress(StoreError, OSError):
                    dst.drop_table(name, missing_ok=True)
                raise StoreError(f"copying table {name!r} to the target {store_uri(dst)} "
                                 f"failed: {exc.strerror or exc}") from exc
            except Exception:
                dst.drop_table(name, missing_ok=True)
                raise
        copied[name] = dst.count(name)
    artifacts = []
    for art in src.list_artifacts():
        data, meta = src.get_artifact(art)
        meta = {k: v for k, v in meta.items() if k != "sha256"}
        dst.put_artifact(art, data, meta)
        artifacts.append(art)
    return MigrationResult(source=store_uri(src), target=store_uri(dst), tables=copied,
                           artifacts=artifacts, replaced=replaced)


def open_store(uri: str, *, must_exist: bool) -> VectorStore:
    """Open the store at ``uri``; with ``must_exist``, a missing local directory is an error."""
    from .errors import StoreMissing

    path = local_path(uri)
    if must_exist and path is not None and not path.is_dir():
        raise StoreMissing(f"no Kindred store at {path} (create one with `kindred init`, "
                           "or point --store / KINDRED_STORE at an existing one)")
    return vectorstore.connect(uri)
