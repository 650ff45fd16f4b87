"""Offline evaluation metrics for top-k recommendations, fully vectorised with numpy/scipy.

Conventions shared by every function:

* ``recs`` is an integer array of shape ``(n_users, k)`` holding item indices in
  ``0..n_items-1``, right-padded with ``-1`` when a user has fewer than ``k`` items. Rows hold
  no duplicate items (this is a precondition and is not checked).
* ``truth`` is a ``scipy.sparse.csr_matrix`` of shape ``(n_users, n_items)``; a stored nonzero
  means "relevant" (bought in the test period). Row ``u`` of ``truth`` matches row ``u`` of
  ``recs``.
* Per-user metrics take ``hits = hit_matrix(recs, truth)``, ``n_relevant`` (relevant items per
  user, ``np.diff(truth.indptr)`` of a canonical matrix) and the cutoff ``k``, and return float64
  arrays of shape ``(n_users,)`` so callers can average them or group them with :func:`by_group`.
* List-level ("beyond accuracy") metrics return a plain ``float``.

No function loops over users in Python; everything is ``O(n_users * k)`` (plus per-row sorts in
:func:`hit_matrix` and :func:`overlap`), so the 1.37M H&M customers take under a second per metric.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = [
    "average_precision",
    "by_group",
    "by_item_group",
    "coverage",
    "evaluate_recs",
    "hit_matrix",
    "hit_rate",
    "ndcg",
    "novelty",
    "overlap",
    "per_user",
    "personalization",
    "precision",
    "recall",
    "recall_1",
    "recall_30",
]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _check_recs(recs: np.ndarray, n_items: int | None = None) -> np.ndarray:
    """Validate shape, dtype and item range of ``recs`` (cheap: one min and one max pass)."""
    recs = np.asarray(recs)
    if recs.ndim != 2:
        raise ValueError(f"recs must be 2-D (n_users, k), got shape {recs.shape}")
    if not np.issubdtype(recs.dtype, np.integer):
        raise TypeError(f"recs must have an integer dtype, got {recs.dtype}")
    if recs.size:
        lo, hi = int(recs.min()), int(recs.max())
        if lo < -1:
            raise ValueError(f"recs contains {lo}; only -1 is allowed as padding")
        if n_items is not None and hi >= n_items:
            raise ValueError(f"recs contains item {hi} but there are only {n_items} items")
    return recs


def _canonical_truth(truth: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    """CSR with sorted, duplicate-free indices and no explicit zeros; copies only if needed."""
    if not sp.issparse(truth):
        raise TypeError(f"truth must be a scipy sparse matrix, got {type(truth).__name__}")
    if truth.format != "csr":
        truth = truth.tocsr()
    if not truth.has_canonical_format or not truth.data.all():
        truth = truth.copy()
        truth.sum_duplicates()  # also sorts the indices of each row
        truth.eliminate_zeros()
    return truth


def _check_k(k: int) -> int:
    """k as a positive int."""
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    return int(k)


def _check_per_user(
    hits: np.ndarray, n_relevant: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Validate per-user metric inputs; return bool hits cut to k columns, n_relevant and k."""
    hits = np.asarray(hits)
    n_relevant = np.asarray(n_relevant)
    if hits.ndim != 2:
        raise ValueError(f"hits must be 2-D (n_users, k), got shape {hits.shape}")
    if n_relevant.shape != (hits.shape[0],):
        raise ValueError(f"n_relevant must have shape ({hits.shape[0]},), got {n_relevant.shape}")
    k = _check_k(k)
    return hits[:, :k].astype(bool, copy=False), n_relevant, k


def _n_hits(hits: np.ndarray) -> np.ndarray:
    """Number of hits per row as int64."""
    return np.count_nonzero(hits, axis=1).astype(np.int64, copy=False)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den as float64, 0.0 where den == 0."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _mean(values: np.ndarray) -> float:
    """Mean as a float, NaN (without a warning) for an empty array."""
    return float(values.mean()) if values.size else float("nan")


# --------------------------------------------------------------------------------------------
# Hits
# --------------------------------------------------------------------------------------------


def hit_matrix(recs: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """(n_users, k) bool: ``recs[u, j]`` is relevant for ``u``; ``-1`` padding is never a hit.

    Int64 keys ``row * (n_items + 1) + item`` of the row-sorted recs are globally sorted, so one
    ``searchsorted`` of the (usually fewer) truth keys finds every hit without a user loop.

    >>> recs = np.array([[2, 0, 1], [3, -1, -1]])
    >>> truth = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 0, 0]]))
    >>> hit_matrix(recs, truth).astype(int).tolist()  # user 0 bought items 0 and 2
    [[1, 1, 0], [0, 0, 0]]
    """
    truth = _canonical_truth(truth)
    n_users, n_items = truth.shape
    recs = _check_recs(recs, n_items)
    if recs.shape[0] != n_users:
        raise ValueError(f"recs has {recs.shape[0]} rows but truth has {n_users}")
    hits = np.zeros(recs.shape, dtype=bool)
    if recs.size == 0 or truth.nnz == 0:
        return hits

    # With stride n_items + 1, padding (-1) lands on key (row - 1) * stride + n_items, a slot no
    # truth key uses, so it can neither alias a neighbouring row nor break the global order.
    stride = np.int64(n_items) + 1
    queries = np.sort(recs, axis=1).astype(np.int64)
    queries += np.arange(n_users, dtype=np.int64)[:, None] * stride
    queries = queries.ravel()
    truth_rows = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(truth.indptr))
    keys = truth_rows * stride + truth.indices
    pos = np.minimum(np.searchsorted(queries, keys), queries.size - 1)
    found = queries[pos] == keys
    rows, items = truth_rows[found], truth.indices[found]
    # Back to the original (unsorted) column of each hit; rows hold no duplicates.
    hits[rows, np.argmax(recs[rows] == items[:, None], axis=1)] = True
    return hits


# --------------------------------------------------------------------------------------------
# Per-user accuracy metrics
# --------------------------------------------------------------------------------------------


def average_precision(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """AP@k as in the H&M Kaggle competition: ``sum_j P(j) rel(j) / min(n_relevant, k)``.

    0.0 for users without relevant items. Only hit positions are visited (``O(n_hits)``).

    >>> hits = np.array([[True, False, True], [False, True, False], [False, False, False]])
    >>> n_rel = np.array([2, 3, 0])
    >>> # user 0: hits at ranks 1 and 3 -> (1/1 + 2/3) / min(2, 3) = 0.8333...
    >>> # user 1: hit at rank 2 -> (1/2) / min(3, 3) = 0.1666...; user 2: nothing relevant -> 0
    >>> np.round(average_precision(hits, n_rel, k=3), 4).tolist()
    [0.8333, 0.1667, 0.0]
    """
    hits, n_relevant, k = _check_per_user(hits, n_relevant, k)
    n_users = hits.shape[0]
    rows, cols = np.nonzero(hits)  # row-major order: hits of a row are contiguous, by rank
    counts = np.bincount(rows, minlength=n_users)
    first = np.cumsum(counts) - counts  # index of each row's first hit in (rows, cols)
    n_hits_so_far = np.arange(rows.size) - first[rows] + 1
    precision_at_hit = n_hits_so_far / (cols + 1.0)
    total = np.bincount(rows, weights=precision_at_hit, minlength=n_users)
    return _safe_ratio(total, np.minimum(n_relevant, k))


def hit_rate(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """1.0 if the user has at least one hit in the top k, else 0.0.

    >>> hits = np.array([[False, True], [False, False]])
    >>> hit_rate(hits, np.array([1, 2]), k=2).tolist()
    [1.0, 0.0]
    >>> hit_rate(hits, np.array([1, 2]), k=1).tolist()  # the hit is at rank 2, beyond k=1
    [0.0, 0.0]
    """
    hits, _, k = _check_per_user(hits, n_relevant, k)
    return hits.any(axis=1).astype(np.float64)


def precision(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Hits in the top k divided by k (padded slots count as misses).

    >>> hits = np.array([[True, False, True, False], [False, False, False, True]])
    >>> precision(hits, np.array([2, 5]), k=4).tolist()  # 2/4 and 1/4
    [0.5, 0.25]
    """
    hits, _, k = _check_per_user(hits, n_relevant, k)
    return _n_hits(hits) / float(k)


def recall(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Hits in the top k divided by the number of relevant items (0.0 if none is relevant).

    >>> hits = np.array([[True, False, True, False], [False, False, False, True], [False] * 4])
    >>> recall(hits, np.array([2, 5, 0]), k=4).tolist()  # 2/2, 1/5, no relevant items -> 0
    [1.0, 0.2, 0.0]
    """
    hits, n_relevant, k = _check_per_user(hits, n_relevant, k)
    return _safe_ratio(_n_hits(hits), n_relevant)


def ndcg(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Binary-gain NDCG@k: ``sum_hits 1/log2(rank+1)`` over the ideal DCG of ``min(n_rel, k)`` hits.

    0.0 for users without relevant items.

    >>> hits = np.array([[False, True, False], [True, False, False], [False, False, False]])
    >>> # user 0: DCG = 1/log2(3) = 0.6309, ideal with 2 relevant = 1 + 0.6309 -> 0.3869
    >>> # user 1: hit at rank 1 and a single relevant item -> 1.0; user 2: nothing relevant -> 0
    >>> np.round(ndcg(hits, np.array([2, 1, 0]), k=3), 4).tolist()
    [0.3869, 1.0, 0.0]
    """
    hits, n_relevant, k = _check_per_user(hits, n_relevant, k)
    discount = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))  # rank 1..k
    rows, cols = np.nonzero(hits)
    dcg = np.bincount(rows, weights=discount[cols], minlength=hits.shape[0])
    ideal = np.concatenate(([0.0], np.cumsum(discount)))[np.minimum(n_relevant, k)]
    return _safe_ratio(dcg, ideal)


def recall_1(hits: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """The cVAE project's "recall_1": 1.0 if at least one of the top k was bought.

    Numerically identical to :func:`hit_rate`; kept under this name for comparability.

    >>> recall_1(np.array([[False, True], [False, False]]), np.array([3, 1]), k=2).tolist()
    [1.0, 0.0]
    """
    return hit_rate(hits, n_relevant, k)


def recall_30(hits: np.ndarray, n_relevant: np.ndarray, k: int, share: float = 0.3) -> np.ndarray:
    """The cVAE project's "recall_30": 1.0 if ``hits / k >= share`` (default 30% of the k recs).

    >>> hits = np.array([[True, False, True, False, False, False, False, False, False, True],
    ...                  [True, True, False, False, False, False, False, False, False, False]])
    >>> recall_30(hits, np.array([3, 4]), k=10).tolist()  # 3/10 >= 0.3; 2/10 < 0.3
    [1.0, 0.0]
    """
    hits, _, k = _check_per_user(hits, n_relevant, k)
    # Compare the ratio, not n_hits >= share * k: 0.28 * 25 == 7.000000000000001 in floats.
    return (_n_hits(hits) / float(k) >= share).astype(np.float64)


# --------------------------------------------------------------------------------------------
# List-level (beyond accuracy) metrics
# --------------------------------------------------------------------------------------------


def coverage(recs: np.ndarray, n_items: int) -> float:
    """Catalogue coverage: distinct recommended items / ``n_items``.

    >>> coverage(np.array([[0, 1], [1, -1]]), n_items=5)  # items {0, 1} out of 5
    0.4
    """
    if n_items < 1:
        raise ValueError(f"n_items must be positive, got {n_items}")
    recs = _check_recs(recs, n_items)
    seen = np.zeros(n_items, dtype=bool)
    seen[recs[recs >= 0]] = True
    return float(np.count_nonzero(seen)) / n_items


def overlap(recs: np.ndarray) -> float:
    """``1 - distinct lists / lists``, a list being the SET of a row's items (order ignored).

    Empty (all ``-1``) rows count as lists and equal each other. 0.0 when there are no rows.

    >>> overlap(np.array([[1, 2], [2, 1], [3, -1], [4, 5]]))  # 3 distinct sets in 4 lists
    0.25
    """
    recs = _check_recs(recs)
    n = recs.shape[0]
    if n == 0:
        return 0.0
    rows = np.ascontiguousarray(np.sort(recs.astype(np.int64, copy=False), axis=1))
    # Each row viewed as one opaque byte string: only equality matters, and a 1-D np.unique
    # on it is about twice as fast as np.unique(axis=0).
    as_bytes = rows.view(np.dtype((np.void, rows.dtype.itemsize * rows.shape[1]))).ravel()
    return 1.0 - np.unique(as_bytes).size / n


def personalization(recs: np.ndarray, n_items: int) -> float:
    """1 - mean pairwise cosine similarity of users' binary recommendation vectors.

    Exact, in ``O(n_users * k)`` from per-item sums rather than pairwise comparison. With
    ``a_u = 1/sqrt(l_u)`` (``l_u`` = list length), ``cos(u, v) = |R_u ∩ R_v| a_u a_v`` and
    ``sum_{u<v} cos(u, v) = (sum_i S_i^2 - sum_u l_u a_u^2) / 2`` where ``S_i = sum_{u∋i} a_u``
    and ``sum_u l_u a_u^2`` is just the number of non-empty lists. Users with empty lists are
    excluded; 0.0 if fewer than two non-empty lists remain.

    >>> # cos(0,1) = |{1}| / sqrt(2*2) = 0.5, cos(0,2) = 0, cos(1,2) = 1/sqrt(2*1) = 0.7071
    >>> # -> 1 - (0.5 + 0 + 0.7071) / 3 = 0.5976 (the empty 4th list is ignored)
    >>> round(personalization(np.array([[0, 1], [1, 2], [2, -1], [-1, -1]]), n_items=4), 4)
    0.5976
    """
    recs = _check_recs(recs, n_items)
    valid = recs >= 0
    lengths = np.count_nonzero(valid, axis=1)
    n_lists = int(np.count_nonzero(lengths))
    if n_lists < 2:
        return 0.0
    a = 1.0 / np.sqrt(np.maximum(lengths, 1))  # weight of each user (rows of length 0 unused)
    weights = np.broadcast_to(a[:, None], recs.shape)[valid]
    item_sums = np.bincount(recs[valid], weights=weights, minlength=n_items)
    pair_sum = (float(item_sums @ item_sums) - n_lists) / 2.0
    n_pairs = n_lists * (n_lists - 1) / 2.0
    # clip: for identical lists rounding can leave -2e-16, which would print as -0.0000
    return min(1.0, max(0.0, 1.0 - pair_sum / n_pairs))


def novelty(recs: np.ndarray, item_popularity: np.ndarray, floor: float = 1e-6) -> float:
    """Mean self-information ``-log2(p_i)`` over all recommended (non ``-1``) entries.

    ``p_i = item_popularity[i]`` is the share of training users who bought item ``i``; it is
    clipped below at ``floor`` (default 1e-6, i.e. at most ~19.9 bits) so that items nobody
    bought stay finite. NaN if there is no recommended entry.

    >>> pop = np.array([0.5, 0.25, 0.0])
    >>> # entries 0, 1, 0, 2 -> (1 + 2 + 1 + -log2(0.125)) / 4 = (1 + 2 + 1 + 3) / 4
    >>> novelty(np.array([[0, 1], [0, 2]]), pop, floor=0.125)
    1.75
    """
    popularity = np.asarray(item_popularity, dtype=np.float64)
    if popularity.ndim != 1:
        raise ValueError("item_popularity must be 1-D")
    if floor <= 0:
        raise ValueError(f"floor must be positive, got {floor}")
    recs = _check_recs(recs, popularity.size)
    p = np.maximum(popularity[recs[recs >= 0]], floor)
    return _mean(-np.log2(p))


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


def by_group(values: np.ndarray, groups: np.ndarray) -> dict[object, float]:
    """Mean of a per-user metric within each group label (int, str, ...), keys sorted.

    >>> by_group(np.array([1.0, 0.0, 0.5, 1.0]), np.array(["new", "old", "old", "new"]))
    {'new': 1.0, 'old': 0.25}
    """
    values = np.asarray(values, dtype=np.float64)
    groups = np.asarray(groups)
    if values.ndim != 1 or groups.shape != values.shape:
        raise ValueError(
            f"values and groups must be 1-D of equal length, got {values.shape}, {groups.shape}"
        )
    labels, inverse = np.unique(groups, return_inverse=True)
    inverse = inverse.ravel()
    sums = np.bincount(inverse, weights=values, minlength=labels.size)
    counts = np.bincount(inverse, minlength=labels.size)
    return dict(zip(labels.tolist(), (sums / counts).tolist(), strict=True))


PER_USER = {
    "map": average_precision,
    "hr": hit_rate,
    "precision": precision,
    "recall": recall,
    "ndcg": ndcg,
    "recall_1": recall_1,
    "recall_30": recall_30,
}


def per_user(recs: np.ndarray, truth: sp.csr_matrix, k: int) -> dict[str, np.ndarray]:
    """Every accuracy metric per user (rows of ``recs``), keyed ``"<name>@<k>"``.

    >>> truth = sp.csr_matrix([[0, 0, 1, 0], [1, 1, 0, 0]])
    >>> res = per_user(np.array([[1, 2], [0, 3]]), truth, k=2)
    >>> # user 0: item 2 hit at rank 2 -> AP (1/2)/1; user 1: item 0 at rank 1 -> AP (1/1)/2
    >>> res["hr@2"].tolist(), res["map@2"].tolist()
    ([1.0, 1.0], [0.5, 0.5])
    >>> per_user(np.array([[1, 2]]), sp.csr_matrix([[0, 1, 1]]), k=2)["ndcg@2"].tolist()
    [1.0]
    """
    k = _check_k(k)
    truth = _canonical_truth(truth)
    recs = _check_recs(recs, truth.shape[1])[:, :k]
    hits = hit_matrix(recs, truth)
    n_relevant = np.diff(truth.indptr)
    return {f"{name}@{k}": fn(hits, n_relevant, k) for name, fn in PER_USER.items()}


def by_item_group(recs: np.ndarray, truth: sp.csr_matrix, groups: np.ndarray) -> dict:
    """Per article group: ``recall`` (share of the group's relevant user-item pairs that were
    recommended to that user), ``relevant`` (how many pairs) and ``share`` (share of all
    recommendations that fall in the group). ``groups[i]`` is item i's label.

    >>> truth = sp.csr_matrix([[1, 1, 0], [0, 1, 0]])
    >>> recs = np.array([[0, 2], [2, -1]])
    >>> # group a = items {0, 1}: 3 relevant pairs, 1 recommended (user 0, item 0)
    >>> # group b = item 2: no relevant pair; 2 of the 3 recommendations are item 2
    >>> out = by_item_group(recs, truth, np.array(["a", "a", "b"]))
    >>> {g: {m: round(v, 4) for m, v in d.items()} for g, d in out.items()}
    ... # doctest: +NORMALIZE_WHITESPACE
    {'a': {'recall': 0.3333, 'relevant': 3, 'share': 0.3333},
     'b': {'recall': nan, 'relevant': 0, 'share': 0.6667}}
    """
    truth = _canonical_truth(truth)
    recs = _check_recs(recs, truth.shape[1])
    groups = np.asarray(groups)
    labels, inverse = np.unique(groups, return_inverse=True)
    inverse = inverse.ravel()
    hits = hit_matrix(recs, truth)
    valid = recs >= 0
    relevant = np.bincount(inverse[truth.indices], minlength=labels.size)
    hit_counts = np.bincount(inverse[recs[hits]], minlength=labels.size)
    rec_counts = np.bincount(inverse[recs[valid]], minlength=labels.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall_g = np.where(relevant > 0, hit_counts / relevant, np.nan)
    share = rec_counts / max(int(valid.sum()), 1)
    return {
        label: {"recall": float(r), "relevant": int(n), "share": float(sh)}
        for label, r, n, sh in zip(labels.tolist(), recall_g, relevant, share, strict=True)
    }


def evaluate_recs(
    recs: np.ndarray,
    truth: sp.csr_matrix,
    k: int,
    *,
    item_popularity: np.ndarray | None = None,
    n_items: int | None = None,
) -> dict[str, float]:
    """All metrics at cutoff k, over users with at least one relevant item (Kaggle convention).

    Accuracy metrics are user means; beyond-accuracy metrics use those same users' lists.
    ``recs`` wider than k are cut to k columns; ``n_items`` (for coverage and personalization)
    defaults to ``truth.shape[1]``; ``novelty@k`` is only present with ``item_popularity``.
    Means over zero evaluated users are NaN.

    >>> recs = np.array([[1, 2, 3], [0, 1, -1], [4, 3, 2]])
    >>> truth = sp.csr_matrix(np.array([[0, 1, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]]))
    >>> pop = np.array([0.5, 0.25, 0.125, 0.5, 1.0])
    >>> res = evaluate_recs(recs, truth, k=3, item_popularity=pop)
    >>> # User 2 bought nothing and is dropped everywhere. Hits: user 0 [1,0,1], user 1 [1,0,0].
    >>> # map: ((1/1 + 2/3)/2 + 1/1) / 2 = 11/12; precision: (2/3 + 1/3) / 2 = 0.5
    >>> # ndcg: user 0 (1 + 1/log2(4)) / (1 + 1/log2(3)) = 0.9197, user 1 1.0 -> 0.9599
    >>> # recall_30: 2/3 and 1/3 are both >= 0.3; coverage: items {0,1,2,3} of 5 = 0.8
    >>> # overlap: 2 distinct sets in 2 lists -> 0; personalization: 1 - 1/sqrt(3*2) = 0.5918
    >>> # novelty: entries 1,2,3,0,1 -> (2 + 3 + 1 + 1 + 2) / 5 = 1.8
    >>> {key: round(val, 4) for key, val in res.items()}  # doctest: +NORMALIZE_WHITESPACE
    {'map@3': 0.9167, 'hr@3': 1.0, 'precision@3': 0.5, 'recall@3': 1.0, 'ndcg@3': 0.9599,
     'recall_1@3': 1.0, 'recall_30@3': 1.0, 'coverage@3': 0.8, 'overlap@3': 0.0,
     'personalization@3': 0.5918, 'novelty@3': 1.8}
    """
    k = _check_k(k)
    truth = _canonical_truth(truth)
    n_items = truth.shape[1] if n_items is None else int(n_items)
    recs = _check_recs(recs, n_items)[:, :k]

    n_relevant = np.diff(truth.indptr)
    evaluated = n_relevant > 0
    if not evaluated.all():
        recs, truth, n_relevant = recs[evaluated], truth[evaluated], n_relevant[evaluated]
    result = {key: _mean(values) for key, values in per_user(recs, truth, k).items()}
    result |= {
        f"coverage@{k}": coverage(recs, n_items),
        f"overlap@{k}": overlap(recs),
        f"personalization@{k}": personalization(recs, n_items),
    }
    if item_popularity is not None:
        result[f"novelty@{k}"] = novelty(recs, item_popularity)
    return result
