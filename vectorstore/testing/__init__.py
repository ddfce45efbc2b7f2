"""The store conformance suite, shipped with the package (as fsspec ships its abstract tests):
the behaviour every backend must share, checked against exact references.

Every test takes a ``store`` fixture: a new, empty store of the backend under test. A
backend registered from outside (:func:`vectorstore.register_backend`) runs the suite with
a ``conftest.py`` that loads the plugin and gives the fixture::

    pytest_plugins = ["vectorstore.testing.plugin"]

    @pytest.fixture(params=[backend_param("mine", "mine")])
    def store(request, tmp_path):
        s = vectorstore.connect(f"mine://{tmp_path}")
        yield s
        s.close()

and one test module per part of the suite it wants::

    from vectorstore.testing.tables import *  # noqa: F403

Parts: :mod:`~vectorstore.testing.tables` (tables, types, write modes, errors),
:mod:`~vectorstore.testing.search` (search, indexes, filters against the reference),
:mod:`~vectorstore.testing.versions` (versions, artifacts), :mod:`~vectorstore.testing.staged`
(staged steps, two writers, touched columns) and :mod:`~vectorstore.testing.handle` (the
:class:`~vectorstore.table.Table` handle's cached description). A capability a backend lacks
(:class:`~vectorstore.schema.Capabilities`) is declared, not skipped: tests marked
:func:`notimpl` then assert that the backend raises the documented error. Needs pytest and
hypothesis (the ``test`` extra).
"""

from .marks import MARKERS, backend_param, notimpl, requires

SUITE = ("vectorstore.testing.tables", "vectorstore.testing.search",
         "vectorstore.testing.versions", "vectorstore.testing.staged",
         "vectorstore.testing.handle")
"""The suite's test modules."""

__all__ = ["MARKERS", "SUITE", "backend_param", "notimpl", "requires"]
