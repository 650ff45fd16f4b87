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
    def empty(cls, n: int, k: int) -> Recs:
        """n rows of k padding entries (-1 / -inf)."""
        return cls(np.full((n, k), -1, np.int32), np.full((n, k), -np.inf, np.float32))

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


@runtime_checkable
class HistoryAware(Recommender, Protocol):
    """A model that reads the customers' purchases at request time: `recommend_with` also counts
    `extra[i]`, the articles users[i] (-1: unknown) bought after the fit, as bought on the last
    day; with `extra=None` (or empty lists) it is `recommend`. The service passes the purchases
    posted as feedback, so these models follow them without a refit."""

    def recommend_with(
        self,
        users: np.ndarray,
        extra: list[np.ndarray] | None,
        k: int,
        *,
        exclude_seen: bool = False,
    ) -> Recs: ...


def built(model: Any, name: str, build: Callable[[], Any]) -> Any:
    """A structure `model` builds for serving only, on first use, then keeps; it is never saved
    (not a dataclass field), and a `fit` clears them all by setting `model._cache = {}`."""
    cache = model.__dict__.setdefault("_cache", {})
    if name not in cache:
        cache[name] = build()
    return cache[name]


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


def batched_with(
    users: np.ndarray,
    extra: list[np.ndarray] | None,
    n_items: int,
    fn: Callable[[np.ndarray, sp.csr_matrix | None], Recs],
    batch: int = BATCH,
) -> Recs:
    """`batched` for `recommend_with`: `fn(users, new)` per slice, where `new` counts the
    slice's articles in `extra` (bought after the fit; None when `extra` is None)."""
    users = np.asarray(users, dtype=np.int64)
    new = None if extra is None else extra_matrix(extra, n_items)
    return batched(
        np.arange(len(users)),
        lambda pos: fn(users[pos], None if new is None else new[pos]),
        batch,
    )


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
    n: int,
    k: int,
    exclude: sp.csr_matrix | None = None,
) -> Recs:
    """One ranked list for `n` rows, skipping in each row the items of its row of `exclude`
    (n x items; e.g. `rows_of(seen, users)`)."""
    extra = int(np.diff(exclude.indptr).max(initial=0)) if exclude is not None else 0
    length = min(len(ranked_items), k + extra)
    items = np.broadcast_to(ranked_items[:length], (n, length))
    scores = np.broadcast_to(ranked_scores[:length], (n, length))
    keep = np.ones(items.shape, dtype=bool) if exclude is None else ~hit_matrix(items, exclude)
    return first_k(items, scores, keep, k)


def top_items(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All items with a positive score, best first (ties by item index, so it is deterministic)."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    order = order[scores[order] > 0]
    return order.astype(np.int32), scores[order].astype(np.float32)


def top_n_per_row(mat: sp.csr_matrix, n: int, *, self_offset: int | None = None) -> sp.csr_matrix:
    """Keep the `n` largest positive entries of each CSR row (ties: lower column first), as
    float32; with `self_offset`, row r is item r + self_offset and never its own neighbour.
    float64 entries are ranked at float64 precision, any other dtype as float32.

    Vectorised over all rows with one stable sort of the non-zeros, so a row may be long (a
    popular item co-occurs with thousands of others) without a dense (rows x longest) buffer.

    >>> m = sp.csr_matrix(np.array([[0, 3, 1, 3], [2, 0, 0, 0], [5, 0, 4, 0]], dtype=np.float32))
    >>> top_n_per_row(m, 2).toarray().tolist()
    [[0.0, 3.0, 0.0, 3.0], [2.0, 0.0, 0.0, 0.0], [5.0, 0.0, 4.0, 0.0]]
    >>> top_n_per_row(m, 1, self_offset=0).toarray().tolist()
    [[0.0, 3.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0]]
    >>> top_n_per_row(m[1:], 1, self_offset=1).toarray().tolist()  # rows are items 1 and 2
    [[2.0, 0.0, 0.0, 0.0], [5.0, 0.0, 0.0, 0.0]]
    """
    dtype = np.float64 if mat.dtype == np.float64 else np.float32
    mat = sp.csr_matrix(mat, dtype=dtype, copy=True)
    mat.sum_duplicates()  # also sorts the columns of each row
    rows = np.repeat(np.arange(mat.shape[0], dtype=np.int64), np.diff(mat.indptr))
    keep = mat.data > 0
    if self_offset is not None:
        keep &= mat.indices != rows + self_offset
    rows, cols, vals = rows[keep], mat.indices[keep], mat.data[keep]
    rows, cols, vals = _above_bound(rows, cols, vals, mat.shape[0], n)
    if dtype == np.float32:
        # one int64 key per entry: the row, then the score descending (the bits of a positive
        # float32 sort like the float); a stable sort keeps ascending columns for equal scores.
        # 10x faster than lexsort((cols, -vals, rows)) on 30M entries.
        key = (rows << 32) | (np.uint32(0xFFFFFFFF) - vals.view(np.uint32)).astype(np.int64)
        order = np.argsort(key, kind="stable")
    else:
        order = np.lexsort((-vals, rows))  # stable too
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, np.arange(mat.shape[0]))
    rank = np.arange(len(rows)) - starts[rows]
    keep = rank < n
    counts = np.bincount(rows[keep], minlength=mat.shape[0])
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    out = sp.csr_matrix((vals[keep].astype(np.float32), cols[keep], indptr), shape=mat.shape)
    out.has_sorted_indices = False  # columns are in score order, not ascending
    return out


SAMPLE = 8  # _above_bound: a long row's bound is the n-th largest of its first SAMPLE x n entries
SAMPLE_CHUNK = 1 << 22  # sampled entries at a time


def _above_bound(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int, n: int
) -> tuple[np.ndarray, ...]:
    """The entries (row-grouped, as in CSR order) that can be among their row's n largest: in
    a row longer than SAMPLE x n, those at least the n-th largest of its first SAMPLE x n
    entries, a lower bound of the row's n-th largest (ties kept, order kept, so the top n are
    exactly those of all the entries).

    Hand-written because sorting only the survivors (about 1/SAMPLE of a long row, more with
    ties) makes `top_n_per_row` 2.5x faster on co-purchase score rows of thousands of entries
    with sorted columns, 1.5x with unsorted ones, which it sorts first
    (benchmarks/topn_bench.py); numpy has no per-row partition of ragged rows."""
    m = SAMPLE * n
    lengths = np.bincount(rows, minlength=n_rows)
    long = lengths > m
    if n < 1 or not long.any():
        return rows, cols, vals
    starts = np.cumsum(lengths) - lengths
    bound = np.full(n_rows, -np.inf, dtype=vals.dtype)
    long_rows = np.flatnonzero(long)
    step = max(1, SAMPLE_CHUNK // m)  # bounds the (rows, m) sample's memory
    for s in range(0, len(long_rows), step):
        part = long_rows[s : s + step]
        sample = vals[(starts[part][:, None] + np.arange(m)[None, :]).ravel()].reshape(-1, m)
        bound[part] = -np.partition(-sample, n - 1, axis=1)[:, n - 1]
    keep = vals >= bound[rows]
    return rows[keep], cols[keep], vals[keep]


def row_top_k(mat: sp.csr_matrix, k: int) -> Recs:
    """The k largest positive entries of each CSR row as Recs (ties by item index; -1 / -inf
    padding), best first; ranked as in `top_n_per_row`.

    >>> m = sp.csr_matrix(np.array([[0, 3, 1, 3], [0, 0, 0, 0]], dtype=np.float32))
    >>> row_top_k(m, 3).items.tolist()
    [[1, 3, 2], [-1, -1, -1]]
    """
    top = top_n_per_row(mat, k)
    n = top.shape[0]
    lengths = np.diff(top.indptr)
    rows = np.repeat(np.arange(n), lengths)
    rank = np.arange(top.nnz) - np.repeat(top.indptr[:-1], lengths)
    items = np.full((n, k), -1, dtype=np.int32)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    items[rows, rank] = top.indices
    scores[rows, rank] = top.data
    return Recs(items, scores)


def lookup(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Position of each query key in the sorted array `keys`, -1 where absent (e.g. keys of
    user * n_items + item pairs: which pairs were bought)."""
    pos = np.searchsorted(keys, query)
    pos = np.minimum(pos, max(len(keys) - 1, 0))
    found = (keys[pos] == query) if len(keys) else np.zeros(len(query), bool)
    return np.where(found, pos, -1)


def row_positions(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For CSR-style rows (`indptr`): the indptr of the rows `rows` and the positions of their
    entries, in order; a row -1 (or out of range) is empty."""
    known = (rows >= 0) & (rows < len(indptr) - 1)
    safe = np.where(known, rows, 0)
    lengths = np.where(known, np.diff(indptr)[safe], 0)
    out = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    return out, np.repeat(indptr[safe] - out[:-1], lengths) + np.arange(out[-1])


def take_rows(
    indptr: np.ndarray, items: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, items) of the rows `rows`; a row -1 (or out of range) is empty."""
    out, pos = row_positions(indptr, rows)
    return out, items[pos]


def as_csr_lists(histories: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, items) of a list of item-index arrays."""
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    indptr = np.zeros(len(histories) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    parts = [np.asarray(h, dtype=np.int64).ravel() for h in histories]
    items = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return indptr, items


def extra_matrix(extra: list[np.ndarray], n_items: int) -> sp.csr_matrix:
    """(len(extra), n_items) float32 CSR of purchase counts: row i counts the items in extra[i]."""
    indptr, items = as_csr_lists(extra)
    rows = np.repeat(np.arange(len(extra)), np.diff(indptr))
    mat = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, items)), shape=(len(extra), n_items)
    )
    mat.sum_duplicates()
    return mat


def seen_with(seen: sp.csr_matrix, new: sp.csr_matrix | None) -> sp.csr_matrix:
    """The bought-article rows `seen` (1.0) with the articles of `new` (purchases after the fit,
    same rows) added."""
    return seen if new is None else sp.csr_matrix((seen + new) > 0, dtype=np.float32)


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
    n_cols = int(fallback.items.max(initial=primary.items.max(initial=0))) + 1
    primary_csr = as_csr(primary.items, n_cols)
    dup = hit_matrix(fallback.items, primary_csr)
    items = np.concatenate([primary.items, fallback.items], axis=1)
    scores = np.concatenate([1.0 + squash(primary.scores), squash(fallback.scores)], axis=1)
    keep = np.concatenate([primary.items >= 0, ~dup], axis=1)
    return first_k(items, scores, keep, k)


def as_csr(items: np.ndarray, n_cols: int, values: np.ndarray | None = None) -> sp.csr_matrix:
    """(rows of `items`, n_cols) CSR of each row's items (-1 ignored): `values` (an array shaped
    like `items`) where given, else float32 ones."""
    valid = items >= 0
    rows = np.nonzero(valid)[0]
    data = np.ones(len(rows), dtype=np.float32) if values is None else values[valid]
    return sp.csr_matrix((data, (rows, items[valid])), shape=(items.shape[0], n_cols))
