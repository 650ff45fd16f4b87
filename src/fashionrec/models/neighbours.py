"""Item-neighbour machinery shared by `itemcf` and `content`: a sparse top-N neighbour matrix per
item, and customer scores = (recency-weighted history rows) @ neighbours, filled with popularity.
`usercf` builds its customer x customer neighbours with the same `blocked_top_n`.

Both models keep only the N best neighbours of each item (a CSR item x item matrix), so that the
state stays small (n_items * N entries) and user scoring is one sparse product per batch.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import polars as pl
import scipy.sparse as sp
from tqdm import tqdm

from fashionrec.data.dataset import Dataset
from fashionrec.models.base import (
    Recs,
    batched_with,
    fill,
    popularity_fallback,
    rank_list,
    row_top_k,
    rows_of,
    seen_with,
    top_n_per_row,
)

BLOCK_BUDGET = 20_000_000  # multiply-adds per block of rows in blocked_top_n: bounds memory
RECOMMEND_BATCH = 5_000  # users per sparse product: bounds the (users x items) score matrix


def blocked_top_n(
    left: sp.csr_matrix,
    right: sp.csr_matrix,
    n: int,
    transform: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
    desc: str = "neighbours",
    budget: float = BLOCK_BUDGET,
) -> sp.csr_matrix:
    """Top-`n` of each row of the square left @ right (row r is column r, never its own
    neighbour), computed in blocks of rows so that the full product never exists.

    Blocks are cut by cost (the multiply-adds of their rows, at most `budget` each), so a block
    of popular items is short and a block of rare ones long. `transform(values, rows, cols)`
    turns the raw products of a block into similarities (rows are indices of the full product).
    """
    left, right = sp.csr_matrix(left), sp.csr_matrix(right)
    n_rows = left.shape[0]
    cost = (left != 0).astype(np.float64) @ np.diff(right.indptr).astype(np.float64)
    cuts = np.searchsorted(np.cumsum(cost), np.arange(budget, cost.sum(), budget))
    bounds = np.unique(np.concatenate([[0], cuts, [n_rows]]))
    parts = [sp.csr_matrix((0, right.shape[1]), dtype=np.float32)]
    blocks = itertools.pairwise(bounds)
    for start, stop in tqdm(blocks, total=len(bounds) - 1, desc=desc, disable=len(bounds) < 10):
        block = sp.csr_matrix(left[start:stop] @ right)
        if transform is not None:
            coo = block.tocoo()
            values = transform(coo.data, coo.row + start, coo.col)
            block = sp.csr_matrix((values, (coo.row, coo.col)), shape=block.shape)
        block = sp.csr_matrix(block, dtype=np.float32)  # kept, so also ranked, as float32
        parts.append(top_n_per_row(block, n, self_offset=int(start)))
    return sp.csr_matrix(sp.vstack(parts, format="csr"), dtype=np.float32)


def repeat_share(data: Dataset) -> float:
    """Share of purchases that repeat an article the customer bought on an earlier day, among
    purchases made after the customer's first day (0 when nobody ever buys an article twice)."""
    tx = data.transactions.select(
        "t_dat",
        pl.col("t_dat").min().over("user").alias("first_visit"),
        pl.col("t_dat").min().over("user", "item").alias("first_buy"),
    ).filter(pl.col("t_dat") > pl.col("first_visit"))
    if tx.is_empty():
        return 0.0
    return float((tx["t_dat"] > tx["first_buy"]).mean())


def popularity_prior(data: Dataset, power: float, half_life: float) -> np.ndarray | None:
    """(1 + time-decayed sales) ** power per article, a multiplier of the explore scores that
    prefers articles selling now; None for power 0. Never-sold articles keep a weight of 1."""
    if power == 0:
        return None
    return ((1.0 + data.item_popularity(half_life=half_life)) ** power).astype(np.float32)


@dataclass
class NeighbourModel:
    """The customer side of an item-neighbour model; a subclass's `fit` sets `neighbours_` (top-N
    similar items per item, CSR) and calls `fit_customers`.

    Customers get a repeat-explore mixture: explore = (recency-weighted history @ neighbours)
    over articles they have not bought, times the popularity prior; repeat = their own articles
    by recency-weighted purchases plus the neighbour score from the rest of their history. Each
    part sums to 1 per customer and score = (1 - r) * explore + r * repeat, with r the share of
    repeat purchases in the training data unless `repeat` is given (the repeat/explore split of
    RepeatNet, Ren et al. 2019, with a share measured on the data instead of a learned gate).
    """

    fallback: ClassVar[str] = "decay (time-decayed popularity) for cold or unknown customers"
    neighbours: int = 100  # kept per article
    history_half_life: float = 30.0  # days; a purchase weighs 0.5 ** (age / half-life)
    repeat: float | None = None  # share of own articles; None: measured on the training data
    popularity: float = 0.0  # explore scores x (1 + decayed sales) ** popularity
    fill_half_life: float = 7.0  # the decay list for the fill, cold and unknown customers

    neighbours_: sp.csr_matrix = field(default=None, init=False, repr=False)
    history_: sp.csr_matrix = field(default=None, init=False, repr=False)
    seen_: sp.csr_matrix = field(default=None, init=False, repr=False)
    fill_items_: np.ndarray = field(default=None, init=False, repr=False)
    fill_scores_: np.ndarray = field(default=None, init=False, repr=False)
    prior_: np.ndarray = field(default=None, init=False, repr=False)
    repeat_: float = field(default=None, init=False, repr=False)

    def fit_customers(self, data: Dataset, measured_repeat: float | None = None) -> None:
        """Histories, the popularity fill and prior, and the repeat share, from `data` (any
        object with the Dataset methods used here; `measured_repeat` skips measuring the repeat
        share, e.g. when the Spark engine measured it)."""
        self.history_ = data.user_items(half_life=self.history_half_life)
        self.seen_ = data.user_items(binary=True)
        self.fill_items_, self.fill_scores_ = popularity_fallback(data, self.fill_half_life)
        self.prior_ = popularity_prior(data, self.popularity, self.fill_half_life)
        if self.repeat is not None:
            self.repeat_ = float(self.repeat)
        else:
            self.repeat_ = repeat_share(data) if measured_repeat is None else measured_repeat

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
        the last day (weight 1 in the history): their neighbours count at once, without a refit,
        and an unknown customer with purchases gets a personal list."""
        return batched_with(
            users,
            extra,
            self.history_.shape[1],
            lambda u, new: self._recommend(u, new, k, exclude_seen),
            RECOMMEND_BATCH,
        )

    def similar(self, items: np.ndarray, k: int) -> Recs:
        """The k nearest neighbours of each item (never itself; -1 where fewer are known)."""
        return row_top_k(rows_of(self.neighbours_, np.asarray(items, dtype=np.int64)), k)

    def _recommend(
        self, users: np.ndarray, new: sp.csr_matrix | None, k: int, exclude_seen: bool
    ) -> Recs:
        hist, seen = rows_of(self.history_, users), seen_with(rows_of(self.seen_, users), new)
        if new is not None:
            hist = sp.csr_matrix(hist + new)
        scores = sp.csr_matrix(hist @ self.neighbours_)
        own = sp.csr_matrix(scores.multiply(seen))
        explore = scores - own  # the neighbours the customer has not bought
        explore.eliminate_zeros()
        if self.prior_ is not None:
            explore = explore @ sp.diags(self.prior_)
        if exclude_seen or self.repeat_ == 0:  # explore only
            scores = _row_normalise(explore)
        else:
            scores = (1.0 - self.repeat_) * _row_normalise(explore)
            scores = scores + self.repeat_ * _row_normalise(hist + own)
        exclude = seen if exclude_seen else None
        popular = rank_list(self.fill_items_, self.fill_scores_, len(users), k, exclude)
        return fill(row_top_k(sp.csr_matrix(scores), k), popular, k)


def _row_normalise(mat: sp.csr_matrix) -> sp.csr_matrix:
    """Each row scaled to sum to 1 (empty rows stay empty)."""
    sums = np.asarray(mat.sum(axis=1)).ravel()
    return sp.csr_matrix(
        sp.diags(np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)) @ mat
    )
