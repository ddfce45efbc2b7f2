"""Behaviour recommendations: what each customer is likely to have next, from their events.

Items are the values of the events' item columns (``product_id`` values as they are, other
columns prefixed: ``category:travel``, as the behaviour embedder names them). The score of item
``i`` for customer ``u`` blends three signals:

- **own history** (repeatable items only): the share of the customer's active days with the
  item, weighted ``lambda_u = days_u / (days_u + shrink)``, so a customer with little history
  leans on the next signal;
- **behaviour profile**: a latent-class model of the customers' item-day counts (a mixture of
  :data:`CLASSES` multinomials fitted by EM): the item's share of a day under the customer's
  posterior over the classes. The posterior's prior is shared, or (when validation prefers it)
  each customer's own from their attributes (:mod:`.recommend_prior`), so who the customer is
  counts most when they have few events. The classes' item shares can weigh recent days more
  (:func:`decayed_shares`, half-life from :data:`HALF_LIVES`): what a class has *lately*, when
  item shares drift. A customer without history or attributes gets the population's mix;
- **behaviour factors**: implicit-feedback ALS (the ``implicit`` library) on the customers x
  items matrix (BM25-weighted counts), folded in for any customer from the item factors,
  weighted by ``w_factors``.

A list is the ``n`` best scores, or (``diversify``) built greedily for the chance that *some*
item of it is in the next basket (:func:`cover_top`): an item that nearly always comes on the
same day as one already picked gives way to one that covers other days.

An item is *repeatable* when the products table says so (a boolean ``repeatable`` column) or,
by default, when at least :data:`REPEAT_RATE` of the customers who had it had it on two or more
days (a mortgage instalment, groceries); an item that is not repeatable and was already had is
never recommended again (a term deposit once bought). The half-life, the class prior,
``shrink``, ``w_factors`` and ``diversify`` are chosen jointly by hit@k on a validation basket
inside the training events (each customer's last training day), never on the data being
evaluated. The fitted state (items, item factors, class shares, class-prior coefficients,
co-occurrences, repeat flags, weights) is plain arrays saved as an ``.npz`` artifact (no
pickle). The recency weighting is relative to the last day of the fitted events: refit
(``kindred recommend``) as time passes.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from ingest.datamodel import CUSTOMERS, META_RECOMMEND
from vectorstore import VectorStore
from vectorstore.errors import ArtifactCorrupt, ArtifactNotFound

from ..errors import MatchingError, NotEnoughData
from ._data import PRODUCTS
from .interactions import (
    Interactions,
    cooccurrence,
    decayed_shares,
    last_day_split,
    repeat_flags,
)
from .rec_blocks import (
    _als,
    _top,
    bm25,
    bm25_stats,
    cover_top,
    fit_classes,
    hits,
    posterior,
)
from .recommend_prior import ClassPrior, customer_rows, fit_class_prior

SHRINKS = (3.0, 10.0, 30.0, float("inf"))
FACTOR_WEIGHTS = (0.0, 0.03, 0.1, 0.3)
HALF_LIVES = (float("inf"), 60.0, 30.0, 15.0)
"""Half-lives (days) tried for the profile's item shares; ``inf``: every day weighs the same."""
VALIDATION_USERS = 50_000
"""The blend is chosen on at most this many customers' validation days (a random sample)."""
ARTIFACT = "customers.recommender"
META_KEY = META_RECOMMEND  # the table metadata entry of the recommendations (recommend.META_KEY)
"""``metadata["recommender"]["artifact"]``: the recommender the written lists came from."""
FORMAT = 1
BLOCK = 4_096


@dataclass
class Recommender:
    """Fitted state: item ids and factors, popularity, repeat flags and blend weights."""

    items: list[str]
    item_factors: np.ndarray
    popularity: np.ndarray
    repeatable: np.ndarray
    shrink: float
    w_factors: float
    theta: np.ndarray
    prior: np.ndarray
    regularization: float = 0.05
    details: dict[str, Any] = field(default_factory=dict)
    idf: np.ndarray | None = None
    """BM25 statistics of the fitted customers (None: a recommender saved before them)."""
    avg_len: float | None = None
    theta_now: np.ndarray | None = None
    """The classes' item shares with recent days weighted more (:func:`decayed_shares` at
    ``half_life``), used for the profile's item shares; None: ``theta`` (no decay)."""
    half_life: float = float("inf")
    cooccur: sp.csr_matrix | None = None
    """``cooccur[i, j]``: the share of the customer-days with item ``j`` that also have item
    ``i`` (the fitted events); with ``diversify``, lists are built by :func:`cover_top`."""
    diversify: bool = False
    class_prior: ClassPrior | None = None
    """The classes' prior from the customers' attributes (:mod:`.recommend_prior`); used by
    :meth:`log_prior` when set, else every customer gets ``prior``."""

    @property
    def attribute_columns(self) -> list[str]:
        """The customers table's columns :meth:`log_prior` reads (none without a class prior)."""
        return [] if self.class_prior is None else self.class_prior.columns

    def log_prior(self, data: pa.Table | pa.RecordBatch | None) -> np.ndarray | None:
        """Each row's log prior over the classes from its attributes (None: no class prior,
        or no rows given: the shared ``prior`` applies)."""
        if self.class_prior is None or data is None:
            return None
        return self.class_prior.log_prior(data)

    def top(self, s: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's ``n``-item list from its scores: the ``n`` best (``diversify`` off) or
        the greedy coverage list of :func:`cover_top`; (items, list scores)."""
        if self.diversify and self.cooccur is not None:
            return cover_top(s, n, self.cooccur)
        return _top(s, n)

    def weigh(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        """Customers' event counts BM25-weighted with the fitted population's statistics."""
        if self.idf is None or self.avg_len is None:
            raise MatchingError("the saved recommender predates fixed BM25 statistics: run "
                                "`kindred recommend` (or `kindred refresh --refit`) to refit it")
        return bm25(counts, self.idf, self.avg_len)

    def factors(self, counts: sp.csr_matrix) -> np.ndarray:
        """Customer factors from their event counts (:meth:`fold_in` of :meth:`weigh`)."""
        return self.fold_in(self.weigh(counts)) if counts.nnz else \
            np.zeros((counts.shape[0], self.item_factors.shape[1]))

    def fold_in(self, weighted: sp.csr_matrix) -> np.ndarray:
        """Customer factors from their (BM25-weighted) rows: the ALS least-squares solution
        for fixed item factors (confidence ``1 + value`` on observed items), solved for
        blocks of customers at once (padded to the longest row of the block, rows sorted by
        length so the padding stays small)."""
        V = self.item_factors.astype(np.float64)
        f = V.shape[1]
        base = V.T @ V + self.regularization * np.eye(f)
        w = weighted.tocsr()
        out = np.zeros((w.shape[0], f), np.float64)
        lens = np.diff(w.indptr)
        users = np.flatnonzero(lens)
        users = users[np.argsort(lens[users], kind="stable")]
        start = 0
        while start < len(users):
            width = int(lens[users[min(start + 1023, len(users) - 1)]])
            size = max(1, min(1024, 65_536 // max(width, 1)))
            block = users[start:start + size]
            width = int(lens[block].max())
            offs = w.indptr[block][:, None] + np.arange(width)[None, :]
            valid = np.arange(width)[None, :] < lens[block][:, None]
            offs = np.where(valid, offs, 0)
            idx = w.indices[offs]
            conf = np.where(valid, w.data[offs].astype(np.float64), 0.0)
            Vi = V[idx] * valid[..., None]
            A = base + np.einsum("blf,blg->bfg", Vi * conf[..., None], Vi)
            b = np.einsum("blf,bl->bf", Vi, (1.0 + conf) * valid)
            out[block] = np.linalg.solve(A, b[..., None])[..., 0]
            start += len(block)
        return out

    def scores(self, days: sp.csr_matrix, active: np.ndarray, user_factors: np.ndarray,
               shrink: float | None = None, w_factors: float | None = None,
               log_prior: np.ndarray | None = None) -> np.ndarray:
        """(customers, items) blended scores; -inf for had, not-repeatable items.
        ``log_prior``: the customers' class priors (:meth:`log_prior`), else the shared one."""
        shrink = self.shrink if shrink is None else shrink
        w = self.w_factors if w_factors is None else w_factors
        n = days.shape[0]
        lam = (active / (active + shrink))[:, None] if np.isfinite(shrink) else \
            np.zeros((n, 1))
        rate = days.multiply(1.0 / np.maximum(active, 1.0)[:, None]).toarray()
        had = days.toarray() > 0
        personal = np.where(self.repeatable[None, :], rate, 0.0)
        shares = self.theta if self.theta_now is None else self.theta_now
        profile = posterior(days.astype(np.float64), self.theta, self.prior, log_prior) @ shares
        s = lam * personal + (1 - lam) * profile
        if w:
            s = s + w * (user_factors @ self.item_factors.T.astype(np.float64))
        s[had & ~self.repeatable[None, :]] = -np.inf
        return s.reshape(n, -1)

    # ------------------------------------------------------------------ persistence
    def save(self, store: VectorStore, name: str = ARTIFACT) -> tuple[str, str]:
        """Store the fitted state under a name derived from its content
        (``<name>.<sha256[:16]>``, before the commit that names it); returns (name, sha256)."""
        import hashlib

        buf = io.BytesIO()
        arrays: dict[str, Any]
        arrays = {"items": np.asarray(self.items, dtype=str), "item_factors": self.item_factors,
                  "popularity": self.popularity, "repeatable": self.repeatable,
                  "theta": self.theta, "prior": self.prior}
        if self.idf is not None:
            arrays["idf"] = np.asarray(self.idf, np.float64)
        if self.theta_now is not None:
            arrays["theta_now"] = np.asarray(self.theta_now, np.float64)
        if self.class_prior is not None:
            arrays |= self.class_prior.arrays()
        if self.cooccur is not None:
            c = self.cooccur.tocsr()
            arrays |= {"cooccur_data": c.data.astype(np.float32), "cooccur_indices": c.indices,
                       "cooccur_indptr": c.indptr}
        np.savez(buf, **arrays)
        data = buf.getvalue()
        art = store.save_artifact(name, data, {
            "format": FORMAT, "shrink": finite_or_none(self.shrink), "w_factors": self.w_factors,
            "regularization": self.regularization, "avg_len": self.avg_len,
            "half_life": finite_or_none(self.half_life), "diversify": self.diversify,
            "class_prior": None if self.class_prior is None else self.class_prior.meta(),
            "details": json.loads(json.dumps(self.details, default=str))})
        return art, hashlib.sha256(data).hexdigest()

    @classmethod
    def load(cls, store: VectorStore, name: str | None = None) -> Recommender:
        """The recommender the customers' recommendations were written with (the one the
        table's metadata names), or the artifact ``name``; checksum-verified."""
        if name is None:
            rec = (store.table_info(CUSTOMERS).metadata.get(META_RECOMMEND) or {}) \
                if store.has_table(CUSTOMERS) else {}
            name = rec.get("artifact") or ARTIFACT
        try:
            data, meta = store.get_artifact(name)
        except ArtifactNotFound:
            raise MatchingError("no behaviour recommender yet: run `kindred recommend` "
                                "first") from None
        except ArtifactCorrupt as exc:
            raise MatchingError(f"the saved recommender is damaged: {exc}") from exc
        if meta.get("format") != FORMAT:
            raise MatchingError(f"the saved recommender has format {meta.get('format')!r}")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            avg = meta.get("avg_len")
            hl = meta.get("half_life")
            n_items = len(z["items"])
            co = sp.csr_matrix((z["cooccur_data"], z["cooccur_indices"], z["cooccur_indptr"]),
                               shape=(n_items, n_items)) if "cooccur_data" in z.files else None
            return cls(z["items"].astype(str).tolist(), z["item_factors"], z["popularity"],
                       z["repeatable"].astype(bool),
                       float("inf") if meta["shrink"] is None else float(meta["shrink"]),
                       float(meta["w_factors"]), z["theta"], z["prior"],
                       float(meta["regularization"]), dict(meta.get("details") or {}),
                       z["idf"] if "idf" in z.files else None,
                       None if avg is None else float(avg),
                       z["theta_now"] if "theta_now" in z.files else None,
                       float("inf") if hl is None else float(hl), co,
                       bool(meta.get("diversify", False)),
                       ClassPrior.from_saved(meta["class_prior"], z)
                       if meta.get("class_prior") else None)


def saved_recommender(store: VectorStore, table: str = CUSTOMERS) -> str | None:
    """The artifact of the recommender whose lists ``table`` holds: the one its metadata
    records (written in the same commit as ``rec_products``), else the fixed name earlier
    versions used; None when there is none."""
    if not store.has_table(table):
        return None
    entry = store.table_info(table).metadata.get(META_KEY)
    if isinstance(entry, dict) and isinstance(entry.get("artifact"), str):
        return entry["artifact"]
    return ARTIFACT if ARTIFACT in store.list_artifacts() else None


def finite_or_none(x: float) -> float | None:
    """``shrink`` is infinite when own history is not used: shown and stored as None."""
    return float(x) if np.isfinite(x) else None


""":func:`cover_top` picks each list among the ``CANDIDATES * n`` best-scored items."""


def fit_recommender(store: VectorStore, inter: Interactions, *, seed: int = 0,
                    factors: int = 64, k: int = 10, products_table: str = PRODUCTS,
                    customers_table: str = CUSTOMERS) -> tuple[Recommender, np.ndarray]:
    """Fit on ``inter`` (choosing the blend on each customer's last day of it); returns the
    recommender and the customers' factors (rows of ``inter.customers``).

    Chosen jointly on that validation day, by hit@k: the profile's half-life
    (:data:`HALF_LIVES`), ``shrink``, ``w_factors``, the class prior (shared, or from the
    customers' attributes in ``customers_table``: :mod:`.recommend_prior`) and whether lists
    are built for coverage (:func:`cover_top`) or by score alone."""
    counts, days, active = inter.matrices()
    n_items = len(inter.items)
    if n_items < 2:
        raise NotEnoughData("behaviour recommendations need at least two items")
    f = max(2, min(factors, n_items // 2))
    repeatable = repeat_flags(store, inter, products_table)
    popularity = np.asarray(days.sum(axis=0)).ravel() / max(active.sum(), 1.0)
    # validation: each customer's last day inside these events
    train, val = last_day_split(inter)
    tr, va = inter.subset(train), inter.subset(val)
    tr_counts, tr_days, tr_active = tr.matrices()
    va_days = va.matrices()[1]
    users = np.flatnonzero((tr_active > 0) & (np.asarray(va_days.sum(axis=1)).ravel() > 0))
    if len(users) > VALIDATION_USERS:
        users = np.sort(np.random.default_rng(seed).choice(users, VALIDATION_USERS,
                                                           replace=False))
    choice: dict[str, Any] = {"shrink": SHRINKS[0], "w_factors": 0.0,
                              "half_life": float("inf"), "diversify": False,
                              "attributes": False, "validation": []}
    if len(users) >= 10:
        model, _ = _als(tr_counts, f, seed)
        tr_pop = np.asarray(tr_days.sum(axis=0)).ravel() / max(tr_active.sum(), 1.0)
        theta, prior = fit_classes(tr_days, seed=seed)
        R = posterior(tr_days.astype(np.float64), theta, prior)
        rec = Recommender(inter.items, np.asarray(model.item_factors), tr_pop, repeatable, 1, 0,
                          theta, prior)
        U = np.asarray(model.user_factors)[users].astype(np.float64)
        truth = va_days[users]
        best = -1.0
        co = cooccurrence(tr)
        priors: dict[bool, np.ndarray | None] = {False: None}
        cp = fit_class_prior(store, inter.customers, R, seed=seed, table=customers_table)
        if cp is not None:
            priors[True] = cp.log_prior(customer_rows(
                store, inter.customers.take(pa.array(users)), cp.columns, customers_table))
        for half_life in HALF_LIVES:
            rec.theta_now = decayed_shares(tr, R, half_life)
            for attributes, lp in priors.items():
                for shrink in SHRINKS:
                    for w in FACTOR_WEIGHTS:
                        sc = rec.scores(tr_days[users], tr_active[users], U, shrink, w, lp)
                        for diversify in (False, True):
                            lists = cover_top(sc, k, co)[0] if diversify else _top(sc, k)[0]
                            m = float(hits(lists, truth, k)["hit"].mean())
                            choice["validation"].append({
                                "half_life": finite_or_none(half_life),
                                "attributes": attributes, "shrink": finite_or_none(shrink),
                                "w_factors": w, "diversify": diversify, "hit": m})
                            if m > best + 1e-9:
                                best = m
                                choice |= {"shrink": shrink, "w_factors": w,
                                           "half_life": half_life, "diversify": diversify,
                                           "attributes": attributes}
    model, _ = _als(counts, f, seed)
    theta, prior = fit_classes(days, seed=seed)
    idf, avg_len = bm25_stats(counts)
    R_all = posterior(days.astype(np.float64), theta, prior)
    theta_now = decayed_shares(inter, R_all, choice["half_life"]) \
        if np.isfinite(choice["half_life"]) else None
    class_prior = fit_class_prior(store, inter.customers, R_all, seed=seed,
                                  table=customers_table) if choice["attributes"] else None
    rec = Recommender(inter.items, np.asarray(model.item_factors, dtype=np.float32), popularity,
                      repeatable, float(choice["shrink"]), float(choice["w_factors"]),
                      theta, prior, details={"factors": f, "validation": choice["validation"],
                               "repeatable_items": int(repeatable.sum()),
                               "items": n_items, "customers": len(inter.customers)},
                      idf=idf, avg_len=avg_len, theta_now=theta_now,
                      half_life=float(choice["half_life"]),
                      cooccur=cooccurrence(inter) if choice["diversify"] else None,
                      diversify=bool(choice["diversify"]), class_prior=class_prior)
    return rec, np.asarray(model.user_factors, dtype=np.float64)


def history_rows(rec: Recommender, inter: Interactions, ids: pa.Array
                 ) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """(counts, days, active days) of customers ``ids`` in ``rec``'s item space (customers
    without events get empty rows; items the recommender does not know are ignored)."""
    import pandas as pd

    counts, days, active = inter.matrices()
    rows = pd.Index(inter.customers.to_numpy(zero_copy_only=False)).get_indexer(
        ids.to_numpy(zero_copy_only=False))
    cols = pd.Index(rec.items).get_indexer(inter.items)
    keep = cols >= 0
    remap = sp.csr_matrix((np.ones(int(keep.sum())), (np.flatnonzero(keep), cols[keep])),
                          shape=(len(inter.items), len(rec.items)))
    known = rows >= 0
    pick = sp.csr_matrix((np.ones(int(known.sum())), (np.flatnonzero(known), rows[known])),
                         shape=(len(ids), max(counts.shape[0], 1)))
    if counts.shape[0] == 0:
        empty = sp.csr_matrix((len(ids), len(rec.items)), dtype=np.float64)
        return empty, empty, np.zeros(len(ids))
    act = np.where(known, active[np.maximum(rows, 0)], 0.0)
    return (pick @ counts @ remap).tocsr(), (pick @ days @ remap).tocsr(), act


def explain_one(rec: Recommender, counts: sp.csr_matrix, days: sp.csr_matrix,
                active: np.ndarray, n: int, exclude: np.ndarray | None = None,
                attributes: pa.Table | None = None) -> list[dict[str, Any]]:
    """One customer's top ``n`` (rows of length 1) with the parts of each score and reasons;
    ``exclude``: items never to recommend (e.g. held one-time products); ``attributes``:
    the customer's row of the customers table (its :attr:`Recommender.attribute_columns`),
    for the class prior."""
    U = rec.factors(counts)
    lp = rec.log_prior(attributes)
    s = rec.scores(days, active, U, log_prior=lp)[0]
    if exclude is not None:
        s[exclude] = -np.inf
    lam = float(active[0] / (active[0] + rec.shrink)) if np.isfinite(rec.shrink) else 0.0
    rate = days.toarray()[0] / max(active[0], 1.0)
    fac = (U @ rec.item_factors.T.astype(np.float64))[0]
    shares = rec.theta if rec.theta_now is None else rec.theta_now
    profile = (posterior(days.astype(np.float64), rec.theta, rec.prior, lp) @ shares)[0]
    idx, listed = rec.top(s[None, :], n)
    order = [(int(i), float(v)) for i, v in zip(idx[0], listed[0], strict=True)
             if np.isfinite(v)]
    out = []
    for i, in_list in order:
        history = lam * rate[i] if rec.repeatable[i] else 0.0
        parts = {"history": history, "profile": (1 - lam) * profile[i],
                 "factors": rec.w_factors * fac[i]}
        reasons = []
        if rate[i] > 0:
            reasons.append(f"had it on {rate[i]:.0%} of their {int(active[0])} active days "
                           "(repeatable)")
        if profile[i] > 1.2 * rec.popularity[i]:
            reasons.append(f"customers who behave like them have it on {profile[i]:.1%} of "
                           f"their days ({profile[i] / max(rec.popularity[i], 1e-12):.1f}x "
                           "the average)")
        if parts["factors"] > 0.01:
            reasons.append("similar customers' behaviour factors point to it")
        if not reasons:
            reasons.append(f"popular: on {rec.popularity[i]:.1%} of all customer-days")
        out.append({"item": rec.items[i], "score": float(s[i]), "list_score": in_list,
                    "repeatable": bool(
            rec.repeatable[i]), "parts": {k: round(float(v), 6) for k, v in parts.items()},
            "reasons": reasons})
    return out
