"""The model contract (Recommender, Recs) and the batched top-k helpers every model shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from fashionrec.data.dataset import Dataset
from fashionrec.metrics import hit_matrix

BATCH = 20_000


@dataclass(frozen=True)
class Recs:
    """Top-k per user: int32 item indices (-1 where fewer than k) and float32 scores, descending."""

    items: np.ndarray
    scores: np.ndarray

    def __post_init__(self) -> None:
        if self.items.shape != self.scores.shape or self.items.ndim != 2:
            raise ValueError(f"items {self.items.shape} and scores {self.scores.shape} differ")

    @classmethod
    def concat(cls, parts: list[Recs]) -> Recs:
        return cls(
            np.concatenate([p.items for p in parts]), np.concatenate([p.scores for p in parts])
        )


@runtime_checkable
class Recommender(Protocol):
    """What every model is: hyper-parameters in the constructor, data only in `fit`."""

    name: ClassVar[str]
    fallback: ClassVar[str]

    def fit(self, data: Dataset) -> Self: ...

    def recommend(self, users: np.ndarray, k: int, *, exclude_seen: bool = False) -> Recs: ...


def params_of(model: Any) -> dict[str, Any]:
    """The constructor arguments of a dataclass model (its hyper-parameters)."""
    return {f.name: getattr(model, f.name) for f in fields(model) if f.init}


def state_of(model: Any) -> dict[str, Any]:
    """The fitted state of a dataclass model: its non-constructor fields."""
    return {f.name: getattr(model, f.name) for f in fields(model) if not f.init}


# ---------------------------------------------------------------------------------------------
# Top-k helpers: vectorised over users, batched to bound memory.


def batched(users: np.ndarray, fn: Callable[[np.ndarray], Recs], batch: int = BATCH) -> Recs:
    """Apply `fn` to slices of `users` and stack the results (progress bar when it is long)."""
    users = np.asarray(users, dtype=np.int64)
    if len(users) <= batch:
        return fn(users)
    starts = range(0, len(users), batch)
    parts = [
        fn(users[s : s + batch])
        for s in tqdm(starts, desc="recommend", unit="batch", disable=len(starts) < 5)
    ]
    return Recs.concat(parts)


def first_k(items: np.ndarray, scores: np.ndarray, keep: np.ndarray, k: int) -> Recs:
    """The first k kept candidates of each row, in their order; -1 / -inf padding."""
    keep = keep & (items >= 0)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
    rows = np.arange(items.shape[0])[:, None]
    out_items = np.where(keep[rows, order], items[rows, order], -1).astype(np.int32)
    out_scores = np.where(out_items >= 0, scores[rows, order], -np.inf).astype(np.float32)
    if out_items.shape[1] < k:
        pad = k - out_items.shape[1]
        out_items = np.pad(out_items, ((0, 0), (0, pad)), constant_values=-1)
        out_scores = np.pad(out_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    return Recs(out_items, out_scores)


def rows_of(matrix: sp.csr_matrix | None, users: np.ndarray) -> sp.csr_matrix | None:
    """Rows of a user x item matrix for `users`; unknown users (-1, out of range) get empty rows."""
    if matrix is None:
        return None
    known = (users >= 0) & (users < matrix.shape[0])
    safe = np.where(known, users, 0)
    rows = matrix[safe]
    if not known.all():
        rows = sp.diags(known.astype(np.float32)) @ rows
        rows.eliminate_zeros()
    return sp.csr_matrix(rows)


def rank_list(
    ranked_items: np.ndarray,
    ranked_scores: np.ndarray,
    users: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
) -> Recs:
    """One ranked list for all `users`, skipping each user's items in `exclude` (user x item)."""
    users = np.asarray(users, dtype=np.int64)
    excl = rows_of(exclude, users)
    extra = int(np.diff(excl.indptr).max(initial=0)) if excl is not None else 0
    length = min(len(ranked_items), k + extra)
    items = np.broadcast_to(ranked_items[:length], (len(users), length))
    scores = np.broadcast_to(ranked_scores[:length], (len(users), length))
    keep = np.ones(items.shape, dtype=bool) if excl is None else ~hit_matrix(items, excl)
    return first_k(items, scores, keep, k)


def top_items(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All items with a positive score, best first (ties by item index, so it is deterministic)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    order = order[scores[order] > 0]
    return order.astype(np.int32), scores[order].astype(np.float32)


def row_top_k(mat: sp.csr_matrix, k: int) -> Recs:
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


def extra_matrix(extra: list[np.ndarray], n_items: int) -> sp.csr_matrix:
    """(len(extra), n_items) float32 CSR of purchase counts: row i counts the items in extra[i]."""
    lengths = np.array([len(e) for e in extra], dtype=np.int64)
    items = np.concatenate([np.asarray(e, dtype=np.int64) for e in extra]) if len(extra) else []
    rows = np.repeat(np.arange(len(extra)), lengths)
    mat = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, items)), shape=(len(extra), n_items)
    )
    mat.sum_duplicates()
    return mat


def top_k_dense(scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> Recs:
    """Top k of each row of a dense (n, n_items) score matrix, best first; entries in `exclude`
    (same shape, sparse) and -inf scores are never returned (-1 padding instead). Ties within the
    top k are ordered by item index; which of several items tied at the k-th score is kept is
    up to argpartition."""
    scores = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None and exclude.nnz:
        coo = exclude.tocoo()
        scores[coo.row, coo.col] = -np.inf
    n, m = scores.shape
    kk = min(k, m)
    part = (
        np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        if kk < m
        else np.tile(np.arange(m), (n, 1))
    )
    rows = np.arange(n)[:, None]
    part_scores = scores[rows, part]
    order = np.lexsort((part, -part_scores), axis=1)  # score desc, then item index
    items, vals = part[rows, order], part_scores[rows, order]
    return first_k(items, vals, np.isfinite(vals), k)


def popularity_fallback(data: Dataset, half_life: float = 7.0) -> tuple[np.ndarray, np.ndarray]:
    """The time-decayed popularity ranking (items, scores) that models serve to cold customers."""
    return top_items(data.item_popularity(half_life=half_life))


def squash(scores: np.ndarray) -> np.ndarray:
    """Map non-negative scores into [0, 1) keeping their order (x / (1 + x))."""
    scores = np.maximum(scores, 0)
    return scores / (1.0 + scores)


def fill(primary: Recs, fallback: Recs, k: int) -> Recs:
    """Each row's primary items first, then fallback items that are not already there.

    Scores stay descending: primary scores map into [1, 2), fallback scores into [0, 1), so the
    tiers never interleave (both inputs must have non-negative scores).
    """
    primary_csr = _as_csr(primary.items, fallback.items.max(initial=primary.items.max(initial=0)))
    dup = hit_matrix(fallback.items, primary_csr)
    items = np.concatenate([primary.items, fallback.items], axis=1)
    scores = np.concatenate([1.0 + squash(primary.scores), squash(fallback.scores)], axis=1)
    keep = np.concatenate([primary.items >= 0, ~dup], axis=1)
    return first_k(items, scores, keep, k)


def _as_csr(items: np.ndarray, max_item: int) -> sp.csr_matrix:
    """Binary CSR with one row per row of `items` (ignoring -1)."""
    valid = items >= 0
    rows = np.nonzero(valid)[0]
    return sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, items[valid])),
        shape=(items.shape[0], int(max_item) + 1),
    )
