"""Old option names of the ``kindred`` commands, accepted for one release with a warning line.

The commands say what the facade says (README, "Vocabulary"): ``--top`` for a list length,
``--column`` for the vector column, ``--where`` for a filter, ``--attribute`` for attribute
columns to show. An old spelling (``--top-n``, ``-k``, ``-n``, ``--attr``, ``--output``) still
works and prints one ``Warning:`` line on stderr naming the new one.
"""

from __future__ import annotations

from typing import Any

import click


def renamed_option(old: str, new: str, old_value: Any, new_value: Any,
                   default: Any = None) -> Any:
    """``new_value``, or ``old_value`` when the deprecated ``old`` option was given (with a
    warning line); both given is a usage error."""
    if old_value is None or old_value == ():
        return new_value
    click.echo(f"Warning: {old} is deprecated: use {new} (the old spelling is accepted for "
               "one release)", err=True)
    if new_value != default and new_value not in (None, ()):
        raise click.UsageError(f"give {new} or the deprecated {old}, not both")
    return old_value
