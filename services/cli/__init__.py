"""The ``kindred`` admin command line: a thin click layer over :class:`services.facade.Kindred`.

One module per command group, in the shape of click's ``examples/complex``:

\b
- ``root``: the ``main`` group, global options, error handling (``KindredGroup``), ``App``
- ``admin``: init, tables, stats, versions, restore, optimize, migrate, refresh, report, demo
- ``ingest``: generate, ingest, consolidate
- ``embed``: embed, index
- ``match``: match, fit, explain, recommend, recommendations
- ``risk``: risk score, risk top, risk explain
- ``evaluate``: evaluate matching, evaluate recommendations, evaluate risk

Importing this package registers every command on :data:`main`, the console script
(``kindred = "services.cli:main"``).
"""

from __future__ import annotations

from . import admin, embed, evaluate, ingest, match, risk  # noqa: F401  (register the commands)
from .root import DEFAULT_STORE, App, KindredGroup, main, pass_app

__all__ = ["DEFAULT_STORE", "App", "KindredGroup", "main", "pass_app"]
