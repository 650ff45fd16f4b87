"""Hybrids of the H&M thesis (Burke's taxonomy) as compositions of registered models.

- `weighted`: each model's list, its scores min-max normalised per customer, summed with weights;
- `switching`: one model for customers who bought recently, another for everybody else;
- `cascade`: the customer's own articles first (recency-weighted), then each model's list in turn.

Purchases after the fit (`recommend_with`) reach every component that reads them (`switching`
also counts such a customer as recent, `cascade` puts the new articles among the own ones), so
a hybrid follows a posted purchase as far as its components do.

Components are named by registry name (`models="repurchase,itemcf"`) and configured with
`params="itemcf.window_days=0;als.factors=64"`; their fitted state is nested in the hybrid's state
(`compose.pack`), so a hybrid saves and loads like any model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp

from fashionrec.data.dataset import Dataset
from fashionrec.errors import ConfigError
from fashionrec.models.base import (
    HistoryAware,
    Recs,
    as_csr,
    batched,
    extra_matrix,
    fill,
    row_top_k,
    rows_of,
)
from fashionrec.models.compose import create_parts, pack, parse_params, split_list, unpack


@dataclass
class _Composed:
    """Fitting, nesting and lazy rebuilding of the component models."""

    fallback: ClassVar[str] = "the components' own fallbacks for cold or unknown customers"

    arrays_: dict[str, np.ndarray] = field(default=None, init=False, repr=False)
    parts_: dict = field(default=None, init=False, repr=False)
    n_items_: int = field(default=None, init=False, repr=False)

    def _names(self) -> list[str]:
        return split_list(self.models, f"{self.name}: models")

    def _fit_parts(self, data: Dataset) -> dict[str, Any]:
        names = self._names()
        parts = create_parts(names, parse_params(self.params, names))
        for model in parts.values():
            model.fit(data)
        self.arrays_, self.parts_ = pack(parts)
        self.n_items_ = data.n_items
        self._parts = parts
        return parts

    def components(self) -> dict[str, Any]:
        """The fitted component models by name (rebuilt from the state after a load)."""
        if getattr(self, "_parts", None) is None:
            self._parts = unpack(self.arrays_, self.parts_)
        return self._parts

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
        """`recommend`, with `extra[i]` (articles users[i] bought after the fit) passed to the
        components that read them (see the module docstring)."""
        users = np.asarray(users, dtype=np.int64)

        def one(pos: np.ndarray) -> Recs:
            part = None if extra is None else [np.asarray(extra[i], np.int64) for i in pos]
            return self._combine(users[pos], part, k, exclude_seen)

        return batched(np.arange(len(users)), one)

    def _combine(
        self, users: np.ndarray, extra: list[np.ndarray] | None, k: int, exclude_seen: bool
    ) -> Recs:
        raise NotImplementedError


def part_list(
    model: Any, users: np.ndarray, extra: list[np.ndarray] | None, k: int, exclude_seen: bool
) -> Recs:
    """A component's list, counting the purchases in `extra` if the component reads them."""
    if extra is not None and isinstance(model, HistoryAware):
        return model.recommend_with(users, extra, k, exclude_seen=exclude_seen)
    return model.recommend(users, k, exclude_seen=exclude_seen)


def normalised(recs: Recs) -> Recs:
    """Scores min-max scaled into (0, 1] per row (1 for the best; a row of equal scores is all 1),
    so that lists on different scales can be added. -1 entries keep -inf."""
    valid = recs.items >= 0
    scores = np.where(valid, recs.scores, np.nan).astype(np.float64)
    with np.errstate(all="ignore"):
        lo, hi = np.nanmin(scores, axis=1, keepdims=True), np.nanmax(scores, axis=1, keepdims=True)
        span = hi - lo
        scaled = np.where(span > 0, (scores - lo) / span, 1.0)
    # the floor keeps the last item of a list above "not in the list"
    scaled = np.where(valid, 1e-3 + (1 - 1e-3) * scaled, -np.inf)
    return Recs(recs.items, scaled.astype(np.float32))


@dataclass
class Weighted(_Composed):
    """Weighted hybrid: sum over models of weight x (score min-max normalised per customer) over
    each model's top `depth` articles; an article missing from a list adds 0."""

    name: ClassVar[str] = "weighted"
    models: str = "repurchase,itemcf"
    weights: str = "0.7,0.3"
    params: str = ""
    depth: int = 50

    def _weights(self) -> np.ndarray:
        try:
            w = np.array([float(x) for x in split_list(self.weights, "weighted: weights")])
        except ValueError:
            raise ConfigError(f"weighted: weights must be numbers, not {self.weights!r}") from None
        names = self._names()
        if len(w) != len(names) or (w < 0).any() or w.sum() <= 0:
            raise ConfigError(
                f"weighted: one non-negative weight per model, not all zero: models={self.models!r}"
                f" ({len(names)}), weights={self.weights!r} ({len(w)})"
            )
        return w

    def fit(self, data: Dataset) -> Self:
        self._weights()
        self._fit_parts(data)
        return self

    def _combine(
        self, users: np.ndarray, extra: list[np.ndarray] | None, k: int, exclude_seen: bool
    ) -> Recs:
        total = sp.csr_matrix((len(users), self.n_items_))
        depth = max(k, self.depth)
        for model, w in zip(self.components().values(), self._weights(), strict=True):
            recs = normalised(part_list(model, users, extra, depth, exclude_seen))
            total = total + w * as_csr(recs.items, self.n_items_, recs.scores.astype(np.float64))
        return row_top_k(sp.csr_matrix(total), k)


@dataclass
class Switching(_Composed):
    """Switching hybrid: the first model for customers whose last purchase is at most
    `recent_days` days before the end of the training data, the second for everybody else
    (customers without purchases and unknown ones included)."""

    name: ClassVar[str] = "switching"
    fallback: ClassVar[str] = (
        "the second model for customers without a recent purchase (cold and unknown ones included)"
    )
    models: str = "repurchase,itemcf"
    recent_days: int = 30
    params: str = ""

    days_since_: np.ndarray = field(default=None, init=False, repr=False)

    def fit(self, data: Dataset) -> Self:
        if len(self._names()) != 2:
            raise ConfigError("switching: give exactly two models (recent customers, the rest)")
        self._fit_parts(data)
        last = data.last_purchase()  # days since 1970 of each customer's last purchase, or -1
        self.days_since_ = np.where(last >= 0, last.max(initial=-1) - last, -1).astype(np.int32)
        return self

    def _combine(
        self, users: np.ndarray, extra: list[np.ndarray] | None, k: int, exclude_seen: bool
    ) -> Recs:
        first, second = self.components().values()
        recent = self.recent(users)
        if extra is not None:  # a purchase after the fit is the most recent of all
            recent |= np.array([len(e) > 0 for e in extra], dtype=bool)
        items = np.full((len(users), k), -1, np.int32)
        scores = np.full((len(users), k), -np.inf, np.float32)
        for model, rows in ((first, recent), (second, ~recent)):
            if rows.any():
                part_extra = None if extra is None else [extra[i] for i in np.flatnonzero(rows)]
                part = part_list(model, users[rows], part_extra, k, exclude_seen)
                items[rows], scores[rows] = part.items, part.scores
        return Recs(items, scores)

    def recent(self, users: np.ndarray) -> np.ndarray:
        """(n,) whether each user bought within `recent_days` (unknown users: False)."""
        known = (users >= 0) & (users < len(self.days_since_))
        days = self.days_since_[np.where(known, users, 0)]
        return known & (days >= 0) & (days <= self.recent_days)


@dataclass
class Cascade(_Composed):
    """Cascade hybrid: the customer's own articles first (at most `own_items`, by purchases
    weighted 0.5 ** (age / half_life)), then the articles of each model in `models` in turn,
    each tier filling the places left by the ones before (never an article twice)."""

    name: ClassVar[str] = "cascade"
    models: str = "itemcf"
    own_items: int = 12
    half_life: float = 30.0
    params: str = ""

    own_: sp.csr_matrix = field(default=None, init=False, repr=False)

    def fit(self, data: Dataset) -> Self:
        self.own_ = data.user_items(half_life=self.half_life)
        self._fit_parts(data)
        return self

    def _combine(
        self, users: np.ndarray, extra: list[np.ndarray] | None, k: int, exclude_seen: bool
    ) -> Recs:
        own = rows_of(self.own_, users)
        if extra is not None:  # bought on the last day: weight 1
            own = own + extra_matrix(extra, self.own_.shape[1])
        out = row_top_k(sp.csr_matrix(own), min(k, self.own_items))
        if exclude_seen:  # every own article is seen
            out = Recs(np.full_like(out.items, -1), np.full_like(out.scores, -np.inf))
        for model in self.components().values():
            out = fill(out, normalised(part_list(model, users, extra, k, exclude_seen)), k)
        return out
