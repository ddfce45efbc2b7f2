"""Progress callbacks: the one protocol every long step reports through.

A step (ingest, embed, risk scoring, matching, ...) takes a :data:`Progress` and calls it with
``(done, total)``; a front end that shows several steps at once (the CLI's bars, the facade)
takes a :data:`LabelledProgress` that also names the step, and hands each step
:func:`for_step` of it. It lives in ``ingest`` (the lowest layer that reports progress) so
``services`` can import it without a circle.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["LabelledProgress", "Progress", "for_step"]

Progress = Callable[[int, "int | None"], None]
"""``progress(done, total)``: called after each batch; ``total`` is None when unknown."""

LabelledProgress = Callable[[str, int, "int | None"], None]
"""``progress(step, done, total)``: a :data:`Progress` that also names the step."""


def for_step(progress: LabelledProgress | None, step: str) -> Progress | None:
    """The ``(done, total)`` callback the lower layers take, reporting to ``progress`` as
    ``step`` (None without a ``progress``)."""
    if progress is None:
        return None
    return lambda done, total: progress(step, done, total)
