"""The one object applications embed: :class:`Kindred` (:mod:`services.facade.core`).

The class is a thin face; each concern's work lives in its own module, as functions over the
facade's store: :mod:`.data_in` (generate, load, ingest, consolidate), :mod:`.embedding`
(embed, index), :mod:`.matching` (match, fit, explain, recommend, evaluation), :mod:`.risk`
(score, top, explain, evaluate), :mod:`.store_admin` (stats, versions, optimize, migrate,
report), and :mod:`._common` (the helpers they share).
"""

from vectorstore import StoreError

from .core import Kindred

__all__ = ["Kindred", "StoreError"]
