"""Which events columns give which consolidated features.

Only the customer id and ``ts`` are required of an events table. The amount column, the
*category* columns (each value gives ``spend_<value>``, the sum of amounts, or
``count_<value>`` when there is no amount) and the *channel* columns (each value gives
``count_<value>``) are, in this order of precedence: named by the caller, remembered from an
earlier run that named them, or the data model's ``amount``, ``category`` and ``channel``
when the table has them. Features of a column that is absent are skipped, each with a note.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import ConsolidationError


@dataclass
class EventColumns:
    """The chosen columns: amount, spend and count dimensions (column -> feature prefix)."""

    amount: str | None
    spend: dict[str, str]
    count: dict[str, str]
    notes: list[str] = field(default_factory=list)
    """Features skipped and why."""
    remember: dict[str, Any] = field(default_factory=dict)
    """What the caller named (plus what was remembered): kept for the next runs."""


def _missing(what: str, cols: Sequence[str], table: str, have: Collection[str]) -> None:
    absent = [c for c in cols if c not in have]
    if absent:
        raise ConsolidationError(f"{what} column(s) {', '.join(map(repr, absent))} not in table "
                                 f"{table!r}; columns: {sorted(have)}")


def choose_columns(have: Collection[str], table: str, *, amount: str | None = None,
                   categories: Sequence[str] | None = None,
                   channels: Sequence[str] | None = None,
                   spend: Mapping[str, str] | None = None,
                   count: Mapping[str, str] | None = None,
                   remembered: Mapping[str, Any] | None = None) -> EventColumns:
    """The columns of events table ``table`` (with columns ``have``) to build features from.

    ``spend`` / ``count`` (column -> prefix) override ``categories`` / ``channels``.
    """
    keep: dict[str, Any] = dict(remembered or {})
    notes: list[str] = []
    if amount is not None:
        _missing("amount", [amount], table, have)
        keep["amount"] = amount
    elif keep.get("amount"):
        amount = str(keep["amount"])
    elif "amount" in have:
        amount = "amount"
    else:
        notes.append("monetary and spend features (no 'amount' column)")

    def named(given: Sequence[str] | None, what: str, default: str) -> list[str]:
        if given is not None:
            cols = list(dict.fromkeys(given))
            _missing(what, cols, table, have)
            keep[what] = cols
            return cols
        if what in keep:
            return [str(c) for c in keep[what]]
        if default in have:
            return [default]
        notes.append(f"per-{default} features (no {default!r} column)")
        return []

    for name, dims in (("spend", spend), ("count", count)):
        if dims is not None:
            keep[name] = dict(dims)
    spend_dims = dict(keep["spend"]) if "spend" in keep else None
    count_dims = dict(keep["count"]) if "count" in keep else None
    if spend_dims is None or count_dims is None:
        cats = named(categories, "categories", "category")
        chans = named(channels, "channels", "channel")
        if spend_dims is None:
            spend_dims = {c: "spend" for c in cats} if amount else {}
        if count_dims is None:
            count_dims = {c: "count" for c in chans}
            if not amount:  # no amounts: categories are counted
                count_dims |= {c: "count" for c in cats if c not in count_dims}
    _missing("dimension", list({**spend_dims, **count_dims}), table, have)
    if spend_dims and amount is None:
        raise ConsolidationError(f"spend features need an amount column in {table!r} (name it "
                                 "with amount=..., or count by the column instead)")
    return EventColumns(amount, spend_dims, count_dims, notes, keep)


__all__ = ["EventColumns", "choose_columns"]
