"""The pytest plugin of the conformance suite: registers its markers and applies
:func:`~vectorstore.testing.marks.notimpl` / :func:`~vectorstore.testing.marks.requires`
against the capabilities of the ``store`` fixture's backend.

Load it with ``pytest_plugins = ["vectorstore.testing.plugin"]`` in a root ``conftest.py``
(or import :func:`pytest_configure` and :func:`_capability_marks` into any conftest).
"""

from __future__ import annotations

import pytest

from .marks import MARKERS


def pytest_configure(config: pytest.Config) -> None:
    for line in MARKERS:
        config.addinivalue_line("markers", line)


@pytest.fixture(autouse=True)
def _capability_marks(request: pytest.FixtureRequest) -> None:
    """On a backend without a marked capability: skip (``requires``) or expect the
    documented error (``notimpl``, a strict xfail with ``raises``)."""
    marks = [m for m in request.node.iter_markers() if m.name in ("notimpl", "requires")]
    if not marks or "store" not in request.fixturenames:
        return
    store = request.getfixturevalue("store")
    for mark in marks:
        capability = mark.args[0]
        if getattr(store.capabilities, capability):
            continue
        if mark.name == "requires":
            pytest.skip(f"the {store.scheme} backend has no {capability}: "
                        f"{mark.kwargs.get('reason', '')}")
        raises = mark.kwargs["raises"]
        request.applymarker(pytest.mark.xfail(
            raises=raises, strict=True,
            reason=f"the {store.scheme} backend has no {capability}: it must raise "
                   f"{raises.__name__}"))
