"""usercf: user-based neighbourhood collaborative filtering, "customers like you bought".

Implicit (the registered model): each customer's purchase vector is recency-weighted (0.5 **
(age_days / half_life) per purchase, repeats adding up) and L2-normalised; the `neighbours` most
cosine-similar customers are kept as a sparse customer x customer matrix, computed as sparse
products in row blocks (never the dense customers x customers matrix); a customer's article
scores are the similarity-weighted sum of the neighbours' weighted purchases, filled with
time-decayed popularity (Herlocker et al. 1999; Sarwar et al. 2001 for the cosine form).

Explicit (`RatingUserCF`, for MovieLens ratings): a predicted rating is the customer's mean plus
the similarity-weighted mean of the mean-centred ratings of the `k` most similar customers who
rated the article (Surprise's KNNWithMeans, user-based), with the similarity the cosine of the
mean-centred rating vectors (Pearson with unrated articles at the mean), optionally shrunk by the
number of co-rated articles (Koren 2008).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np
import scipy.sparse as sp

from fashionrec.data.dataset import Dataset
from fashionrec.errors import ConfigError
from fashionrec.models import neighbours as nb
from fashionrec.models.base import (
    Recs,
    batched_with,
    built,
    fill,
    popularity_fallback,
    rank_list,
    row_top_k,
    rows_of,
    seen_with,
    top_n_per_row,
)

log = logging.getLogger(__name__)

BLOCK_BUDGET = 2_000_000  # multiply-adds per block of customers in user_neighbours
RECOMMEND_BATCH = 5_000  # customers per sparse product: bounds the (customers x articles) scores
TRIPLES_BUDGET = 4_000_000  # (pair, rater) candidates per block of rating predictions
SIMS_BUDGET = 2**22  # dense similarities (customers of a block x all customers) per block
MIN_SIMILARITY = 1e-9  # a smaller cosine is rounding noise of a sum that cancels out


def unit_rows(mat: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit L2 norm (empty rows stay empty)."""
    norms = np.sqrt(np.asarray(mat.multiply(mat).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inv.astype(mat.dtype)) @ mat)


def user_neighbours(vectors: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """(n_users, n_users) CSR of each row's `n` most cosine-similar other rows (positive only),
    by row blocks of vectors @ vectors.T of at most BLOCK_BUDGET multiply-adds each.

    A tenth of `neighbours.blocked_top_n`'s item budget: customers share popular articles, so a
    block's product is nearly as dense as its cost, and the item budget took the H&M week fit
    to 970 MB above the data (145 MB with this one, in the same time)."""
    unit = unit_rows(vectors)
    return nb.blocked_top_n(unit, unit.T, n, desc="usercf", budget=BLOCK_BUDGET)


@dataclass
class UserCF:
    """Customers like you: the `neighbours` most similar customers (cosine of recency-weighted
    purchase vectors, `half_life` in days, None = counts) and their purchases."""

    name: ClassVar[str] = "usercf"
    fallback: ClassVar[str] = (
        "decay (time-decayed popularity) for customers without purchases and unknown ones; it "
        "also fills lists"
    )
    neighbours: int = 50
    half_life: float | None = 30.0
    fill_half_life: float = 7.0

    neighbours_: sp.csr_matrix = field(default=None, init=False, repr=False)
    history_: sp.csr_matrix = field(default=None, init=False, repr=False)
    seen_: sp.csr_matrix = field(default=None, init=False, repr=False)
    fill_items_: np.ndarray = field(default=None, init=False, repr=False)
    fill_scores_: np.ndarray = field(default=None, init=False, repr=False)

    def fit(self, data: Dataset) -> Self:
        if self.neighbours < 1:
            raise ConfigError(f"usercf: neighbours must be at least 1, not {self.neighbours}")
        self.history_ = data.user_items(half_life=self.half_life)
        self.neighbours_ = user_neighbours(self.history_, self.neighbours)
        self._cache = {}  # serving-only structures (`built`)
        self.seen_ = data.user_items(binary=True)
        self.fill_items_, self.fill_scores_ = popularity_fallback(data, self.fill_half_life)
        log.info("usercf: %d neighbour pairs for %d customers", self.neighbours_.nnz, data.n_users)
        return self

    def recommend(self, users: np.ndarray, k: int, *, exclude_seen: bool = False) -> Recs:
        return self.recommend_with(users, None, k, exclude_seen=exclude_seen)

    def recommend_with(
        self,
        users: np.ndarray,
        extra: list[np.ndarray] | None,
        k: int,
        *,
        exclude_seen: bool = False,
    ) -> Recs:
        """`recommend`, counting `extra[i]` (articles users[i] bought after the fit) as bought on
        the last day (weight 1): those customers' neighbours are found again from their
        purchases plus these, against every fitted customer (whose vectors stay as fitted)."""
        return batched_with(
            users,
            extra,
            self.history_.shape[1],
            lambda u, new: self._recommend(u, new, k, exclude_seen),
            RECOMMEND_BATCH,
        )

    def _recommend(
        self, users: np.ndarray, new: sp.csr_matrix | None, k: int, exclude_seen: bool
    ) -> Recs:
        neighbours, seen = (
            rows_of(self.neighbours_, users),
            seen_with(rows_of(self.seen_, users), new),
        )
        if new is not None and new.nnz:
            neighbours = self._renew(users, new, neighbours)
        scores = sp.csr_matrix(neighbours @ self.history_)
        if exclude_seen:
            scores = sp.csr_matrix(scores - scores.multiply(seen))
            scores.eliminate_zeros()
        exclude = seen if exclude_seen else None
        popular = rank_list(self.fill_items_, self.fill_scores_, len(users), k, exclude)
        return fill(row_top_k(scores, k), popular, k)

    def _renew(
        self, users: np.ndarray, new: sp.csr_matrix, neighbours: sp.csr_matrix
    ) -> sp.csr_matrix:
        """`neighbours` with the rows of customers with `new` purchases found again: the top
        `neighbours` by cosine of their purchases plus the new ones, never themselves."""
        fresh = np.flatnonzero(np.diff(new.indptr) > 0)
        unit_t = built(self, "unit_t", lambda: sp.csr_matrix(unit_rows(self.history_).T))
        vectors = unit_rows(sp.csr_matrix(rows_of(self.history_, users[fresh]) + new[fresh]))
        sims = sp.csr_matrix(vectors @ unit_t)
        itself = users[fresh] >= 0
        own = sp.csr_matrix(
            (np.ones(itself.sum()), (np.flatnonzero(itself), users[fresh][itself])),
            shape=sims.shape,
        )
        found = top_n_per_row(sp.csr_matrix(sims - sims.multiply(own)), self.neighbours)
        keep = sp.diags((np.diff(new.indptr) == 0).astype(np.float32))
        place = sp.csr_matrix(
            (np.ones(len(fresh), np.float32), (fresh, np.arange(len(fresh)))),
            shape=(len(users), len(fresh)),
        )
        return sp.csr_matrix(keep @ neighbours + place @ found)

    def similar_customers(self, users: np.ndarray, k: int) -> Recs:
        """The k most similar customers of each customer (-1 padding; unknown customers: -1)."""
        return row_top_k(rows_of(self.neighbours_, np.asarray(users, dtype=np.int64)), k)


# ---------------------------------------------------------------------------------------------
# Explicit feedback: rating prediction.


@dataclass
class RatingUserCF:
    """User-based kNN rating prediction with mean-centring (not registered: the Dataset keeps no
    ratings; see benchmarks/usercf_ratings.py). `k` neighbours among the raters of the article
    with a positive similarity, `min_k` of them needed (else the customer's mean), `shrinkage`
    pseudo co-ratings (0: none); predictions are clipped to the training rating range."""

    k: int = 40
    min_k: int = 1
    shrinkage: float = 0.0

    means_: np.ndarray = field(default=None, init=False, repr=False)
    global_mean_: float = field(default=None, init=False, repr=False)
    range_: tuple = field(default=None, init=False, repr=False)
    unit_: sp.csr_matrix = field(default=None, init=False, repr=False)
    rated_: sp.csr_matrix = field(default=None, init=False, repr=False)
    centred_csc_: sp.csc_matrix = field(default=None, init=False, repr=False)

    def fit(self, ratings: sp.csr_matrix) -> Self:
        """`ratings`: (n_users, n_items) CSR, a stored value is a rating (no zero ratings)."""
        if self.k < 1 or self.min_k < 1 or self.shrinkage < 0:
            raise ConfigError("usercf ratings: k and min_k must be >= 1, shrinkage >= 0")
        ratings = sp.csr_matrix(ratings, dtype=np.float64)
        ratings.sum_duplicates()
        counts = np.diff(ratings.indptr)
        sums = np.asarray(ratings.sum(axis=1)).ravel()
        self.global_mean_ = float(ratings.data.mean())
        self.range_ = (float(ratings.data.min()), float(ratings.data.max()))
        self.means_ = np.where(counts > 0, sums / np.maximum(counts, 1), self.global_mean_)
        centred = ratings.copy()
        centred.data = ratings.data - np.repeat(self.means_, counts)
        self.unit_ = unit_rows(centred)
        self.rated_ = sp.csr_matrix((np.ones_like(ratings.data), ratings.indices, ratings.indptr))
        self.centred_csc_ = centred.tocsc()
        return self

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings of the (users[j], items[j]) pairs: global mean for an unknown
        customer, the customer's mean for an unknown article or too few neighbours."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        n_users, n_items = self.unit_.shape
        known_u = (users >= 0) & (users < n_users)
        known_i = (items >= 0) & (items < n_items)
        out = np.where(known_u, self.means_[np.where(known_u, users, 0)], self.global_mean_)
        pairs = np.flatnonzero(known_u & known_i)
        order = pairs[np.argsort(users[pairs], kind="stable")]
        # blocks of pairs by customer: at most TRIPLES_BUDGET (pair, rater) candidates and
        # SIMS_BUDGET dense similarities (the block's customers x all customers) each
        raters = np.diff(self.centred_csc_.indptr)[items[order]]
        cuts = np.searchsorted(
            np.cumsum(raters), np.arange(TRIPLES_BUDGET, raters.sum(), TRIPLES_BUDGET)
        )
        sorted_users = users[order]
        firsts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
        per_block = max(1, SIMS_BUDGET // n_users)
        cuts = np.union1d(cuts, firsts[per_block::per_block])
        for block in np.split(order, cuts):
            if len(block):
                out[block] = self._predict_block(users[block], items[block], out[block])
        return np.clip(out, *self.range_)

    def _predict_block(self, users: np.ndarray, items: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Predictions for pairs; `base` (the customers' means) where too few neighbours. The
        similarities of the block's customers to every customer are dense rows (bounded by the
        caller's blocks)."""
        block_users, row = np.unique(users, return_inverse=True)
        sims = (self.unit_[block_users] @ self.unit_.T).toarray()  # a row block only
        if self.shrinkage > 0:
            common = (self.rated_[block_users] @ self.rated_.T).toarray()
            sims *= common / (common + self.shrinkage)
        sims[np.arange(len(block_users)), block_users] = 0.0  # never oneself
        # every (pair, rater of the pair's article) candidate
        csc = self.centred_csc_
        lengths = np.diff(csc.indptr)[items]
        pair = np.repeat(np.arange(len(items)), lengths)
        pos = np.repeat(csc.indptr[items], lengths) + (
            np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        )
        rater, dev = csc.indices[pos], csc.data[pos]
        sim = sims[row[pair], rater]
        keep = sim > MIN_SIMILARITY
        pair, sim, dev = pair[keep], sim[keep], dev[keep]
        # by pair, then most similar first: one float key (sim <= 1) sorts 4x faster than lexsort
        order = np.argsort(pair * 2.0 + (1.0 - sim), kind="stable")
        pair, sim, dev = pair[order], sim[order], dev[order]
        starts = np.searchsorted(pair, np.arange(len(items)))
        top = (np.arange(len(pair)) - starts[pair]) < self.k
        pair, sim, dev = pair[top], sim[top], dev[top]
        n = np.bincount(pair, minlength=len(items))
        num = np.bincount(pair, weights=sim * dev, minlength=len(items)).astype(np.float64)
        den = np.bincount(pair, weights=sim, minlength=len(items)).astype(np.float64)
        ok = (n >= self.min_k) & (den > 0)
        return np.where(ok, base + np.divide(num, den, out=np.zeros_like(num), where=ok), base)
