"""Named commit boundaries where a test can make the process kill itself (SIGKILL) or pause.

``KINDRED_FAULT_POINT=<point>`` or ``<point>:<table>`` kills the process at the first hit
of that point (for that table); an ``@N`` suffix acts at the N-th hit. Points:

- ``stage``: after each partition of a staged step has been written (nothing visible yet);
- ``commit``: everything staged, just before the one commit;
- ``committed``: just after the commit, before the step returns.

Artifact writes are commits to the ``_kindred_artifacts`` table, so
``committed:_kindred_artifacts`` kills a step between storing a fitted model and the commit
that references it. With ``KINDRED_FAULT_PAUSE`` the process instead prints
``kindred fault point <name> reached`` on stderr and waits there, so a test can make another
writer commit at that exact moment: for that many seconds, or until the file it names exists
(at most 10 minutes). A no-op when ``KINDRED_FAULT_POINT`` is unset.
"""

from __future__ import annotations

import os
import signal
import sys
import time

ENV = "KINDRED_FAULT_POINT"
PAUSE_ENV = "KINDRED_FAULT_PAUSE"
POINTS = ("stage", "commit", "committed")
_hits: dict[str, int] = {}


def fault_point(point: str, table: str | None = None) -> None:
    """Act if ``KINDRED_FAULT_POINT`` names this point (and table): SIGKILL, or pause."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition("@")
    if name not in (point, f"{point}:{table}"):
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != int(nth or 1):
        return
    pause = os.environ.get(PAUSE_ENV)
    if pause:
        print(f"kindred fault point {name} reached", file=sys.stderr, flush=True)
        try:
            time.sleep(float(pause))
        except ValueError:  # a file to wait for
            deadline = time.monotonic() + 600
            while not os.path.exists(pause) and time.monotonic() < deadline:
                time.sleep(0.05)
        return
    os.kill(os.getpid(), signal.SIGKILL)
