"""Click parameter types and checks shared by the ``kindred`` commands.

Python's ``float("nan")`` and ``float("inf")`` parse, and ``click.FloatRange`` lets NaN
through (every comparison with NaN is false), so a threshold of ``nan`` would flag nobody
and exit 0. Every float option uses :data:`FINITE` or :class:`FiniteRange`; options that
cannot be combined go through :func:`exclusive`.
"""

from __future__ import annotations

import math
from typing import Any

import click


class FiniteFloat(click.ParamType):
    """A float that is neither NaN nor infinite."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, float) and math.isfinite(value):
            return value
        try:
            out = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(out):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return out


FINITE = FiniteFloat()


class FiniteRange(click.FloatRange):
    """``click.FloatRange`` that also refuses NaN and infinities."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = FINITE.convert(value, param, ctx)
        return super().convert(number, param, ctx)


def exclusive(**options: Any) -> None:
    """UsageError when more than one of the given ``--option=value`` pairs is set."""
    given = [name for name, value in options.items() if value not in (None, (), False)]
    if len(given) > 1:
        names = " and ".join(f"--{n.replace('_', '-')}" for n in given)
        raise click.UsageError(f"{names} cannot be combined: give one of them")
