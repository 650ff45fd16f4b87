"""Matrix factorisation: implicit's ALS and BPR on the customer x article matrix.

Both learn a vector per customer and per article; a customer's score for an article is the inner
product of the two. Recommending is a maximum-inner-product search over the articles sold in the
training data: exact by batched dense scores (`search="exact"`), exact with the articles that
cannot reach a customer's top k skipped by a norm bound (`search="pruned"`, 5-6x faster than
implicit's recommend on the H&M week), or approximate through a faiss HNSW index
(`search="ann"`, the "AALS" baseline of the H&M thesis: ALS + an ANN index).
Customers without training purchases (and unknown ones, -1) get time-decayed popularity.
ALS also serves purchases made after the fit (`recommend_with`): the customer's vector is solved
again from their purchases plus the new ones against the fixed article vectors ("fold-in", Hu,
Koren & Volinsky 2008, eq. 4), so a posted purchase moves the list without a refit.
`rebuy` says whether a customer's own bought articles may come back (None: yes when at least 1%
of the training purchases repeat a (customer, article) pair, as in retail; no for rating data
such as MovieLens, where nobody rates a film twice).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, NamedTuple, Self, get_args

import faiss
import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from implicit.cpu.bpr import BayesianPersonalizedRanking
from threadpoolctl import threadpool_limits

from fashionrec.data.dataset import Dataset
from fashionrec.errors import ConfigError
from fashionrec.metrics import hit_matrix
from fashionrec.models.base import (
    Recs,
    batched_with,
    built,
    first_k,
    popularity_fallback,
    rank_list,
    rows_of,
    top_k_dense,
)

log = logging.getLogger(__name__)

Search = Literal["exact", "pruned", "ann"]
SEARCHES: tuple[str, ...] = get_args(Search)
SCORE_CELLS = 1 << 21  # dense scores per exact chunk (8 MB of float32): measured fastest
BLOCK = 16  # columns per block of the exact pre-selection (measured: 12-16 are fastest)
PRUNE_FIRST = 1536  # articles every customer scores in the pruned search (measured: 1024-2048)
PRUNE_STEP = 256  # articles per later block of the pruned search (measured: 128-512)
PRUNE_SLACK = 1 + 1e-4  # widens the norm bound past float32 rounding of the dot products
ANN_DEPTH_SHARE = 1 / 128  # deeper ANN queries are cheaper done exactly (see ann_top_k)
HNSW_M = 32  # graph degree: M=32 beat 8, 16 and 48 on recall per second (Online Retail)
EF_CONSTRUCTION = 80
FEW_QUERIES = 16  # _top: up to this many queries run without a BLAS thread limit
MIN_REBUY_SHARE = 0.01  # below this share of repeat purchases, bought articles are not offered


@contextmanager
def _omp_threads(n: int) -> Iterator[None]:
    """faiss's OpenMP pool at `n` threads for the block (it is process-wide: restore it)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, n))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def repeat_share(data: Dataset) -> float:
    """Share of purchases that repeat an earlier (customer, article) pair: 0 for rating data."""
    n = data.transactions.height
    pairs = data.transactions.select("user", "item").unique().height if n else 0
    return 1.0 - pairs / n if n else 0.0


def subset_columns(mat: sp.csr_matrix, columns: np.ndarray) -> sp.csr_matrix:
    """`mat[:, columns]` for sorted `columns` that hold every stored column (a renumbering)."""
    pos = np.searchsorted(columns, mat.indices).astype(np.int32)
    return sp.csr_matrix((mat.data, pos, mat.indptr), shape=(mat.shape[0], len(columns)))


def gemm_layout(items: np.ndarray) -> np.ndarray:
    """(factors, n rounded up to BLOCK) float32: `items` transposed and contiguous, the fastest
    GEMM layout here, zero-padded to whole blocks for exact_top_k's pre-selection."""
    padded = np.zeros((items.shape[1], -(-len(items) // BLOCK) * BLOCK), np.float32)
    padded[:, : len(items)] = items.T
    return padded


def exact_top_k(
    queries: np.ndarray,
    items: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    layout: np.ndarray | None = None,
) -> Recs:
    """Top k rows of `items` by inner product with each query (best first); `exclude`
    (queries x items, sparse) marks entries never to return. `layout`: `gemm_layout(items)`,
    when the caller keeps it (building it is most of the time of a single query). Queries go in
    chunks whose dense score block is SCORE_CELLS large (measured fastest: big enough for BLAS,
    small enough for the cache)."""
    n = len(items)
    padded = gemm_layout(items) if layout is None else layout
    blocks = padded.shape[1] // BLOCK if n > 4 * k * BLOCK else 0  # short: no pre-selection
    rows = max(16, SCORE_CELLS // max(n, 1))
    parts = []
    for s in range(0, len(queries), rows):
        scores = queries[s : s + rows] @ padded
        scores[:, n:] = -np.inf
        if exclude is not None and exclude[s : s + rows].nnz:
            coo = exclude[s : s + rows].tocoo()
            scores[coo.row, coo.col] = -np.inf
        parts.append(_block_top_k(scores, k, blocks) if blocks else top_k_dense(scores, k))
    if not parts:
        return Recs.empty(0, k)
    return Recs.concat(parts)


def _block_top_k(scores: np.ndarray, k: int, blocks: int) -> Recs:
    """top_k_dense(scores, k) through a pre-selection, hand-written because argpartition over
    every column is most of the time of exact search. Column c is in block c % blocks (so the
    block maxima are an elementwise max of contiguous slices); the k best entries of a row lie in
    the k blocks with the best maxima, so only those k * BLOCK candidates are ranked. The same
    scores as top_k_dense on all columns, and exact search as fast as implicit's C++ top-k."""
    n, width = scores.shape
    maxima = scores.reshape(n, BLOCK, blocks).max(axis=1)
    best = np.argpartition(maxima, blocks - k, axis=1)[:, blocks - k :]
    cols = (best[:, :, None] + blocks * np.arange(BLOCK)).reshape(n, -1)
    top = top_k_dense(scores.ravel()[cols + width * np.arange(n)[:, None]], k)
    items = np.where(top.items >= 0, np.take_along_axis(cols, np.maximum(top.items, 0), 1), -1)
    return Recs(items.astype(np.int32), top.scores)


class NormScan(NamedTuple):
    """Items in decreasing norm order, in blocks, for pruned_top_k (built once per model)."""

    items: np.ndarray  # the items as given
    order: np.ndarray  # scan position -> item
    rank: np.ndarray  # item -> scan position
    padded: np.ndarray  # (factors, width): the items in scan order, zero padded to whole blocks
    starts: np.ndarray  # the blocks: 0, PRUNE_FIRST, then every PRUNE_STEP
    bounds: np.ndarray  # the largest norm in each block (x PRUNE_SLACK)


def norm_scan(items: np.ndarray) -> NormScan:
    """The scan order of `items` for pruned_top_k."""
    n = len(items)
    norms = np.linalg.norm(items, axis=1)
    order = np.argsort(-norms, kind="stable")
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    starts = np.r_[0, np.arange(PRUNE_FIRST, n, PRUNE_STEP)]
    padded = np.zeros((items.shape[1], max(starts[-1] + PRUNE_STEP, PRUNE_FIRST)), np.float32)
    padded[:, :n] = items[order].T
    bounds = np.r_[norms[order], 0.0][np.minimum(starts, n)] * PRUNE_SLACK
    return NormScan(items, order, rank, padded, starts, bounds)


def pruned_top_k(
    queries: np.ndarray, scan: NormScan, k: int, exclude: sp.csr_matrix | None = None
) -> Recs:
    """exact_top_k's result (the same scores; tied items may differ), each query scored against
    only the items that can still enter its top k (length-based pruning, as in LEMP: Teflioudi,
    Gemulla & Mykytiuk, SIGMOD 2015).

    Items are scanned by decreasing norm, a first block of PRUNE_FIRST and then blocks of
    PRUNE_STEP. No score in a block exceeds |query| x the block's largest norm (Cauchy-Schwarz),
    so a query leaves the scan at the first block where that bound is below a lower bound of
    its k-th best score. ALS shrinks rarely bought articles towards 0, so the norms are skewed:
    on the H&M week a customer scores about 14% of the 18k articles. Queries go in chunks of
    SCORE_CELLS scores of the first block; short catalogues and deep lists are scored exactly.
    """
    if k * BLOCK > PRUNE_FIRST or len(scan.items) <= PRUNE_FIRST + PRUNE_STEP:
        return exact_top_k(queries, scan.items, k, exclude)
    norms = np.linalg.norm(queries, axis=1)
    rows = SCORE_CELLS // PRUNE_FIRST
    parts = []
    for s in range(0, len(queries), rows):
        excluded = _scan_positions(None if exclude is None else exclude[s : s + rows], scan.rank)
        parts.append(_pruned_chunk(queries[s : s + rows], norms[s : s + rows], scan, k, excluded))
    if not parts:
        return Recs.empty(0, k)
    return Recs.concat(parts)


def _pruned_chunk(
    queries: np.ndarray,
    norms: np.ndarray,
    scan: NormScan,
    k: int,
    excluded: tuple[np.ndarray, np.ndarray],
) -> Recs:
    """pruned_top_k for one chunk of queries. The lower bound of a query's k-th best score is
    the k-th largest of the group maxima of the blocks scanned so far (groups of BLOCK strided
    columns, as in _block_top_k: each maximum is the score of a distinct item). The items of
    the groups whose maximum reaches the bound are the candidates."""
    m, n = len(queries), len(scan.items)
    ex_rows, ex_cols = excluded
    known = np.full((m, k), -np.inf, np.float32)  # the k best group maxima so far
    theta = np.full(m, -np.inf, np.float32)  # their minimum: <= the k-th best score
    found = []
    ends = np.r_[scan.starts[1:], scan.padded.shape[1]]
    for start, end, bound in zip(scan.starts, ends, scan.bounds, strict=True):
        active = np.flatnonzero(norms * bound > theta)
        if not len(active):
            break
        scores = queries[active] @ scan.padded[:, start:end]
        scores[:, n - start :] = -np.inf  # padding (no-op before the last block)
        lo, hi = np.searchsorted(ex_cols, [start, end])
        if hi > lo:
            pos = np.full(m, -1)
            pos[active] = np.arange(len(active))
            r, c = pos[ex_rows[lo:hi]], ex_cols[lo:hi] - start
            scores[r[r >= 0], c[r >= 0]] = -np.inf
        hit = scores.max(axis=1) >= theta[active]  # in the others no group maximum reaches it
        if not hit.any():
            continue
        if not hit.all():
            active, scores = active[hit], scores[hit]
        width, groups = end - start, (end - start) // BLOCK
        maxima = scores.reshape(len(active), BLOCK, groups).max(axis=1)
        best = np.partition(np.hstack([known[active], maxima]), groups, axis=1)[:, groups:]
        known[active] = best
        theta[active] = low = best.min(axis=1)
        r, group = np.nonzero(maxima >= low[:, None])
        flat = (r * width + group)[:, None] + groups * np.arange(BLOCK)  # the groups' members
        vals = scores.ravel()[flat]
        keep = np.flatnonzero(vals >= low[r, None])
        flat, vals = flat.ravel()[keep], vals.ravel()[keep]
        found.append((active[flat // width], start + flat % width, vals))
    r, c, v = (np.concatenate(x) for x in zip(*found, strict=True))
    keep = (v >= theta[r]) & (v > -np.inf)
    return _best_k(r[keep], scan.order[c[keep]], v[keep], m, k)


def _scan_positions(exclude: sp.csr_matrix | None, rank: np.ndarray) -> tuple[np.ndarray, ...]:
    """(row, position in the scan order) of the entries of `exclude`, by position."""
    if exclude is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rows = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
    cols = rank[exclude.indices]
    order = np.argsort(cols, kind="stable")
    return rows[order], cols[order]


def _best_k(rows: np.ndarray, items: np.ndarray, scores: np.ndarray, n: int, k: int) -> Recs:
    """The k best candidates (rows[i], items[i], scores[i]) of each of n rows, best first, ties
    by item index (as top_k_dense); -1 / -inf padding."""
    # the float32 bits as an integer that sorts like the score (-0.0 + 0 is 0.0)
    bits = (scores.astype(np.float32) + np.float32(0)).view(np.uint32).astype(np.int64)
    ascending = np.where(bits >> 31, 0xFFFFFFFF - bits, bits | 1 << 31)
    key = rows.astype(np.int64) << 32 | (0xFFFFFFFF - ascending)
    order = np.lexsort((items, key))  # two keys: twice as fast as (items, -scores, rows)
    rows, items, scores = rows[order], items[order], scores[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)
    keep = rank < k
    out = Recs.empty(n, k)
    out.items[rows[keep], rank[keep]] = items[keep]
    out.scores[rows[keep], rank[keep]] = scores[keep]
    return out


def hnsw_index(items: np.ndarray) -> faiss.Index:
    """An HNSW graph over `items` searched by inner product.

    Why not the MIPS-to-L2 transform (one extra coordinate sqrt(max_norm^2 - |v|^2), Bachrach et
    al. 2014, implicit's `augment_inner_product_matrix`)? It is exact in theory but puts every
    item on a sphere far from all queries, and HNSW navigates that space poorly: on Online Retail
    `als` factors it reached recall@12 0.23 / 0.39 / 0.71 at efSearch 20 / 64 / 256, against
    0.97 / 0.999 / 1.0 for the graph built and searched with the inner product itself (ip-NSW,
    Morozov & Babenko, NeurIPS 2018). The build is single-threaded, so the graph (and every
    result) is the same on each run.
    """
    index = faiss.IndexHNSWFlat(items.shape[1], HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    with _omp_threads(1):
        index.add(np.ascontiguousarray(items, dtype=np.float32))
    return index


def ann_top_k(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None,
    ef_search: int,
    threads: int = 1,
) -> tuple[Recs, np.ndarray]:
    """Approximate top k of `index` for each query, skipping the entries of `exclude`.

    A query asks for k + (its number of excluded items) candidates, so that k remain after the
    filter. Queries are grouped by that depth, rounded up to a power of two, so that each group
    is one batched faiss call with efSearch >= depth. A graph search costs about efSearch
    distance evaluations per hop, so beyond a depth of ANN_DEPTH_SHARE of the items exact search
    is cheaper (measured crossover on Online Retail: depth ~32 of 4,000 articles): such queries
    are not searched. Returns the Recs and a mask of the rows to recompute exactly (not
    searched, or left with fewer than k items by the graph).
    """
    n_items = index.ntotal
    n_ex = np.zeros(len(queries), np.int64) if exclude is None else np.diff(exclude.indptr)
    depth = k + n_ex
    depth = np.where(n_ex > 0, 1 << np.ceil(np.log2(np.maximum(depth, 2))).astype(np.int64), depth)
    depth = np.minimum(depth, n_items)
    searched = (n_ex == 0) | (depth <= max(2 * k, n_items * ANN_DEPTH_SHARE))
    items = np.full((len(queries), k), -1, np.int32)
    scores = np.full((len(queries), k), -np.inf, np.float32)
    with _omp_threads(threads):
        for d in np.unique(depth[searched]):
            rows = np.flatnonzero(searched & (depth == d))
            params = faiss.SearchParametersHNSW()
            params.efSearch = int(max(ef_search, d))
            dist, cand = index.search(
                np.ascontiguousarray(queries[rows], np.float32), int(d), params=params
            )
            keep = cand >= 0
            if exclude is not None:
                keep &= ~hit_matrix(cand, exclude[rows])
            part = first_k(cand, dist, keep, k)
            items[rows], scores[rows] = part.items, part.scores
    want = np.minimum(k, n_items - n_ex)
    return Recs(items, scores), ~searched | ((items >= 0).sum(axis=1) < want)


@dataclass
class _Factors:
    """Serving shared by the factor models: state, cold start, exact, pruned and ANN search,
    similar."""

    fallback: ClassVar[str] = "decay (time-decayed popularity) for cold or unknown customers"

    user_factors_: np.ndarray = field(default=None, init=False, repr=False)
    item_factors_: np.ndarray = field(default=None, init=False, repr=False)
    trained_: np.ndarray = field(default=None, init=False, repr=False)
    seen_: sp.csr_matrix = field(default=None, init=False, repr=False)  # purchases, as weighted
    weighted_: bool = field(default=None, init=False, repr=False)  # None: older, seen_ binary
    fill_items_: np.ndarray = field(default=None, init=False, repr=False)
    fill_scores_: np.ndarray = field(default=None, init=False, repr=False)
    rebuy_: bool = field(default=None, init=False, repr=False)

    # The subclasses declare the hyper-parameters used here: search, ef_search, seed, threads,
    # rebuy and fill_half_life (declared there so that each model's parameters read in one place).

    def _implicit(self) -> Any:
        raise NotImplementedError

    def _weights(self, data: Dataset) -> sp.csr_matrix:
        """The customer x article purchase weights the model is fitted on."""
        raise NotImplementedError

    def _matrix(self) -> sp.csr_matrix:
        """The matrix implicit fits, from `seen_`."""
        raise NotImplementedError

    def _fold_in(self, rows: sp.csr_matrix, fitted: np.ndarray) -> np.ndarray:
        """Customer vectors from purchase rows weighted as `seen_` (`fitted`: their fitted
        vectors, NaN for customers unknown at the fit)."""
        raise NotImplementedError

    def fit(self, data: Dataset) -> Self:
        if self.search not in SEARCHES:
            raise ConfigError(f"{self.name}: search must be one of {SEARCHES}, not {self.search!r}")
        self.seen_, self.weighted_ = self._weights(data), True
        self.trained_ = np.flatnonzero(data.item_popularity() > 0).astype(np.int32)
        self.fill_items_, self.fill_scores_ = popularity_fallback(data, self.fill_half_life)
        share = repeat_share(data)
        self.rebuy_ = bool(share >= MIN_REBUY_SHARE) if self.rebuy is None else bool(self.rebuy)
        log.info("%s: repeat share %.3f, rebuy %s", self.name, share, self.rebuy_)
        # implicit recommends one BLAS thread: its solvers parallelise over users themselves
        with threadpool_limits(1, "blas"):
            model = self._implicit()
            if self.seen_.nnz:
                model.fit(self._matrix(), show_progress=False)
                users, items = model.user_factors, model.item_factors
            else:
                users = np.zeros((data.n_users, 1), np.float32)
                items = np.zeros((data.n_items, 1), np.float32)
        self.user_factors_ = np.ascontiguousarray(users, dtype=np.float32)
        self.item_factors_ = np.ascontiguousarray(items, dtype=np.float32)
        self._cache = {}
        return self

    # ---- recommend ---------------------------------------------------------------------------

    def recommend(self, users: np.ndarray, k: int, *, exclude_seen: bool = False) -> Recs:
        return self.recommend_with(users, None, k, exclude_seen=exclude_seen)

    def _recommend(
        self, users: np.ndarray, k: int, exclude_seen: bool, new: sp.csr_matrix | None = None
    ) -> Recs:
        seen = rows_of(self.seen_, users)
        if new is not None:  # purchases after the fit (recommend_with)
            seen = sp.csr_matrix(seen + new)
        warm = np.diff(seen.indptr) > 0  # unknown users (-1) have empty rows
        items = np.full((len(users), k), -1, np.int32)
        scores = np.full((len(users), k), -np.inf, np.float32)
        if (~warm).any():
            cold = rank_list(self.fill_items_, self.fill_scores_, int((~warm).sum()), k)
            items[~warm], scores[~warm] = cold.items, cold.scores
        if warm.any():
            exclude = seen[warm] if exclude_seen or not self.rebuy_ else None
            queries = self._vectors(users[warm], seen[warm], None if new is None else new[warm])
            part = self._top(queries, k, exclude)
            items[warm], scores[warm] = part.items, part.scores
        return Recs(items, scores)

    def recommend_with(
        self,
        users: np.ndarray,
        extra: list[np.ndarray] | None,
        k: int,
        *,
        exclude_seen: bool = False,
    ) -> Recs:
        """`recommend`, counting `extra[i]` (articles users[i] bought after the fit) as bought on
        the last day: those customers' vectors are folded in again (`user_vectors`), so an
        unknown customer with purchases gets a personal list too."""
        if extra is not None and not self.weighted_:
            log.warning(
                "%s: saved by an older fashionrec; new purchases count after a refit", self.name
            )
            extra = None
        return batched_with(
            users,
            extra,
            self.seen_.shape[1],
            lambda u, new: self._recommend(u, k, exclude_seen, new),
        )

    def user_vectors(self, users: np.ndarray, new: sp.csr_matrix | None = None) -> np.ndarray:
        """(len(users), factors) float32 customer vectors: as fitted (NaN for unknown users, -1),
        or, for a row of `new` (articles bought after the fit, counted as bought on the last day)
        with purchases, folded in from the customer's purchases plus those. An artifact saved
        before `seen_` kept the weights ignores `new`."""
        rows = None if new is None else sp.csr_matrix(rows_of(self.seen_, users) + new)
        return self._vectors(users, rows, new)

    def _vectors(
        self, users: np.ndarray, rows: sp.csr_matrix | None, new: sp.csr_matrix | None
    ) -> np.ndarray:
        """`user_vectors`, given `rows` = the customers' weighted purchases plus `new`."""
        users = np.asarray(users, dtype=np.int64)
        known = (users >= 0) & (users < len(self.user_factors_))
        out = self.user_factors_[np.where(known, users, 0)].copy()
        out[~known] = np.nan
        if new is not None and new.nnz and self.weighted_:
            fresh = np.flatnonzero(np.diff(new.indptr) > 0)
            out[fresh] = self._fold_in(rows[fresh], out[fresh])
        return out

    def _top(self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None) -> Recs:
        """Top k trained articles for the customer vectors `queries` by factor score (exact,
        pruned or ANN)."""
        exclude = None if exclude is None else subset_columns(exclude, self.trained_)
        # a request's few queries: limiting the BLAS threads would cost more (about 2 ms, as
        # threadpoolctl reads the loaded libraries each time) than their products take
        few = len(queries) <= FEW_QUERIES
        with nullcontext() if few else threadpool_limits(self.threads, "blas"):
            if self.search == "exact":
                recs = exact_top_k(queries, self._trained_factors(), k, exclude, self._gemm())
            elif self.search == "pruned":
                recs = pruned_top_k(queries, self._norm_scan(), k, exclude)
            else:
                recs, short = ann_top_k(
                    self._ann_index(), queries, k, exclude, self.ef_search, self.threads
                )
                if short.any():  # too deep for the graph, or it found too few: score exactly
                    redo = exact_top_k(
                        queries[short],
                        self._trained_factors(),
                        k,
                        None if exclude is None else exclude[short],
                        self._gemm(),
                    )
                    recs.items[short], recs.scores[short] = redo.items, redo.scores
        # positions among the trained articles -> article indices
        items = np.where(recs.items >= 0, self.trained_[np.maximum(recs.items, 0)], -1)
        return Recs(items.astype(np.int32), recs.scores)

    def _trained_factors(self) -> np.ndarray:
        """Factors of the articles sold in training: the others' factors mean nothing."""
        return built(self, "trained", lambda: self.item_factors_[self.trained_])

    def _gemm(self) -> np.ndarray:
        """The trained articles' `gemm_layout` for the exact search."""
        return built(self, "gemm", lambda: gemm_layout(self._trained_factors()))

    def _unit_factors(self) -> np.ndarray:
        """The trained articles' factors scaled to length 1 (cosine for `similar`)."""

        def unit() -> np.ndarray:
            vectors = self._trained_factors()
            return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

        return built(self, "unit", unit)

    def _norm_scan(self) -> NormScan:
        """The trained articles in norm order for the pruned search."""
        return built(self, "scan", lambda: norm_scan(self._trained_factors()))

    def _ann_index(self) -> faiss.Index:
        """The HNSW index over the trained articles."""
        return built(self, "index", lambda: hnsw_index(self._trained_factors()))

    # ---- item to item ------------------------------------------------------------------------

    def similar(self, items: np.ndarray, k: int) -> Recs:
        """Articles with the most similar factors (cosine), never the article itself; articles
        without training sales (and -1) get time-decayed popularity instead."""
        items = np.asarray(items, dtype=np.int64)
        n, trained = len(items), self.trained_
        valid = (items >= 0) & (items < self.seen_.shape[1])
        itself = sp.csr_matrix(
            (valid.astype(np.float32), (np.arange(n), np.where(valid, items, 0))),
            shape=(n, self.seen_.shape[1]),
        )
        itself.eliminate_zeros()
        pos = np.minimum(np.searchsorted(trained, items), max(len(trained) - 1, 0))
        known = valid & (trained[pos] == items) if len(trained) else np.zeros(n, bool)
        out_items = np.full((n, k), -1, np.int32)
        out_scores = np.full((n, k), -np.inf, np.float32)
        if known.any():
            unit = self._unit_factors()
            with threadpool_limits(self.threads, "blas"):
                recs = exact_top_k(
                    unit[pos[known]],
                    unit,
                    k,
                    subset_columns(itself[known], trained),
                    built(self, "unit_gemm", lambda: gemm_layout(unit)),
                )
            out_items[known] = np.where(recs.items >= 0, trained[np.maximum(recs.items, 0)], -1)
            out_scores[known] = recs.scores
        if (~known).any():
            pop = rank_list(
                self.fill_items_, self.fill_scores_, int(n - known.sum()), k, itself[~known]
            )
            out_items[~known], out_scores[~known] = pop.items, pop.scores
        return Recs(out_items, out_scores)


@dataclass
class ALS(_Factors):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008; implicit's conjugate-gradient solver,
    Takacs et al. 2011) on confidence = 1 + alpha * purchases weighted 0.5 ** (age / half_life)
    (plain counts when half_life is None); unbought pairs have confidence 1 and preference 0."""

    name: ClassVar[str] = "als"
    factors: int = 128
    regularization: float = 30.0
    alpha: float = 10.0
    half_life: float | None = 30.0
    iterations: int = 15
    search: Search = "exact"
    ef_search: int = 20
    seed: int = 0
    threads: int = 1
    rebuy: bool | None = None
    fill_half_life: float = 7.0

    def _implicit(self) -> Any:
        return AlternatingLeastSquares(
            factors=self.factors,
            regularization=self.regularization,
            alpha=1.0,  # the confidence is already in the matrix (1 + alpha * weight)
            iterations=self.iterations,
            random_state=self.seed,
            num_threads=self.threads,  # users (items) are solved independently: deterministic
        )

    def _weights(self, data: Dataset) -> sp.csr_matrix:
        return data.user_items(half_life=self.half_life)

    def _matrix(self) -> sp.csr_matrix:
        return self._confidence(self.seen_)

    def _confidence(self, weights: sp.csr_matrix) -> sp.csr_matrix:
        """1 + alpha x the purchase weights, on the bought pairs."""
        confidence = weights.copy()
        confidence.data = 1.0 + np.float32(self.alpha) * confidence.data
        return confidence

    def _fold_in(self, rows: sp.csr_matrix, fitted: np.ndarray) -> np.ndarray:
        """The least-squares customer vectors of `rows` given the fitted article vectors, solved
        exactly (implicit's `recalculate_user`, Cholesky; `fitted` is not needed), where the fit
        used conjugate gradient steps: a customer's folded-in vector is close to, not equal to,
        the fitted one."""

        def solver() -> AlternatingLeastSquares:
            with threadpool_limits(1, "blas"):  # implicit warns about a BLAS thread pool
                model = AlternatingLeastSquares(
                    factors=self.item_factors_.shape[1],
                    regularization=self.regularization,
                    alpha=1.0,  # the confidence is in the rows, as in the fit
                    # one thread: a request folds in one customer
                    num_threads=1,
                )
            model.item_factors = self.item_factors_
            return model

        solved = built(self, "solver", solver)
        return solved.recalculate_user(np.arange(rows.shape[0]), self._confidence(rows))


@dataclass
class BPR(_Factors):
    """Bayesian Personalised Ranking (Rendle et al. 2009) by implicit's SGD: for a sampled bought
    article and a sampled other one, push the bought one up. implicit treats every purchase pair
    as a binary positive (weights are ignored), and negatives are drawn in proportion to sales."""

    name: ClassVar[str] = "bpr"
    factors: int = 128
    learning_rate: float = 0.01
    regularization: float = 0.0001
    iterations: int = 100
    search: Search = "exact"
    ef_search: int = 20
    seed: int = 0
    threads: int = 1
    rebuy: bool | None = None
    fill_half_life: float = 7.0

    def _implicit(self) -> Any:
        return BayesianPersonalizedRanking(
            factors=self.factors,
            learning_rate=self.learning_rate,
            regularization=self.regularization,
            iterations=self.iterations,
            random_state=self.seed,
            num_threads=1,  # Hogwild SGD races between threads: one thread is reproducible
        )

    def _weights(self, data: Dataset) -> sp.csr_matrix:
        return data.user_items(binary=True)

    def _matrix(self) -> sp.csr_matrix:
        return self.seen_

    def _fold_in(self, rows: sp.csr_matrix, fitted: np.ndarray) -> np.ndarray:
        """BPR's SGD on the customers' vectors alone, the articles as fitted: `iterations`
        passes, each pairing every bought article with a negative drawn in proportion to sales
        (as implicit's fit draws them; a draw among the bought ones is skipped), from the fitted
        vector (zero for a customer unknown at the fit). implicit's last factor is the article
        bias, with a customer weight fixed at 1. Seeded: a request is reproducible."""
        items = self.item_factors_
        cdf = built(
            self, "sales_cdf", lambda: np.cumsum(self.seen_.sum(axis=0).A1) / self.seen_.nnz
        )
        rng = np.random.default_rng(self.seed)
        out = np.nan_to_num(fitted.astype(np.float64))
        out[:, -1] = 1.0
        for r in range(rows.shape[0]):
            bought = rows.indices[rows.indptr[r] : rows.indptr[r + 1]]
            x = out[r]
            for _ in range(self.iterations):
                other = np.minimum(np.searchsorted(cdf, rng.random(len(bought))), len(cdf) - 1)
                keep = ~np.isin(other, bought)
                # only the rows drawn, in float64 (not a copy of every article's factors)
                pos, neg = items[bought[keep]], items[other[keep]]
                diff = pos.astype(np.float64) - neg.astype(np.float64)
                push = 1.0 / (1.0 + np.exp(diff @ x))  # sigmoid(-(x_i - x_j))
                step = push @ diff - self.regularization * keep.sum() * x
                step[-1] = 0.0
                x += self.learning_rate * step
        return out.astype(np.float32)
