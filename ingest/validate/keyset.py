"""Keys seen in a load, for duplicate checks: :class:`KeySet` (hash pairs in LSM sorted
runs), :class:`DeferredKeys` (checked once at the end of the load) and
:func:`first_occurrence_dups` (repeats within one batch)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .hashing import _key_hashes, key_hash


class KeySet:
    """The set of keys seen in a load, as pairs of 64-bit hashes in sorted runs.

    16 bytes per key whatever its length (5M keys: 80 MB), membership by binary search. Runs
    are merged log-structured so adding n keys costs O(n log^2 n). A false "seen" needs both
    hashes to collide (probability ~2^-128 per pair).
    """

    def __init__(self) -> None:
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(a) for a, _ in self._runs)

    def contains(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        hit = np.zeros(len(a), dtype=bool)
        for ra, rb in self._runs:
            lo = np.searchsorted(ra, a, side="left")
            hi = np.searchsorted(ra, a, side="right")
            cand = lo < hi
            if not cand.any():
                continue
            idx = np.nonzero(cand)[0]
            for pos_lo, pos_hi, i in zip(lo[idx], hi[idx], idx, strict=True):
                # runs of equal first hashes are almost always of length one
                if (rb[pos_lo:pos_hi] == b[i]).any():
                    hit[i] = True
        return hit

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        if not len(a):
            return
        order = np.argsort(a, kind="stable")
        self._runs.append((a[order], b[order]))
        while len(self._runs) > 1 and len(self._runs[-1][0]) * 2 >= len(self._runs[-2][0]):
            (a2, b2), (a1, b1) = self._runs.pop(), self._runs.pop()
            ma, mb = np.concatenate([a1, a2]), np.concatenate([b1, b2])
            order = np.argsort(ma, kind="stable")
            self._runs.append((ma[order], mb[order]))

    def add_keys(self, keys: pa.Array) -> None:
        self.add(*_key_hashes(keys))


class _Positions:
    """Row (or line) numbers of the kept keys, stored as a start when they are consecutive."""

    def __init__(self) -> None:
        self._parts: list[int | np.ndarray] = []
        self._sizes: list[int] = []

    def add(self, values: np.ndarray | None, n: int) -> None:
        if values is None:
            self._parts.append(-1)
        elif n and int(values[-1]) - int(values[0]) == n - 1 and \
                bool((np.diff(values) == 1).all()):
            self._parts.append(int(values[0]))
        else:
            self._parts.append(np.asarray(values, dtype=np.int64))
        self._sizes.append(n)

    def at(self, part: int, i: int) -> int | None:
        v = self._parts[part]
        if isinstance(v, np.ndarray):
            return int(v[i])
        return None if v == -1 else v + i


class DeferredKeys:
    """The keys of a load, checked for duplicates once at the end (``fail`` mode).

    Per batch this costs one 64-bit hash of the keys (:func:`key_hash`), sorted while the
    writer works; the end check merges the sorted runs and compares neighbours. The key arrays
    are kept (memory: the id column plus 8 bytes per key), so a shared hash is confirmed on
    the key text, and each repeated id is reported with its row and line.
    """

    def __init__(self) -> None:
        self._keys: list[pa.Array] = []
        self._hashes: list[np.ndarray] = []  # each batch's hashes, sorted
        self._rows = _Positions()
        self._lines = _Positions()

    def __len__(self) -> int:
        return sum(len(h) for h in self._hashes)

    def add(self, keys: pa.Array, rows: np.ndarray, lines: np.ndarray | None) -> None:
        if not len(keys):
            return
        self._keys.append(keys)
        self._hashes.append(np.sort(key_hash(keys)))
        self._rows.add(rows, len(keys))
        self._lines.add(lines, len(keys))

    def duplicates(self) -> list[tuple[int, int | None, str, int]]:
        """(row, line, key, row of its first occurrence) of every repeated key, by row."""
        if not self._hashes:
            return []
        merged = np.sort(np.concatenate(self._hashes), kind="stable")  # merges sorted runs
        if not (merged[1:] == merged[:-1]).any():
            return []
        h = np.concatenate([key_hash(k) for k in self._keys])  # load order, for positions
        order = np.argsort(h, kind="stable")
        sh = h[order]
        eq = sh[1:] == sh[:-1]
        if not eq.any():
            return []
        cand_mask = np.zeros(len(h), dtype=bool)
        cand_mask[1:] |= eq
        cand_mask[:-1] |= eq
        cand = np.sort(order[cand_mask])  # global positions, in load order
        keys = pa.chunked_array(self._keys).take(pa.array(cand))
        codes = np.asarray(pc.dictionary_encode(keys.combine_chunks()).indices.to_numpy(
            zero_copy_only=False), dtype=np.int64)
        _, first = np.unique(codes, return_index=True)
        first_of_code = np.empty(codes.max() + 1, dtype=np.int64)
        first_of_code[codes[first]] = cand[first]
        later = np.ones(len(cand), dtype=bool)
        later[first] = False
        bounds = np.cumsum([0, *self._rows._sizes])
        out = []
        texts = keys.to_pylist()
        for j in np.nonzero(later)[0].tolist():
            g = int(cand[j])
            part = int(np.searchsorted(bounds, g, side="right")) - 1
            orig = int(first_of_code[codes[j]])
            opart = int(np.searchsorted(bounds, orig, side="right")) - 1
            out.append((self._rows.at(part, g - bounds[part]) or 0,
                        self._lines.at(part, g - bounds[part]), texts[j],
                        self._rows.at(opart, orig - bounds[opart]) or 0))
        return out


def first_occurrence_dups(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mask of rows whose (a, b) pair already appeared earlier in the same arrays."""
    if len(a) < 2:
        return np.zeros(len(a), dtype=bool)
    order = np.lexsort((b, a))  # stable: equal pairs keep their original order
    sa, sb = a[order], b[order]
    same = np.zeros(len(a), dtype=bool)
    same[1:] = (sa[1:] == sa[:-1]) & (sb[1:] == sb[:-1])
    out = np.zeros(len(a), dtype=bool)
    out[order[same]] = True
    return out
