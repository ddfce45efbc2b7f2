"""Named commit boundaries where a test can make the process kill itself (SIGKILL).

``KINDRED_FAULT_POINT=<point>`` or ``<point>:<table>`` kills the process at the first hit
of that point (for that table); an ``@N`` suffix kills at the N-th hit. Points:

- ``stage``: after each partition of a staged step has been written (nothing visible yet);
- ``commit``: everything staged, just before the one commit;
- ``committed``: just after the commit, before the step returns.

Artifact writes are commits to the ``_kindred_artifacts`` table, so
``committed:_kindred_artifacts`` kills a step between storing a fitted model and the commit
that references it. Used by the fault tests; a no-op when the variable is unset.
"""

from __future__ import annotations

import os
import signal

ENV = "KINDRED_FAULT_POINT"
POINTS = ("stage", "commit", "committed")
_hits: dict[str, int] = {}


def fault_point(point: str, table: str | None = None) -> None:
    """SIGKILL this process if ``KINDRED_FAULT_POINT`` names this point (and table)."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition("@")
    if name not in (point, f"{point}:{table}"):
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
