"""Popularity baselines: most bought in the last N days, and exponentially time-decayed counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np
import scipy.sparse as sp

from fashionrec.data.dataset import Dataset
from fashionrec.models.base import Recs, batched, rank_list, rows_of, squash, top_items


@dataclass
class _Ranked:
    """A single ranked item list served to every user (each user's seen items skipped on demand)."""

    fallback: ClassVar[str] = "none needed: the same list for every customer"

    items_: np.ndarray = field(default=None, init=False, repr=False)
    scores_: np.ndarray = field(default=None, init=False, repr=False)
    seen_: sp.csr_matrix = field(default=None, init=False, repr=False)

    def _set(self, data: Dataset, scores: np.ndarray) -> Self:
        self.items_, self.scores_ = top_items(scores)
        self.seen_ = data.user_items(binary=True)
        return self

    def recommend(self, users: np.ndarray, k: int, *, exclude_seen: bool = False) -> Recs:
        exclude = self.seen_ if exclude_seen else None
        return batched(
            users, lambda u: rank_list(self.items_, self.scores_, len(u), k, rows_of(exclude, u))
        )


@dataclass
class Popular(_Ranked):
    """Most purchased articles in the last `days` days of the training data; articles not sold in
    that window follow, ranked by all-time sales, so that lists are full."""

    name: ClassVar[str] = "popular"
    days: int = 7

    def fit(self, data: Dataset) -> Self:
        window = data.last_days(self.days).item_popularity()
        # window counts are >= 1, the all-time tier is squashed into [0, 1): the tiers never mix
        return self._set(data, np.where(window > 0, window, squash(data.item_popularity())))


@dataclass
class Decay(_Ranked):
    """Purchases weighted by 0.5 ** (age_days / half_life): recent sales count most."""

    name: ClassVar[str] = "decay"
    half_life: float = 7.0

    def fit(self, data: Dataset) -> Self:
        return self._set(data, data.item_popularity(half_life=self.half_life))
