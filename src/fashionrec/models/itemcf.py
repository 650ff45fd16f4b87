"""Item-to-item collaborative filtering, "others also bought": co-purchases normalised into a
similarity, the top-N neighbours of each article kept as a sparse item x item matrix.

Co-purchases: article j counts for article i in a basket (one customer's purchases of one day)
when the same customer bought j within `window_days` of that basket (0: the same basket only;
None: any time). Similarities (Sarwar et al. 2001; Deshpande & Karypis 2004):

- cosine       c_ij / sqrt(n_i n_j)
- conditional  c_ij / (n_i n_j ** alpha): P(j | i) with the popularity of j damped by alpha
- pearson      correlation of the purchase-count columns of the `n_active` most active customers
               (the customer x article pivot table retail teams often build)

Customers are scored by `neighbours.NeighbourModel`: neighbours of their recency-weighted history
mixed with their own articles by the data's repeat-purchase share, then time-decayed popularity.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Self

import numpy as np
import polars as pl
import scipy.sparse as sp

from fashionrec.data.dataset import Dataset, decay_table
from fashionrec.errors import ConfigError
from fashionrec.models import neighbours as nb

log = logging.getLogger(__name__)

SIMILARITIES = ("cosine", "conditional", "pearson")


@dataclass
class ItemCF(nb.NeighbourModel):
    """Others also bought: co-purchase neighbours of the customer's recent articles."""

    name: ClassVar[str] = "itemcf"
    neighbours: int = 200  # kept per article
    similarity: str = "cosine"  # or "conditional", "pearson"
    window_days: int | None = 7  # co-purchase window (0: same basket, None: any time)
    half_life: float | None = None  # days; older co-purchases count less (None: all equal)
    alpha: float = 0.5  # popularity damping of "conditional"
    n_active: int = 10_000  # customers whose purchase counts "pearson" correlates

    def __post_init__(self) -> None:
        if self.similarity not in SIMILARITIES:
            raise ConfigError(
                f"itemcf: similarity must be one of {', '.join(SIMILARITIES)}, "
                f"not {self.similarity!r}"
            )
        if self.window_days is not None and self.window_days < 0:
            raise ConfigError(f"itemcf: window_days must be >= 0 or None, not {self.window_days}")

    def fit(self, data: Dataset) -> Self:
        if self.similarity == "pearson":
            rows = active_counts(data, self.n_active)
            self.neighbours_ = item_neighbours(rows, rows, "pearson", self.neighbours)
        else:
            weighted, window = co_purchase_rows(data, self.window_days, self.half_life)
            self.neighbours_ = item_neighbours(
                weighted, window, self.similarity, self.neighbours, self.alpha
            )
        self.fit_customers(data)
        log.info("itemcf: %d neighbour pairs for %d items", self.neighbours_.nnz, data.n_items)
        return self


def co_purchase_rows(
    data: Dataset, window_days: int | None, half_life: float | None
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(weighted, window): both (contexts x items); c = weighted.T @ window counts co-purchases.

    Contexts are baskets (customer, day). `weighted` holds each basket's articles with weight
    0.5 ** (age / half_life) (1 without a half-life); `window` holds, for the same basket, every
    article the customer bought within `window_days` of it (binary). With `window_days=None` the
    contexts are customers and the window is their whole history.
    """
    if data.transactions.is_empty():
        empty = sp.csr_matrix((0, data.n_items), dtype=np.float32)
        return empty, empty
    if window_days is None:
        window = data.user_items(binary=True)
        if half_life is None:
            return window, window
        weighted = data.user_items(half_life=half_life)
        weighted.data = np.minimum(weighted.data, 1.0)  # a decayed "bought", not a count
        return weighted, window
    tx = data.transactions.select("user", "item", pl.col("t_dat").cast(pl.Int32).alias("day"))
    keys = tx.select("user", "day").unique().sort("user", "day").with_row_index("basket")
    tx = tx.join(keys, on=["user", "day"], how="left")
    n_baskets = keys.height
    baskets = _binary(tx["basket"].to_numpy(), tx["item"].to_numpy(), (n_baskets, data.n_items))
    if window_days == 0:
        window = baskets
    else:
        window = _binary_product(_window_pairs(keys, window_days), baskets)
    weighted = baskets
    if half_life is not None:
        day = keys["day"].to_numpy()
        age = day.max() - day
        decay = decay_table(int(age.max(initial=0)), half_life)[age]
        weighted = sp.csr_matrix(sp.diags(decay) @ baskets)
    return weighted, window


def _window_pairs(keys: pl.DataFrame, window_days: int) -> sp.csr_matrix:
    """Binary (baskets x baskets): baskets of the same customer at most `window_days` apart."""
    user = keys["user"].to_numpy().astype(np.int64)
    day = keys["day"].to_numpy().astype(np.int64)
    span = int(day.max() - day.min()) + window_days + 1
    key = user * span + (day - day.min())  # sorted, since keys are sorted by (user, day)
    lo = np.searchsorted(key, key - window_days, side="left")
    hi = np.searchsorted(key, key + window_days, side="right")
    counts = hi - lo
    rows = np.repeat(np.arange(len(key)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = np.repeat(lo, counts) + offsets
    return _binary(rows, cols, (len(key), len(key)))


def active_counts(data: Dataset, n_active: int) -> sp.csr_matrix:
    """Purchase counts (customers x items) of the `n_active` customers with the most purchases."""
    counts = data.user_items()
    per_user = np.asarray(counts.sum(axis=1)).ravel()
    order = np.lexsort((np.arange(len(per_user)), -per_user))  # most purchases first, by index
    top = np.sort(order[: min(n_active, int((per_user > 0).sum()))])
    return counts[top]


def item_neighbours(
    weighted: sp.csr_matrix,
    window: sp.csr_matrix,
    similarity: str,
    n: int,
    alpha: float = 0.5,
) -> sp.csr_matrix:
    """Top-`n` item x item similarity matrix from c = weighted.T @ window, without the diagonal.

    Hand-written instead of implicit's all_pairs_knn: that returns the top-K of a symmetric dot
    product only, while conditional and pearson need the raw count of each pair.
    """
    stats = _item_stats(weighted, similarity)

    def normalise(counts: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return _normalise(counts, rows, cols, stats, similarity, alpha)

    return nb.blocked_top_n(sp.csr_matrix(weighted.T), window, n, normalise, "itemcf")


def _item_stats(weighted: sp.csr_matrix, similarity: str) -> dict[str, np.ndarray]:
    """Per-item totals the normalisation needs: n_i (weighted baskets), or mean and variance of
    the purchase counts for pearson."""
    totals = np.asarray(weighted.sum(axis=0)).ravel().astype(np.float64)
    if similarity != "pearson":
        return {"n": totals}
    rows = weighted.shape[0]
    mean = totals / max(rows, 1)
    squares = np.asarray(weighted.multiply(weighted).sum(axis=0)).ravel()
    var = np.maximum(squares - rows * mean**2, 0.0)
    return {"mean": mean, "var": var, "rows": np.array([rows])}


def _normalise(
    counts: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    stats: dict[str, np.ndarray],
    similarity: str,
    alpha: float,
) -> np.ndarray:
    """Similarity of each (row, col) pair from its co-purchase count (or cross product)."""
    counts = counts.astype(np.float64)
    if similarity == "cosine":
        n = stats["n"]
        return counts / np.sqrt(n[rows] * n[cols])
    if similarity == "conditional":
        n = stats["n"]
        return counts / (n[rows] * n[cols] ** alpha)
    mean, var, size = stats["mean"], stats["var"], float(stats["rows"][0])
    denom = np.sqrt(var[rows] * var[cols])
    cov = counts - size * mean[rows] * mean[cols]
    return np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 0)


def _binary(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    mat = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    mat.sum_duplicates()
    mat.data[:] = 1.0
    return mat


def _binary_product(a: sp.csr_matrix, b: sp.csr_matrix) -> sp.csr_matrix:
    out = sp.csr_matrix(a @ b)
    out.data[:] = 1.0
    return out
