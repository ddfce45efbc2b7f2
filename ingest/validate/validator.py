"""The validator: each source batch brought to the plan's columns and types.

A value that does not fit (wrong type, missing id, duplicate id within the load, unparseable
date, vector of the wrong length or with NaN, a NUL character) becomes a :class:`RowError`
naming the source, row number (and file line for text files), column, value and what was
expected. Python only touches the rows that are reported.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..datamodel import EVENTS
from ..identity import KeyDigests, Occurrences, event_digest, replays
from ..result import RowError
from ..sources import Chunk
from .cast import _blank_to_null, _np, _valid_mask, convert
from .hashing import _key_hashes, content_hash
from .holdings import _holdings
from .keyset import DeferredKeys, KeySet, first_occurrence_dups
from .plan import Plan


@dataclass
class Checked:
    """A validated batch: good rows in the target form, and the rejected rows with reasons."""

    good: pa.RecordBatch
    errors: list[RowError]
    rejected: pa.RecordBatch
    """The rejected rows as read from the source (for quarantine)."""
    rejected_rows: np.ndarray
    rejected_lines: np.ndarray | None
    duplicates: int = 0
    """Rows dropped because their key was already loaded (events, de-duplicated silently)."""


@dataclass
class Converted:
    """A chunk brought to the plan's types (:func:`convert_chunk`), before the load's state
    (duplicates, occurrence numbers) is applied by :meth:`Validator.resolve`. Picklable, so a
    runner can compute it on a worker and send it back."""

    chunk: Chunk
    keys: pa.Array
    """The ids (generated ones without their occurrence numbers yet)."""
    arrays: list[pa.Array]
    """The plan's other columns in schema order (converted values, digest, holdings)."""
    problems: list[tuple[str | None, np.ndarray, pa.Array | None, str]]
    digests: np.ndarray | None


def convert_chunk(plan: Plan, chunk: Chunk) -> Converted:
    """Each value of ``chunk`` converted to the plan's column types, with the problems found:
    a function of (plan, chunk) alone, the per-batch map of validation."""
    batch = chunk.batch
    problems: list[tuple[str | None, np.ndarray, pa.Array | None, str]] = []
    arrays: list[pa.Array] = []
    if plan.generate_id:
        keys = content_hash(batch)
    else:
        raw_key = batch.column(plan.id_source)
        keys, bad, _ = convert(raw_key, pa.string())
        keys = _blank_to_null(keys)
        missing = ~_valid_mask(keys) & ~bad
        problems.append((plan.id_source, bad | missing, raw_key,
                         f"a non-empty id ({plan.key})"))
    if not chunk.nul_free:
        nul = _nul_mask(keys)
        if nul is not None:
            problems.append((plan.id_source or plan.key, nul, keys, _NO_NUL))
    for c in plan.columns:
        out, bad, expected = convert(batch.column(c.source), c.type, c.fmt)
        if bad.any():
            problems.append((c.source, bad, batch.column(c.source), expected))
        if not chunk.nul_free:
            nul = _nul_mask(out)
            if nul is not None:
                problems.append((c.source, nul & ~bad, batch.column(c.source), _NO_NUL))
        if plan.table == EVENTS and c.name in ("customer_id", "ts"):
            absent = ~_valid_mask(out) & ~bad
            if absent.any():
                problems.append((c.source, absent, batch.column(c.source),
                                 f"a {c.name} for every event"))
        arrays.append(out)
    digests = None
    if plan.digest:
        digest_arr = event_digest(pa.RecordBatch.from_arrays(
            arrays, names=[c.name for c in plan.columns]))
        arrays.append(digest_arr)
        digests = np.asarray(pc.fill_null(digest_arr, -1).to_numpy(zero_copy_only=False),
                             dtype=np.int64)
    if plan.holdings:
        arrays.append(_holdings(batch, plan))
    return Converted(chunk, keys, arrays, problems, digests)


_NO_NUL = "text without NUL (\\x00) characters, which no store keeps reliably"


def _nul_mask(arr: pa.Array) -> np.ndarray | None:
    """Rows of a string (or list of strings) column holding a NUL character, or None."""
    typ = arr.type
    if pa.types.is_list(typ) and pa.types.is_string(typ.value_type):
        flat = pc.list_flatten(arr)
        if not len(flat):
            return None
        hit = _np(pc.match_substring(flat, "\x00"))
        if not hit.any():
            return None
        parents = np.asarray(pc.list_parent_indices(arr).to_numpy(zero_copy_only=False))
        out = np.zeros(len(arr), dtype=bool)
        out[parents[hit]] = True
        return out
    if not pa.types.is_string(typ) or not len(arr):
        return None
    hit = _np(pc.match_substring(arr, "\x00"))
    return hit if hit.any() else None


class Validator:
    """Validates the chunks of one load against a :class:`Plan`.

    ``seen`` holds the keys loaded so far (and, for events, the keys already in the table), so
    duplicates are caught across batches: an error for customers and products, a silent
    de-duplication for events. With ``defer_duplicates`` (customers and products in ``fail``
    mode, where any duplicate aborts the load) the keys are only hashed per batch and checked
    once by :meth:`duplicate_errors` at the end of the load.

    ``stored`` (events on a table whose id has a scalar index): called with each batch's ids,
    it returns the stored rows among them (id and digest), which are added to ``seen``
    before the batch is checked; then ``seen`` holds the load's ids and the stored ids the
    load hit, never every stored id.
    """

    stored: Callable[[pa.Array], tuple[pa.Array, pa.Array | None]] | None = None

    def __init__(self, plan: Plan, source_name: str, *, dedupe: bool = False,
                 defer_duplicates: bool = False) -> None:
        self.plan = plan
        self.source = source_name
        self.dedupe = dedupe
        self.seen: KeySet | KeyDigests = KeyDigests() if dedupe else KeySet()
        self.occurrences = Occurrences()
        self.deferred = DeferredKeys() if defer_duplicates and not dedupe else None
        self.schema = plan.schema

    def _remember(self, a: np.ndarray, b: np.ndarray, d: np.ndarray | None) -> None:
        if isinstance(self.seen, KeyDigests):
            self.seen.add(a, b, d)
        else:
            self.seen.add(a, b)

    def duplicate_errors(self) -> list[RowError]:
        """Ids repeated in the load (deferred mode), as errors on their later occurrences."""
        if self.deferred is None:
            return []
        col = self.plan.id_source or self.plan.key
        return [RowError(self.source, row, line, col, key,
                         f"an id not already used earlier in this load (row {first} has it)")
                for row, line, key, first in self.deferred.duplicates()]

    def check(self, chunk: Chunk) -> Checked:
        """Validate one chunk: :func:`convert_chunk` (a function of the plan and the chunk
        alone, which a runner may run anywhere) then :meth:`resolve` (the load's state)."""
        return self.resolve(convert_chunk(self.plan, chunk))

    def resolve(self, conv: Converted) -> Checked:
        """The stateful half of :meth:`check`, in the load's order: generated ids' occurrence
        numbers, duplicates within the load and against the table, the good and rejected
        rows."""
        chunk = conv.chunk
        batch = chunk.batch
        n = batch.num_rows
        rows = chunk.rows()
        plan = self.plan
        problems = list(conv.problems)
        keys = conv.keys
        if plan.generate_id and plan.occurrences:
            keys = self.occurrences.ids(keys)
        arrays = [keys, *conv.arrays]
        digests = conv.digests

        rejected = np.zeros(n, dtype=bool)
        for _, mask, _, _ in problems:
            rejected |= mask
        # duplicates among the rows that are otherwise fine
        duplicates = 0
        ok_idx = np.nonzero(~rejected)[0]
        if self.deferred is not None:
            if len(ok_idx) == n:
                self.deferred.add(keys, rows, chunk.lines)
            elif len(ok_idx):
                self.deferred.add(keys.take(pa.array(ok_idx)), rows[ok_idx],
                                  None if chunk.lines is None else chunk.lines[ok_idx])
        elif len(ok_idx):
            ok_keys = keys.take(pa.array(ok_idx))
            a, b = _key_hashes(ok_keys)
            clash = None
            if self.stored is not None and isinstance(self.seen, KeyDigests):
                self.seen.add_keys(*self.stored(ok_keys))
            if digests is not None and isinstance(self.seen, KeyDigests):
                d = digests[ok_idx]
                dup, clash = replays(self.seen, a, b, d)
            else:
                d = None
                dup = first_occurrence_dups(a, b) | self.seen.contains(a, b)
            if clash is not None and clash.any():
                clash_mask = np.zeros(n, dtype=bool)
                clash_mask[ok_idx[clash]] = True
                problems.append((plan.id_source or plan.key, clash_mask, keys,
                                 "the same event as the one already stored or loaded under "
                                 "this id (its customer_id, ts, kind, product_id, category, "
                                 "amount or channel differ; a changed event needs a new id)"))
                rejected |= clash_mask
                dup = dup | clash
            if dup.any():
                dup_mask = np.zeros(n, dtype=bool)
                dup_mask[ok_idx[dup & ~clash if clash is not None else dup]] = True
                if self.dedupe:
                    duplicates = int(dup_mask.sum())
                    rejected |= dup_mask
                    dup_mask[:] = False
                else:
                    problems.append((plan.id_source or plan.key, dup_mask, keys,
                                     "an id not already used earlier in this load"))
                    rejected |= dup_mask
                keep = ~dup
                self._remember(a[keep], b[keep], None if d is None else d[keep])
            else:
                self._remember(a, b, d)
        out = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        errors = self._errors(problems, rows, chunk.lines) if problems else []
        if rejected.any():
            keep_mask = pa.array(~rejected)
            good = out.filter(keep_mask)
            rej_src = np.zeros(n, dtype=bool)
            for _, mask, _, _ in problems:
                rej_src |= mask
            idx = pa.array(np.nonzero(rej_src)[0])
            return Checked(good, errors, batch.take(idx), rows[rej_src],
                           chunk.lines[rej_src] if chunk.lines is not None else None, duplicates)
        empty = batch.slice(0, 0)
        return Checked(out, errors, empty, np.zeros(0, dtype=np.int64),
                       None if chunk.lines is None else np.zeros(0, dtype=np.int64), duplicates)

    def _errors(self, problems: list[tuple[str | None, np.ndarray, pa.Array | None, str]],
                rows: np.ndarray, lines: np.ndarray | None) -> list[RowError]:
        out: list[RowError] = []
        for column, mask, values, expected in problems:
            idx = np.nonzero(mask)[0]
            if not len(idx):
                continue
            vals: list[Any] = [None] * len(idx)
            if values is not None:
                taken = values.take(pa.array(idx))
                vals = [_text(v) for v in taken.to_pylist()]
            for i, v in zip(idx.tolist(), vals, strict=True):
                out.append(RowError(self.source, int(rows[i]),
                                    int(lines[i]) if lines is not None else None,
                                    column, v, expected))
        out.sort(key=lambda e: e.row)
        return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def rows_as_json(batch: pa.RecordBatch) -> list[str]:
    """Each row of a (small) batch of rejected rows as JSON text."""
    return [json.dumps(r, default=str, ensure_ascii=False) for r in batch.to_pylist()]
