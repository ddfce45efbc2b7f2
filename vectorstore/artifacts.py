"""Artifacts: fitted state (embedder transforms, detectors) kept in the store beside the tables.

Bytes with a sha256 in one reserved table (``_kindred_artifacts``), optionally HMAC-sealed
(:mod:`vectorstore.sealing`); readers get bytes back only after the digest matches. These are
the bodies of :class:`vectorstore.base.VectorStore`'s artifact methods (documented there), so
every backend shares them; content-addressed artifacts are swept once nothing names them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    from .base import VectorStore

ARTIFACT_TABLE = "_kindred_artifacts"
_ARTIFACT_SCHEMA = pa.schema([
    pa.field("name", pa.string(), nullable=False),
    pa.field("data", pa.large_binary()),
    pa.field("sha256", pa.string()),
    pa.field("metadata", pa.string()),
    pa.field("created_at", pa.timestamp("us")),
])
CONTENT_ADDRESSED = "_content_addressed"
"""Artifact metadata flag of :meth:`VectorStore.save_artifact` artifacts (swept when unused)."""
ARTIFACT_GRACE = dt.timedelta(hours=24)


def _artifact_row(name: str, data: bytes, metadata: dict[str, Any]) -> pa.Table:
    import hashlib
    import json

    return pa.table({
        "name": [name], "data": [data], "sha256": [hashlib.sha256(data).hexdigest()],
        "metadata": [json.dumps(metadata, sort_keys=True, default=str)],
        "created_at": [dt.datetime.now(dt.UTC).replace(tzinfo=None)],
    }, schema=_ARTIFACT_SCHEMA)


def put_artifact(store: VectorStore, name: str, data: bytes, metadata: dict[str, Any] | None = None) -> str:
    import hashlib

    from .sealing import seal

    store._artifact_table()
    store.write(ARTIFACT_TABLE, _artifact_row(name, data, seal(name, data, metadata or {})),
               mode="upsert")
    return hashlib.sha256(data).hexdigest()


def get_artifact(store: VectorStore, name: str) -> tuple[bytes, dict[str, Any]]:
    data, meta, expected = store._artifact_record(name)
    meta.pop(CONTENT_ADDRESSED, None)
    meta["sha256"] = expected
    return data, meta


def copy_artifacts(store: VectorStore, source: VectorStore, names: Sequence[str] | None = None
                   ) -> list[str]:
    wanted = list(source.list_artifacts() if names is None else names)
    if not wanted:
        return []

    def rows() -> Iterator[pa.RecordBatch]:
        for name in wanted:
            data, meta, _ = source._artifact_record(name)
            yield from _artifact_row(name, data, meta).to_batches()

    store._artifact_table()
    store.write(ARTIFACT_TABLE, rows(), mode="upsert")
    return wanted


def artifact_record(store: VectorStore, name: str) -> tuple[bytes, dict[str, Any], str]:
    import hashlib
    import json

    from .errors import ArtifactCorrupt, ArtifactNotFound
    from .sealing import verify

    if not store.has_table(ARTIFACT_TABLE) and ARTIFACT_TABLE not in store._hidden_tables():
        raise ArtifactNotFound(f"no stored artifact {name!r}")
    from .filters import Cmp

    rows = store.to_arrow(ARTIFACT_TABLE, filter=Cmp("name", "=", name))
    if rows.num_rows == 0:
        raise ArtifactNotFound(f"no stored artifact {name!r}")
    data = rows.column("data")[0].as_py() or b""
    expected = rows.column("sha256")[0].as_py()
    if hashlib.sha256(data).hexdigest() != expected:
        raise ArtifactCorrupt(f"artifact {name!r} does not match its sha256 {expected}: "
                              "refusing to use it")
    try:
        meta = json.loads(rows.column("metadata")[0].as_py() or "{}")
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise ArtifactCorrupt(f"artifact {name!r} has metadata that is not a JSON object: "
                              "refusing to use it")
    verify(name, data, meta)
    return data, meta, expected


def save_artifact(store: VectorStore, prefix: str, data: bytes, metadata: dict[str, Any] | None = None
                  ) -> str:
    import hashlib

    from .sealing import seal

    name = f"{prefix}.{hashlib.sha256(data).hexdigest()[:16]}"
    meta = seal(name, data, {**(metadata or {}), CONTENT_ADDRESSED: True})
    store._artifact_table()
    store.write(ARTIFACT_TABLE, _artifact_row(name, data, meta), mode="insert_missing")
    return name


def list_artifacts(store: VectorStore) -> list[str]:
    if ARTIFACT_TABLE not in store._hidden_tables():
        return []
    return sorted(store.to_arrow(ARTIFACT_TABLE, columns=["name"]).column("name").to_pylist())


def delete_artifact(store: VectorStore, name: str) -> None:
    from .filters import Cmp

    if ARTIFACT_TABLE in store._hidden_tables():
        store.delete(ARTIFACT_TABLE, Cmp("name", "=", name))


def sweep_artifacts(store: VectorStore, *, grace: dt.timedelta = ARTIFACT_GRACE) -> list[str]:
    import json

    from .filters import In

    if ARTIFACT_TABLE not in store._hidden_tables():
        return []
    rows = store.to_arrow(ARTIFACT_TABLE, columns=["name", "metadata", "created_at"])
    cutoff = dt.datetime.now(dt.UTC).replace(tzinfo=None) - grace
    described = " ".join(json.dumps(store.table_info(t).metadata, default=str)
                         for t in store.list_tables())
    doomed = []
    for name, meta, created in zip(rows.column("name").to_pylist(),
                                   rows.column("metadata").to_pylist(),
                                   rows.column("created_at").to_pylist(), strict=True):
        try:
            swept = json.loads(meta or "{}").get(CONTENT_ADDRESSED) is True
        except ValueError:
            swept = False
        if swept and created is not None and created < cutoff and name not in described:
            doomed.append(name)
    if doomed:
        store.delete(ARTIFACT_TABLE, In("name", tuple(doomed)))
    return doomed


def artifact_table(store: VectorStore) -> None:
    if ARTIFACT_TABLE not in store._hidden_tables():
        store.create_table(ARTIFACT_TABLE, _ARTIFACT_SCHEMA, key="name", exist_ok=True)
