"""Every malformed input of tests/faults/cases.py through the CLI: one clear error line, exit
1 (2 for click's usage errors), no traceback, and the store as it was; valid inputs load."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import cases as C

CASES = C.malformed_cases()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return C.make_store(tmp_path_factory.mktemp("bad-input"))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_malformed_input_is_one_clear_error(case: C.Case, store: Path, tmp_path: Path) -> None:
    out = C.run_case(case, store, tmp_path)
    assert out.ok, f"{case.name}: {out.problems}\n{out.output[-2000:]}"
