"""The recommender's building blocks: BM25 weights, ALS factors, latent classes by EM, and
the ranked lists (plain top-n, coverage-aware lists) with their hit counts."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

CLASSES = 8
EM_ITERATIONS = 40

BM25_K1, BM25_B = 100.0, 0.8


def bm25_stats(counts: sp.csr_matrix) -> tuple[np.ndarray, float]:
    """The BM25 weights' population statistics (per-item IDF, mean row length), as
    ``implicit.nearest_neighbours.bm25_weight`` computes them over ``counts``."""
    n = float(counts.shape[0])
    df = np.bincount(counts.tocoo().col, minlength=counts.shape[1])
    idf = np.log(max(n, 1.0)) - np.log1p(df)
    return idf, float(np.ravel(counts.sum(axis=1)).mean()) if counts.shape[0] else 1.0


def bm25(counts: sp.csr_matrix, idf: np.ndarray, avg_len: float) -> sp.csr_matrix:
    """``bm25_weight`` with fixed statistics, so a customer's weights do not depend on which
    other customers are weighed with it (new customers get the fitted population's)."""
    x = counts.tocoo(copy=True).astype(np.float64)
    rows = np.ravel(counts.sum(axis=1))
    norm = (1.0 - BM25_B) + BM25_B * rows / max(avg_len, 1e-12)
    x.data = x.data * (BM25_K1 + 1.0) / (BM25_K1 * norm[x.row] + x.data) * idf[x.col]
    return x.tocsr().astype(np.float32)


def _als(counts: sp.csr_matrix, factors: int, seed: int) -> tuple[Any, np.ndarray]:
    from implicit.als import AlternatingLeastSquares

    weighted = bm25(counts, *bm25_stats(counts))
    model = AlternatingLeastSquares(factors=factors, regularization=0.05, iterations=15,
                                    random_state=seed, num_threads=1)
    model.fit(weighted, show_progress=False)
    return model, weighted


def fit_classes(days: sp.csr_matrix, k: int = CLASSES, seed: int = 0,
                iterations: int = EM_ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """EM for a mixture of multinomials over item-day counts: (class item shares, priors)."""
    rng = np.random.default_rng(seed)
    n = days.shape[0]
    R = rng.dirichlet(np.ones(k), size=n)
    X = days.tocsr().astype(np.float64)
    for _ in range(iterations):
        theta = np.asarray(X.T @ R).T + 0.1
        theta /= theta.sum(axis=1, keepdims=True)
        prior = R.mean(axis=0) + 1e-12
        R = posterior(X, theta, prior)
    return theta, prior


def posterior(X: sp.csr_matrix, theta: np.ndarray, prior: np.ndarray,
              log_prior: np.ndarray | None = None) -> np.ndarray:
    """Each customer's posterior over the classes given their item-day counts (``log_prior``:
    each customer's own log prior over the classes, instead of ``prior``)."""
    L = np.asarray(X @ np.log(theta).T) + (np.log(prior) if log_prior is None else log_prior)
    L -= L.max(axis=1, keepdims=True)
    R = np.exp(L)
    return R / R.sum(axis=1, keepdims=True)


def _top(s: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    n = min(n, s.shape[1])
    idx = np.argpartition(-s, n - 1, axis=1)[:, :n]
    top = np.take_along_axis(s, idx, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1), np.take_along_axis(top, order, axis=1)


def hits(top: np.ndarray, truth: sp.csr_matrix, k: int) -> dict[str, np.ndarray]:
    """Per customer: hit@k, recall@k and NDCG@k of ranked item lists against a basket
    (an empty basket scores 0)."""
    t = truth.tocsr().astype(bool).astype(np.float64)
    n = len(top)
    top = np.asarray(top)[:, :k]
    size = np.diff(t.indptr)
    if n == 0 or top.shape[1] == 0:
        z = np.zeros(n)
        return {"hit": z, "recall": z.copy(), "ndcg": z.copy()}
    rel = np.asarray(t[np.repeat(np.arange(n), top.shape[1]), top.ravel()]).reshape(
        top.shape) > 0
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.concatenate([[1.0], np.cumsum(disc)])[np.minimum(size, k)]
    ok = size > 0
    hit = np.where(ok, rel.any(axis=1), 0.0)
    rec = np.where(ok, rel.sum(axis=1) / np.maximum(size, 1), 0.0)
    ndcg = np.where(ok, (rel * disc[:top.shape[1]]).sum(axis=1) / np.maximum(ideal, 1e-12), 0.0)
    return {"hit": hit.astype(np.float64), "recall": rec, "ndcg": ndcg}


CANDIDATES = 3
""":func:`cover_top` picks each list among the ``CANDIDATES * n`` best-scored items."""
DENSE_COOCCUR = 2_048
"""Up to this many items, :func:`cover_top` looks co-occurrences up in a dense matrix."""


def cover_top(s: np.ndarray, n: int, cooccur: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Greedy lists for "some item of the list is in the next basket": each pick is the item
    with the largest score times the estimated chance that none of the items already picked
    is on the same day (the product of ``1 - cooccur[picked, item]``), so an item that
    (nearly) always comes with a picked one (a product's page beside the product) gives way to
    one that covers other days. The list score is that discounted score: non-increasing, and
    equal to the plain score for the first item. Items scored ``-inf`` come last (and only
    when nothing else is left), as in :func:`_top`."""
    rows, width = s.shape
    n = min(n, width)
    cand, cs = _top(s, min(width, max(n, CANDIDATES * n)))
    m = cand.shape[1]
    co = cooccur.tocsr()
    dense = co.toarray().astype(np.float64) if width <= DENSE_COOCCUR else None
    keys = (np.repeat(np.arange(co.shape[0], dtype=np.int64), np.diff(co.indptr)) * width
            + co.indices)
    vals = co.data.astype(np.float64)
    gain = np.where(np.isfinite(cs), np.maximum(cs, 0.0), -np.inf)
    usable = np.isfinite(gain)
    finite_gain = np.where(usable, gain, 0.0)  # so -inf * 0 never makes a (discarded) NaN
    keep = np.ones((rows, m))
    taken = np.zeros((rows, m), dtype=bool)
    r = np.arange(rows)
    out_i = np.zeros((rows, n), dtype=cand.dtype)
    out_s = np.zeros((rows, n))
    for step in range(n):
        v = np.where(taken, -np.inf, np.where(usable, finite_gain * keep, -np.inf))
        b = np.argmax(v, axis=1)
        none = ~np.isfinite(v[r, b])
        b = np.where(none, np.argmax(~taken, axis=1), b)
        out_i[:, step] = cand[r, b]
        out_s[:, step] = np.where(none, -np.inf, v[r, b])
        taken[r, b] = True
        if dense is not None:
            keep *= 1.0 - dense[cand[r, b][:, None], cand]
        elif len(keys):
            q = cand[r, b].astype(np.int64)[:, None] * width + cand
            pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
            keep *= 1.0 - np.where(keys[pos] == q, vals[pos], 0.0)
    return out_i, out_s
