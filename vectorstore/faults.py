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
(at most 10 minutes). ``KINDRED_FAULT_ERROR=<errno name>`` (e.g. ``ENOSPC``, ``EROFS``)
raises that ``OSError`` there instead of killing (after the pause, if one is set): a disk
that fills or turns read-only at that exact moment. ``KINDRED_FAULT_TRACE=<file>`` appends
one line ``<point>:<table>`` per boundary reached, so a test can list a command's boundaries
from an uninterrupted run and kill it at each one. A no-op when neither is set.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import time
from collections.abc import Iterator

ENV = "KINDRED_FAULT_POINT"
PAUSE_ENV = "KINDRED_FAULT_PAUSE"
TRACE_ENV = "KINDRED_FAULT_TRACE"
ERROR_ENV = "KINDRED_FAULT_ERROR"
POINTS = ("stage", "commit", "committed")
_hits: dict[str, int] = {}


def fault_point(point: str, table: str | None = None) -> None:
    """Act if ``KINDRED_FAULT_POINT`` names this point (and table): SIGKILL, or pause."""
    trace = os.environ.get(TRACE_ENV)
    if trace:
        with open(trace, "a", encoding="utf-8") as fh:
            fh.write(f"{point}:{table}\n")
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
    error = os.environ.get(ERROR_ENV)
    if error:
        code = getattr(errno, error.upper(), None)
        if not isinstance(code, int):
            raise ValueError(f"{ERROR_ENV}={error!r} is not an errno name such as ENOSPC")
        raise OSError(code, os.strerror(code))
    if pause:
        return
    os.kill(os.getpid(), signal.SIGKILL)


@contextlib.contextmanager
def boundary(table: str | None) -> Iterator[None]:
    """``commit`` before and ``committed`` after a one-call write the store does not stage
    itself (a drop, a delete, an index build, a compaction, a restore)."""
    fault_point("commit", table)
    yield
    fault_point("committed", table)
