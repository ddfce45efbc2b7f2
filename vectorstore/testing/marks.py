"""The marks of the conformance suite: backends as marked parameters, capability gaps as marks.

- :func:`backend_param`: one backend of a ``store`` fixture's ``params``, carrying marks
  (``lance``, ``pgvector``, ``milvus``, ...) so ``-m "not pgvector"`` deselects it (ibis'
  marked backend matrix).
- :func:`notimpl`: the test needs a capability (a field of
  :class:`~vectorstore.schema.Capabilities`); on a backend without it the test still runs
  and must raise ``raises``, the documented error (a strict xfail: it fails if the backend
  raises anything else or nothing at all), instead of returning early.
- :func:`requires`: the test describes behaviour that only exists with a capability (not an
  error a backend owes); skipped, with the reason, on backends without it.

:mod:`vectorstore.testing.plugin` applies them.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from ..schema import Capabilities

MARKERS = (
    "lance: runs on a LanceDB store",
    "pgvector: needs a PostgreSQL server with pgvector",
    "milvus: runs on Milvus (Lite or a server)",
    "notimpl(capability, raises): on a backend without the capability the test must raise "
    "`raises`",
    "requires(capability, reason): skipped on a backend without the capability",
)
"""The markers the suite uses, as ``pytest`` ini lines."""


def _check_capability(capability: str) -> None:
    if capability not in Capabilities.__dataclass_fields__:
        raise ValueError(f"unknown capability {capability!r}; known: "
                         f"{', '.join(sorted(Capabilities.__dataclass_fields__))}")


def notimpl(capability: str, *, raises: type[BaseException],
            reason: str = "") -> pytest.MarkDecorator:
    """Mark a test that needs ``capability``: without it, the backend must raise ``raises``."""
    _check_capability(capability)
    return pytest.mark.notimpl(capability, raises=raises, reason=reason)


def requires(capability: str, reason: str) -> pytest.MarkDecorator:
    """Mark a test that only applies to backends with ``capability`` (skipped elsewhere)."""
    _check_capability(capability)
    return pytest.mark.requires(capability, reason=reason)


def backend_param(name: str, marks: str | Iterable[str] = ()) -> object:
    """A ``pytest.param`` for the backend ``name`` carrying the marks named in ``marks``."""
    names = [marks] if isinstance(marks, str) else list(marks)
    return pytest.param(name, id=name, marks=[getattr(pytest.mark, m) for m in names])
