"""The store conformance suite also runs on LanceDB over S3 (a moto server on 127.0.0.1)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import vectorstore
from tests.conftest import STORE_FACTORIES


def _lance_s3(request: pytest.FixtureRequest, tmp_path: Path) -> vectorstore.VectorStore:
    # the endpoint from the URI's query, the credentials from the environment
    server = request.getfixturevalue("s3_server")
    return vectorstore.connect(server.store_uri(uuid.uuid4().hex))


FACTORIES = {**STORE_FACTORIES, "lance-s3": _lance_s3}


@pytest.fixture(params=list(FACTORIES), ids=list(FACTORIES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[vectorstore.VectorStore]:
    s = FACTORIES[request.param](request, tmp_path)
    try:
        yield s
    finally:
        s.close()
