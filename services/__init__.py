"""Kindred services: product matching, risk scoring, evaluation, the facade and the CLI.

``from services import Kindred`` is the facade (:mod:`services.facade`), imported on first
use so that ``kindred --help`` and ``from services import risk`` stay light.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .facade import Kindred


def __getattr__(name: str) -> Any:
    if name == "Kindred":
        from .facade import Kindred

        return Kindred
    raise AttributeError(f"module 'services' has no attribute {name!r}")


__all__ = ["Kindred", "__version__"]
