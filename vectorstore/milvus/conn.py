"""Milvus connections: locations, one client per store, error translation, the commit lock.

``milvus://path/to/file.db`` (or ``milvus:///abs/file.db``) opens Milvus Lite embedded in
this process on a local file (pymilvus starts it on a free 127.0.0.1 port; stores opened on
the same file share it); ``milvus://host:port[/database]`` talks to a Milvus server
(``milvus+https://`` for TLS; ``user:password@`` or ``token=`` for credentials, never
printed).

Writers of one table take its commit lock: a lock in this process, and on a server also a
lease held as a Milvus alias (creating an alias that exists fails, which makes it a mutex
every client can use); a lease whose holder died is broken after :data:`LEASE` seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..dsn import redact, redact_location, remember_secret
from ..errors import (
    BackendUnavailable,
    ConcurrentWriteError,
    InvalidLocation,
    InvalidOption,
    SchemaMismatch,
    StoreError,
    TableNotFound,
)

log = logging.getLogger(__name__)
LEASE = 60.0
"""Seconds after which a lock whose holder stopped renewing it is broken."""
LOCK_WAIT = 600.0
LOCK_PREFIX = "_kindred_lock_"

_local_locks: dict[tuple[str, str], threading.RLock] = {}
_lite_users: dict[str, int] = {}
_registry_lock = threading.Lock()


@dataclass(frozen=True)
class MilvusTarget:
    """A parsed ``milvus://`` location."""

    lite_path: str | None
    address: str | None
    database: str
    display: str
    token: str = field(default="", repr=False)

    @property
    def identity(self) -> str:
        return self.lite_path or f"{self.address}/{self.database}"


def parse_milvus_uri(uri: str, database: str | None = None, token: str | None = None
                     ) -> MilvusTarget:
    """Parse a ``milvus://`` location (see the module docstring)."""
    display = redact_location(uri)
    scheme, _, rest = uri.partition("://")
    secure = scheme.lower() == "milvus+https"
    if scheme.lower() not in ("milvus", "milvus+https", "milvus+http") or not rest:
        raise InvalidLocation(f"not a Milvus location: {display} (expected milvus://FILE.db or "
                              "milvus://HOST:PORT)")
    path_part = rest.split("?", 1)[0]
    if path_part.endswith(".db"):
        if secure:
            raise InvalidLocation(f"{display}: a Milvus Lite file has no TLS")
        path = Path(path_part).expanduser()
        return MilvusTarget(str(path.resolve()), None, "default", display)
    parts = urlsplit(f"http://{rest}")
    try:
        port = parts.port or 19530
    except ValueError:
        raise InvalidLocation(f"{display}: the port is not a number") from None
    if not parts.hostname:
        raise InvalidLocation(f"{display}: expected milvus://HOST:PORT or a path ending in .db")
    db = parts.path.strip("/") or database or "default"
    if database and parts.path.strip("/") and database != db:
        raise InvalidOption(f"database given twice: {db!r} in the URI and {database!r}")
    user_token = token or ""
    if parts.username is not None:
        user_token = unquote(parts.username) + (":" + unquote(parts.password)
                                                if parts.password is not None else "")
    remember_secret(unquote(parts.password) if parts.password else None)
    remember_secret(token)
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    address = f"{'https' if secure else 'http'}://{host}:{port}"
    return MilvusTarget(None, address, db, display, user_token)


def open_client(target: MilvusTarget, timeout: float) -> Any:
    """A connected ``MilvusClient`` (Milvus Lite started in-process for a file)."""
    import pymilvus
    from pymilvus import MilvusClient

    for name in ("pymilvus", "pymilvus.milvus_client"):  # every failure is translated here
        logging.getLogger(name).setLevel(logging.CRITICAL)
    del pymilvus
    try:
        if target.lite_path is not None:
            Path(target.lite_path).parent.mkdir(parents=True, exist_ok=True)
            with _registry_lock:
                _lite_users[target.lite_path] = _lite_users.get(target.lite_path, 0) + 1
            try:
                return MilvusClient(target.lite_path, timeout=timeout)
            except BaseException:
                release_lite(target)
                raise
        return MilvusClient(uri=target.address, token=target.token, db_name=target.database,
                            timeout=timeout)
    except ImportError as exc:
        raise BackendUnavailable(f"the Milvus backend needs a package that is not installed "
                                 f"({exc.name}): install it with pip install 'kindred[milvus]'"
                                 ) from exc
    except Exception as exc:
        reason = redact(getattr(exc, "message", None) or str(exc))
        hint = ""
        if target.lite_path is not None:
            hint = (" (Milvus Lite serves one process per file: is another process using it? "
                    "Run `milvus-lite server` and connect with milvus://HOST:PORT to share it)")
        raise BackendUnavailable(f"cannot open the Milvus store at {target.display}: "
                                 f"{reason}{hint}") from None


def release_lite(target: MilvusTarget) -> None:
    """Stop the in-process Milvus Lite server of a file when its last store closes."""
    if target.lite_path is None:
        return
    with _registry_lock:
        left = _lite_users.get(target.lite_path, 1) - 1
        if left > 0:
            _lite_users[target.lite_path] = left
            return
        _lite_users.pop(target.lite_path, None)
    with contextlib.suppress(Exception):
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(target.lite_path)


def message_of(exc: BaseException) -> str:
    return redact(str(getattr(exc, "message", None) or exc).strip().splitlines()[0]
                  if str(getattr(exc, "message", None) or exc).strip() else type(exc).__name__)


def _persist_race(exc: BaseException) -> bool:
    """Whether a Milvus error is Milvus Lite's failed save of ``aliases.json``.

    Milvus Lite's server applies an alias change in memory, then saves its alias file through
    one fixed temporary name; two alias changes at once (two processes taking their commit
    locks) can make one save fail with ``FileNotFoundError`` although its change was applied.
    """
    text = str(getattr(exc, "message", None) or exc)
    return "aliases.json" in text and "No such file" in text


def _alias_target(client: Any, alias: str) -> str | None:
    from pymilvus.exceptions import MilvusException

    try:
        return str(client.describe_alias(alias)["collection_name"])
    except MilvusException:
        return None


def change_alias(client: Any, op: str, alias: str, collection: str | None = None) -> None:
    """``create``, ``alter`` or ``drop`` an alias, surviving Milvus Lite's persistence race.

    When the change fails with that race (see :func:`_persist_race`), the alias is read back
    and the change counts as done when the server agrees (the alias names ``collection``, or
    is gone for ``drop``); otherwise the error stands. Without this, a commit whose alias
    switch was applied would be taken for a failed one and its new collection dropped.
    """
    from pymilvus.exceptions import MilvusException

    try:
        if op == "create":
            client.create_alias(collection, alias)
        elif op == "alter":
            client.alter_alias(collection, alias)
        elif op == "drop":
            client.drop_alias(alias)
        else:
            raise ValueError(f"unknown alias change {op!r}")
    except MilvusException as exc:
        if not _persist_race(exc) or _alias_target(client, alias) != collection:
            raise
        log.debug("alias %r: the server applied the %s but failed to save it; taken as done",
                  alias, op)


@contextlib.contextmanager
def translate(name: str, action: str) -> Iterator[None]:
    """Milvus client errors as the store's errors, naming the table and the action."""
    from pymilvus.exceptions import MilvusException

    try:
        yield
    except StoreError:
        raise
    except MilvusException as exc:
        msg = message_of(exc)
        where = f"{action} on table {name!r} failed: {msg}"
        low = msg.lower()
        if "does not exist" in low or "not found" in low:
            raise TableNotFound(f"table {name!r} does not exist") from exc
        if "exceeds max" in low or ("type" in low and "mismatch" in low):
            raise SchemaMismatch(where) from exc
        if "unavailable" in low or "connect" in low:
            raise BackendUnavailable(where) from exc
        raise StoreError(where) from exc


def local_lock(identity: str, table: str) -> threading.RLock:
    with _registry_lock:
        return _local_locks.setdefault((identity, table), threading.RLock())


class CommitLock:
    """The commit lock of one table (see the module docstring); a context manager."""

    def __init__(self, store: Any, table: str) -> None:
        self.store = store
        self.table = table
        self.local = local_lock(store._target.identity, table)
        self.remote = store._target.lite_path is None
        self.alias = LOCK_PREFIX + table
        self.token = secrets.token_hex(8)
        self.renewed = 0.0

    def __enter__(self) -> CommitLock:
        self.local.acquire()
        try:
            if self.remote:
                self._acquire()
        except BaseException:
            self.local.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.remote:
                with contextlib.suppress(Exception):
                    change_alias(self.store._client, "drop", self.alias)
                with contextlib.suppress(Exception):
                    self.store._delete_catalog_row(self._row())
        finally:
            self.local.release()

    def _row(self) -> str:
        return f"lock:{self.table}"

    def renew(self) -> None:
        """Extend the lease (long commits call this between batches)."""
        if self.remote and time.monotonic() - self.renewed > LEASE / 3:
            self.renewed = time.monotonic()
            lease = {"token": self.token, "pid": os.getpid(), "expires": time.time() + LEASE}
            self.store._put_catalog_row(self._row(), self.table, json.dumps(lease))

    def _acquire(self) -> None:
        from pymilvus.exceptions import MilvusException

        catalog = self.store._catalog
        deadline = time.monotonic() + LOCK_WAIT
        observed: tuple[Any, float] | None = None
        delay = 0.005
        while True:
            try:
                change_alias(self.store._client, "create", self.alias, catalog)
                self.renew()
                return
            except MilvusException as exc:
                if "exist" not in message_of(exc).lower():
                    raise
            lease = self.store._get_catalog_row(self._row())
            held = json.loads(lease) if lease else None
            mark = held.get("token") if held else None
            now = time.monotonic()
            if observed is None or observed[0] != mark:
                observed = (mark, now)
            elif now - observed[1] > LEASE and (held is None or held["expires"] < time.time()):
                log.warning("breaking the commit lock of table %r: its holder stopped renewing "
                            "it %.0f s ago", self.table, now - observed[1])
                with contextlib.suppress(Exception):
                    change_alias(self.store._client, "drop", self.alias)
                observed = None
                continue
            if now > deadline:
                raise ConcurrentWriteError(f"table {self.table!r}: another writer held the "
                                           f"commit lock for {LOCK_WAIT:.0f} s; nothing was "
                                           "written")
            time.sleep(delay)
            delay = min(delay * 2, 0.25)
