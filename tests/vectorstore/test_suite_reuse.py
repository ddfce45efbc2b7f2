"""The conformance suite run from outside the project, as a third-party backend runs it: a
project of its own (a temporary directory, its own ``conftest.py``) loads the plugin, gives a
``store`` fixture and imports a part of the suite. A correct backend passes; a backend that
declares no versions yet has them fails the ``notimpl`` tests (the marks can fail)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONFTEST = '''
import dataclasses
import os

import pytest

from vectorstore.lance import LanceStore
from vectorstore.testing import backend_param

pytest_plugins = ["vectorstore.testing.plugin"]


class Mine(LanceStore):
    """A backend from outside: LanceDB under another name."""


class Lying(LanceStore):
    """Declares no versions, yet keeps them (so it raises no UnsupportedOperation)."""

    capabilities = dataclasses.replace(LanceStore.capabilities, versions=False)


@pytest.fixture(params=[backend_param("mine", "lance")])
def store(request, tmp_path):
    cls = Lying if os.environ.get("SUITE_BACKEND") == "lying" else Mine
    s = cls.open(str(tmp_path / "db"))
    yield s
    s.close()
'''

TESTS = "from vectorstore.testing.versions import *  # noqa: F403\n"


def _run(tmp_path: Path, backend: str) -> subprocess.CompletedProcess[str]:
    project = tmp_path / "thirdparty"
    project.mkdir(exist_ok=True)
    (project / "conftest.py").write_text(CONFTEST)
    (project / "test_mine.py").write_text(TESTS)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "SUITE_BACKEND": backend}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "--rootdir", str(project), "-c", os.devnull, "--strict-markers",
                           "-rxX", str(project)],
                          capture_output=True, text=True, env=env, cwd=project, timeout=600)


def test_a_backend_from_outside_runs_the_suite(tmp_path):
    run = _run(tmp_path, "mine")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "4 passed" in run.stdout, run.stdout


def test_a_backend_that_misdeclares_a_capability_fails_its_notimpl_tests(tmp_path):
    run = _run(tmp_path, "lying")
    assert run.returncode == 1, run.stdout + run.stderr
    # both versions tests pass although the backend says it has no versions: strict XPASS
    assert run.stdout.count("XPASS(strict)") == 2, run.stdout
    assert "2 failed, 2 passed" in run.stdout, run.stdout
