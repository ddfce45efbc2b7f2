"""Fixtures the service tests share: the prepared synthetic bank (built once per module) and
a facade opened on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from services.facade import Kindred
from tests.services._bank import prepared_bank


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the generated bank's files, a store with the pipeline run on them)."""
    return prepared_bank(tmp_path_factory)


@pytest.fixture
def kindred(bank: tuple[Path, Path]) -> Iterator[Kindred]:
    k = Kindred(str(bank[1]))
    yield k
    k.close()
