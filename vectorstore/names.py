"""Validation of table and column names.

Names reach SQL (PostgreSQL) and DataFusion (LanceDB) predicates, so they are restricted to
plain identifiers and then quoted as identifiers as well: two independent guards.
"""

from __future__ import annotations

import re

from .errors import InvalidName

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def check_name(name: object, kind: str = "name") -> str:
    """Return ``name`` if it is a plain identifier (letters, digits, ``_``; at most 63 chars)."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise InvalidName(
            f"invalid {kind} {name!r}: expected letters, digits and '_' "
            "(not starting with a digit, at most 63 characters)"
        )
    return name
