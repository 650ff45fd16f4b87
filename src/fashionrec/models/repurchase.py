"""Repurchase: the customer's own past articles ranked by recency and frequency, then `decay`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np
import scipy.sparse as sp

from fashionrec.data.dataset import Dataset
from fashionrec.models.base import Recs, batched, fill, first_k, rank_list, rows_of, top_items


@dataclass
class Repurchase:
    """Score of an own article = sum over its purchases of 0.5 ** (age_days / half_life), over the
    last `window_days` (all history when None); the list is filled with time-decayed popularity."""

    name: ClassVar[str] = "repurchase"
    fallback: ClassVar[str] = "decay (time-decayed popularity) for cold or unknown customers"
    half_life: float = 30.0
    window_days: int | None = None
    fill_half_life: float = 7.0

    own_: sp.csr_matrix = field(default=None, init=False, repr=False)
    fill_items_: np.ndarray = field(default=None, init=False, repr=False)
    fill_scores_: np.ndarray = field(default=None, init=False, repr=False)
    seen_: sp.csr_matrix = field(default=None, init=False, repr=False)

    def fit(self, data: Dataset) -> Self:
        recent = data if self.window_days is None else data.last_days(self.window_days)
        self.own_ = recent.user_items(half_life=self.half_life)
        self.fill_items_, self.fill_scores_ = top_items(
            data.item_popularity(half_life=self.fill_half_life)
        )
        self.seen_ = data.user_items(binary=True)
        return self

    def recommend(self, users: np.ndarray, k: int, *, exclude_seen: bool = False) -> Recs:
        return batched(users, lambda u: self._recommend(u, k, exclude_seen))

    def _recommend(self, users: np.ndarray, k: int, exclude_seen: bool) -> Recs:
        exclude = self.seen_ if exclude_seen else None
        popular = rank_list(self.fill_items_, self.fill_scores_, users, k, exclude)
        if exclude_seen:
            return popular  # every own article is seen, so only the fill is left
        own = rows_of(self.own_, users)
        return fill(_row_top_k(own, k), popular, k)


def _row_top_k(mat: sp.csr_matrix, k: int) -> Recs:
    """The k largest entries of each CSR row (ties by item index), vectorised over all rows."""
    n = mat.shape[0]
    lengths = np.diff(mat.indptr)
    width = max(int(lengths.max(initial=0)), 1)
    rows = np.repeat(np.arange(n), lengths)
    cols = np.arange(mat.nnz) - np.repeat(mat.indptr[:-1], lengths)
    items = np.full((n, width), -1, dtype=np.int64)
    scores = np.full((n, width), -np.inf, dtype=np.float64)
    items[rows, cols] = mat.indices
    scores[rows, cols] = mat.data
    # sort by score desc, then item asc; padding (-inf) goes last
    order = np.lexsort((np.where(items < 0, np.iinfo(np.int64).max, items), -scores), axis=1)
    r = np.arange(n)[:, None]
    items, scores = items[r, order], scores[r, order]
    return first_k(items, scores, items >= 0, k)
