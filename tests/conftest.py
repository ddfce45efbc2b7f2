"""Shared fixtures: the ``store`` fixture runs a test once per registered backend."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import vectorstore

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def _lance_dir(request: pytest.FixtureRequest, tmp_path: Path) -> vectorstore.VectorStore:
    return vectorstore.connect(str(tmp_path / "lance"))


def _lance_memory(request: pytest.FixtureRequest, tmp_path: Path) -> vectorstore.VectorStore:
    # each test gets its own in-memory database
    return vectorstore.connect(f"memory://{uuid.uuid4().hex}")


def _pgvector(request: pytest.FixtureRequest, tmp_path: Path) -> vectorstore.VectorStore:
    dsn = request.getfixturevalue("pg_dsn")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    request.addfinalizer(lambda: _drop_schema(dsn, schema))
    return vectorstore.connect(dsn, schema=schema)


def _drop_schema(dsn: str, schema: str) -> None:
    """Leave an external test server (KINDRED_TEST_PG_DSN) as clean as it was."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _milvus_lite(request: pytest.FixtureRequest, tmp_path: Path) -> vectorstore.VectorStore:
    # Milvus Lite runs in this process on a file of the test's own directory
    return vectorstore.connect(f"milvus://{tmp_path / 'milvus' / 'store.db'}")


# name -> factory; the test id is the backend's name
STORE_FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], vectorstore.VectorStore]] = {
    "lance-dir": _lance_dir,
    "lance-memory": _lance_memory,
    "pgvector": _pgvector,
    "milvus-lite": _milvus_lite,
}


# backends that need a server carry its mark, so `-m "not pgvector"` deselects them
STORE_MARKS: dict[str, pytest.MarkDecorator] = {"pgvector": pytest.mark.pgvector}


@pytest.fixture(
    params=[pytest.param(name, id=name, marks=STORE_MARKS.get(name, ())) for name in STORE_FACTORIES]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[vectorstore.VectorStore]:
    yield from opened_store(STORE_FACTORIES, request, tmp_path)


def opened_store(factories: dict[str, Callable[[pytest.FixtureRequest, Path], vectorstore.VectorStore]],
                 request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[vectorstore.VectorStore]:
    """The body of a parametrised ``store`` fixture: the store of ``request.param``, closed after."""
    s = factories[request.param](request, tmp_path)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server with pgvector: KINDRED_TEST_PG_DSN, or one started for this session."""
    external = os.environ.get("KINDRED_TEST_PG_DSN")
    if external:
        yield external
        return
    from tests.pgserver_fixture import start_pgserver

    with start_pgserver(tmp_path_factory.mktemp("pgdata")) as dsn:
        yield dsn


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    if not DATASETS.is_dir():
        pytest.skip(f"shared datasets folder not found at {DATASETS} (see its README)")
    return DATASETS


@pytest.fixture(scope="session")
def s3_server() -> Iterator[object]:
    """An S3-compatible server (moto) on 127.0.0.1 for this session, with one bucket."""
    from tests.s3_fixture import start_s3

    with start_s3() as server:
        yield server


@pytest.fixture(scope="session")
def ray_cluster(s3_server: object) -> Iterator[object]:
    """A local Ray instance with 2 CPUs for this session (the Ray runner's workers). Its
    workers get the S3 test server's credentials in their environment, as the nodes of a
    cluster get theirs (instance roles, environment); they never travel in a store handle
    unless given to ``connect`` explicitly."""
    import ray

    from tests.s3_fixture import CREDENTIALS

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=256 * 1024 * 1024, logging_level="ERROR",
             runtime_env={"env_vars": dict(CREDENTIALS)})
    try:
        yield ray
    finally:
        ray.shutdown()
