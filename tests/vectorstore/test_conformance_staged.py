"""The staged-step part of the conformance suite (:mod:`vectorstore.testing.staged`) on every
backend of ``conftest.py``: write modes, one commit per step, two writers, touched columns."""

from vectorstore.testing.staged import *  # noqa: F403
