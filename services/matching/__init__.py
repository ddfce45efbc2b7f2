"""Product matching: consumers and prospects of a product, explanations, bulk recommendations."""

from .build import build_query
from .explain import Explanation, Neighbour, explain
from .index import DEFAULT_THRESHOLD, IndexStatus, ensure_index
from .match import MatchResult, MatchSummary, match
from .query import METHODS, ProductQuery, count_consumers
from .recommend import RecommendSummary, recommend

__all__ = [
    "DEFAULT_THRESHOLD",
    "METHODS",
    "Explanation",
    "IndexStatus",
    "MatchResult",
    "MatchSummary",
    "Neighbour",
    "ProductQuery",
    "RecommendSummary",
    "build_query",
    "count_consumers",
    "ensure_index",
    "explain",
    "match",
    "recommend",
]
