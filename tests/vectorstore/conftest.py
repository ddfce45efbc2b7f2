"""The store conformance suite runs on every backend, LanceDB over S3 (a moto server on
127.0.0.1) included; each backend is a marked parameter (``-m "not pgvector"`` deselects
the PostgreSQL runs), and the suite's plugin applies its capability marks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import vectorstore
from tests.conftest import STORE_FACTORIES, opened_store
from vectorstore.testing import backend_param
from vectorstore.testing.plugin import _capability_marks, pytest_configure  # noqa: F401


def _lance_s3(request: pytest.FixtureRequest, tmp_path: Path) -> vectorstore.VectorStore:
    # the endpoint from the URI's query, the credentials from the environment
    server = request.getfixturevalue("s3_server")
    return vectorstore.connect(server.store_uri(uuid.uuid4().hex))


FACTORIES = {**STORE_FACTORIES, "lance-s3": _lance_s3}
MARKS = {"lance-dir": "lance", "lance-memory": "lance", "lance-s3": "lance",
         "pgvector": "pgvector", "milvus-lite": "milvus"}


@pytest.fixture(params=[backend_param(name, MARKS.get(name, ())) for name in FACTORIES])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[vectorstore.VectorStore]:
    yield from opened_store(FACTORIES, request, tmp_path)
