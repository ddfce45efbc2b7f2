"""Row identity in a load: generated ids that keep repeats, and event digests.

Generated ids (events without an ``event_id`` column, ``generate_id`` customers) are the
sha256 of the source row's content (:func:`ingest.validate.content_hash`). A purchase log
repeats rows on purpose (the same item bought twice on one day), so by default the id also
carries the row's *occurrence number* among identical rows of the same source: the first
keeps the bare hash, the second gets ``<hash>#2``, the third ``<hash>#3``... Re-loading the
same source (or a longer version of it, rows appended at the end) gives every row the same
id again, so it writes nothing; a source whose rows are replays of each other is loaded with
``dedupe`` (bare hashes: identical rows count once). Occurrences are counted within one
source: identical rows in two different files are taken as the same event.

An event with an explicit ``event_id`` also stores ``event_digest``: the first 60 bits of the
sha256 of its event fields (:data:`DIGEST_FIELDS`, nulls left out, so a load without a column
equals stored nulls). An id that comes again with the same digest is a replay ("unchanged");
with another digest it is an error naming the id, never silently "unchanged". Stored rows
without a digest (loaded before digests existed) are taken as replays.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DIGEST_COLUMN = "event_digest"
DIGEST_FIELDS = ("customer_id", "ts", "kind", "product_id", "category", "amount", "channel")
"""The event fields whose values make two events with one id the same event."""
UNKNOWN = np.int64(-1)
"""The digest of a key whose content is not known (a stored row without a digest)."""


_LOCAL = threading.local()


def duckdb_connection() -> Any:
    """This thread's DuckDB connection for hashing batches (opening one costs ~30 ms, about
    as much as hashing a batch; connections must not be shared between threads)."""
    con = getattr(_LOCAL, "con", None)
    if con is None:
        import duckdb

        con = _LOCAL.con = duckdb.connect()
        con.execute("SET enable_progress_bar = false")
    return con


def hash_rows(sql: str, batch: pa.RecordBatch) -> pa.Array:
    """The one column of ``sql`` run over ``batch`` (registered as ``t``)."""
    con = duckdb_connection()
    con.register("t", pa.Table.from_batches([batch]))
    try:
        return con.sql(sql).to_arrow_table().column(0).combine_chunks()
    finally:
        con.unregister("t")


def event_digest(batch: pa.RecordBatch) -> pa.Array:
    """int64 digest of each validated event row (the :data:`DIGEST_FIELDS` it has).

    Values are hashed as text, ``name=value`` for non-null values only, by DuckDB's sha256
    (stable across versions and machines, unlike a process-seeded hash).
    """
    names = sorted(n for n in batch.schema.names if n in DIGEST_FIELDS)
    if not names:
        return pa.nulls(batch.num_rows, pa.int64())
    parts = []
    for n in names:
        value = f'CAST("{n}" AS VARCHAR)'
        if pa.types.is_timestamp(batch.schema.field(n).type):
            value = f'CAST(epoch_us("{n}") AS VARCHAR)'  # no time-zone formatting involved
        parts.append(f"'{n}=' || {value}")
    text = "concat_ws(chr(31), " + ", ".join(parts) + ")"
    sql = f"SELECT CAST(('0x' || left(sha256({text}), 15)) AS UBIGINT)::BIGINT AS d FROM t"
    return hash_rows(sql, batch.select(names)).cast(pa.int64())


class KeyDigests:
    """Keys seen so far (stored and loaded), as pairs of 64-bit hashes, each with a digest.

    The same sorted-runs layout as :class:`ingest.validate.KeySet` (16 bytes per key plus 8
    for the digest), with a vectorised lookup that returns the digest of each key found.
    """

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(a) for a, _, _ in self._runs)

    def add(self, a: np.ndarray, b: np.ndarray, d: np.ndarray | None = None) -> None:
        if not len(a):
            return
        d = np.full(len(a), UNKNOWN) if d is None else np.asarray(d, dtype=np.int64)
        order = np.lexsort((b, a))
        self._runs.append((a[order], b[order], d[order]))
        while len(self._runs) > 1 and len(self._runs[-1][0]) * 2 >= len(self._runs[-2][0]):
            (a2, b2, d2), (a1, b1, d1) = self._runs.pop(), self._runs.pop()
            ma, mb, md = np.concatenate([a1, a2]), np.concatenate([b1, b2]), \
                np.concatenate([d1, d2])
            order = np.lexsort((mb, ma))
            self._runs.append((ma[order], mb[order], md[order]))

    def add_keys(self, keys: pa.Array, digests: pa.Array | None = None) -> None:
        from .validate import key_hash

        d = None
        if digests is not None:
            d = np.asarray(pc.fill_null(digests, int(UNKNOWN)).to_numpy(zero_copy_only=False),
                           dtype=np.int64)
        self.add(key_hash(keys, 0), key_hash(keys, 1), d)

    def lookup(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, digest of each found key; :data:`UNKNOWN` elsewhere)."""
        hit = np.zeros(len(a), dtype=bool)
        digest = np.full(len(a), UNKNOWN)
        for ra, rb, rd in self._runs:
            lo = np.searchsorted(ra, a, side="left")
            hi = np.searchsorted(ra, a, side="right")
            for i in np.nonzero(hi - lo > 1)[0].tolist():  # equal first hashes: rare
                j = lo[i] + np.searchsorted(rb[lo[i]:hi[i]], b[i])
                if j < hi[i] and rb[j] == b[i]:
                    hit[i], digest[i] = True, rd[j]
            one = np.nonzero(hi - lo == 1)[0]
            if len(one):
                same = rb[lo[one]] == b[one]
                found = one[same]
                hit[found] = True
                digest[found] = rd[lo[found]]
        return hit, digest

    def contains(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.lookup(a, b)[0]


def replays(seen: KeyDigests, a: np.ndarray, b: np.ndarray, d: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """(replayed, clashing) masks of keys already seen or repeated within the batch.

    A key found in ``seen`` is compared with the digest stored there, a key repeated within
    the batch with its first occurrence; equal (or unknown) digests are replays, different
    ones clashes: the same id for other content.
    """
    n = len(a)
    order = np.lexsort((b, a))  # stable: the first row of each run is the earliest
    sa, sb = a[order], b[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = (sa[1:] != sa[:-1]) | (sb[1:] != sb[:-1])
    first_of = np.nonzero(starts)[0][np.cumsum(starts) - 1]
    later = np.zeros(n, dtype=bool)
    later[order] = ~starts
    first_digest = np.empty(n, dtype=np.int64)
    first_digest[order] = d[order][first_of]
    hit, stored = seen.lookup(a, b)
    ref = np.where(hit, stored, first_digest)
    dup = hit | later
    clash = dup & (ref != UNKNOWN) & (d != UNKNOWN) & (d != ref)
    return dup & ~clash, clash


class Occurrences:
    """Numbers identical rows of one load: the k-th row with a given content hash is k.

    Memory: 16 bytes per distinct row (a :class:`KeyDigests` of first occurrences) plus a
    dict entry per content that repeats; Python touches only repeated contents.
    """

    def __init__(self) -> None:
        self._first = KeyDigests()
        self._counts: dict[tuple[int, int], int] = {}

    def number(self, hashes: pa.Array) -> np.ndarray:
        """The 1-based occurrence number of each row of ``hashes`` in the load so far."""
        from .validate import key_hash

        n = len(hashes)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        a, b = key_hash(hashes, 0), key_hash(hashes, 1)
        order = np.lexsort((b, a))
        sa, sb = a[order], b[order]
        starts = np.ones(n, dtype=bool)
        starts[1:] = (sa[1:] != sa[:-1]) | (sb[1:] != sb[:-1])
        group = np.cumsum(starts) - 1
        first_pos = np.nonzero(starts)[0]
        rank = np.arange(n) - first_pos[group]  # 0-based rank within this batch
        ga, gb = sa[first_pos], sb[first_pos]
        seen = self._first.contains(ga, gb)
        prior = np.zeros(len(first_pos), dtype=np.int64)
        sizes = np.diff(np.append(first_pos, n))
        for g in np.nonzero(seen)[0].tolist():
            k = (int(ga[g]), int(gb[g]))
            prior[g] = self._counts.get(k, 1)
        for g in np.nonzero(seen | (sizes > 1))[0].tolist():
            k = (int(ga[g]), int(gb[g]))
            self._counts[k] = int(prior[g] + sizes[g])
        self._first.add(ga[~seen], gb[~seen])
        occ = np.empty(n, dtype=np.int64)
        occ[order] = prior[group] + rank + 1
        return occ

    def ids(self, hashes: pa.Array) -> pa.Array:
        """``hash`` for a first occurrence, ``hash#k`` for the k-th identical row."""
        occ = self.number(hashes)
        if not len(occ) or occ.max() <= 1:
            return hashes
        later = pa.array(occ > 1)
        suffixed = pc.binary_join_element_wise(hashes, pa.array(occ.astype(str)), "#")
        return pc.if_else(later, suffixed, hashes)


__all__ = ["DIGEST_COLUMN", "DIGEST_FIELDS", "KeyDigests", "Occurrences", "event_digest",
           "replays"]
