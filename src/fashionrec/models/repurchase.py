"""Repurchase: the customer's own past articles ranked by recency and frequency, then `decay`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np
import scipy.sparse as sp

from fashionrec.data.dataset import Dataset
from fashionrec.models.base import (
    Recs,
    batched_with,
    fill,
    popularity_fallback,
    rank_list,
    row_top_k,
    rows_of,
)


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
        self.fill_items_, self.fill_scores_ = popularity_fallback(data, self.fill_half_life)
        self.seen_ = data.user_items(binary=True)
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
        the newest day: real-time updates without refitting."""
        return batched_with(
            users,
            extra,
            self.own_.shape[1],
            lambda u, new: self._recommend(u, new, k, exclude_seen),
        )

    def _recommend(
        self, users: np.ndarray, new: sp.csr_matrix | None, k: int, exclude_seen: bool
    ) -> Recs:
        own = rows_of(self.own_, users)
        if new is not None:
            own = own + new
        if exclude_seen:
            seen = rows_of(self.seen_, users) + own  # every own article is seen
            popular = rank_list(self.fill_items_, self.fill_scores_, len(users), k, seen)
            return popular  # so only the fill is left
        popular = rank_list(self.fill_items_, self.fill_scores_, len(users), k)
        return fill(row_top_k(own, k), popular, k)
