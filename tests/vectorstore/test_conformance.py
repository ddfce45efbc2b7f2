"""The store conformance suite (:mod:`vectorstore.testing`) on every backend of ``conftest.py``:
tables and types, write modes and errors, search and filters, versions and artifacts.

Each test runs once per backend (the ``store`` fixture): adding a backend there runs the
whole suite on it.
"""

from vectorstore.testing.search import *  # noqa: F403
from vectorstore.testing.tables import *  # noqa: F403
from vectorstore.testing.versions import *  # noqa: F403
