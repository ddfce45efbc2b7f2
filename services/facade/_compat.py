"""The facade's one vocabulary, and the old keyword names it still accepts for one release.

Every method says ``top`` for a list length (not ``top_k``/``top_n``/``n``/``k``), ``column``
for the vector column (``columns`` for several), ``where`` for a filter and ``attributes`` for
attribute columns to show, as the CLI's options do (README, "Vocabulary"). An old name still
works, with a :class:`DeprecationWarning` naming the new one; giving both is an error. Ids
given as ints (``explain(413, ...)``) are taken as the string ids the tables hold.
"""

from __future__ import annotations

import warnings
from typing import Any

from ..errors import ServiceError


def renamed(method: str, old_kwargs: dict[str, Any], old: str, new: str, value: Any,
            default: Any = None) -> Any:
    """``value``, or the value given under the deprecated name ``old`` (popped from
    ``old_kwargs``) with a DeprecationWarning; both given (``value`` not ``default``) is a
    ServiceError."""
    if old not in old_kwargs:
        return value
    given = old_kwargs.pop(old)
    warnings.warn(f"Kindred.{method}({old}=...) is deprecated: use {new}=... (the old name "
                  "is accepted for one release)", DeprecationWarning, stacklevel=3)
    if not _is_default(value, default):
        raise ServiceError(f"{method}: give {new}= or the deprecated {old}=, not both")
    return given


def no_other(method: str, old_kwargs: dict[str, Any]) -> None:
    """TypeError for a keyword that is neither a parameter nor a deprecated name."""
    if old_kwargs:
        raise TypeError(f"Kindred.{method}() got an unexpected keyword argument "
                        f"{next(iter(old_kwargs))!r}")


def as_id(value: Any, what: str = "customer id") -> str:
    """An id as the tables hold it (a string): ints are converted, anything else refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ServiceError(f"a {what} is a string (or an int), got {type(value).__name__} "
                       f"{value!r}")


def _is_default(value: Any, default: Any) -> bool:
    if value is default:
        return True
    try:
        return bool(value == default)
    except (TypeError, ValueError):
        return False
