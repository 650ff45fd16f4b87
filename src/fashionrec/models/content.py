"""Content-based "similar items": TF-IDF over each article's text, cosine similarity, the top-N
neighbours of every article of the catalogue (sold or not) as a sparse item x item matrix.

Neighbours are exact (sparse TF-IDF products in row blocks) when that is cheap; on a large
catalogue (105k H&M articles share frequent words such as "black" or "ladieswear", so the exact
product touches ~10^10 pairs) they come from an ANN search instead: LSA vectors (truncated SVD of
the TF-IDF matrix, normalised) in a faiss inverted-file index give `candidates` per article, which
are then re-scored with the exact TF-IDF cosine (90% of the exact top 50 on H&M, where LSA alone
gets ~55%). Customers are scored like itemcf (`neighbours.NeighbourModel`), with a square-root
popularity prior on the explore part by default (`popularity=0.5`): text similarity alone does not
know what sells now. An article nobody has bought yet keeps a prior of 1, so it still reaches
customers who bought similar ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from fashionrec.data.dataset import Dataset
from fashionrec.errors import ConfigError
from fashionrec.models import neighbours as nb
from fashionrec.models.base import top_n_per_row

log = logging.getLogger(__name__)

TEXT_COLUMNS = (
    "prod_name",
    "product_type_name",
    "product_group_name",
    "graphical_appearance_name",
    "colour_group_name",
    "perceived_colour_value_name",
    "perceived_colour_master_name",
    "department_name",
    "index_name",
    "section_name",
    "garment_group_name",
    "detail_desc",
)
METHODS = ("auto", "exact", "ann")
EXACT_BUDGET = 1e9  # multiply-adds of the exact all-pairs product above which "auto" uses ANN
FLAT_MAX = 20_000  # up to this many articles the ANN index is exact (flat), beyond it IVF
SEARCH_BATCH = 10_000  # articles searched and re-scored at once (bounds memory)
RESCORE_QUERIES = 256  # articles whose candidates are re-scored at once (dense queries)


@dataclass
class Content(nb.NeighbourModel):
    """Similar items by TF-IDF cosine of article texts; customers get neighbours of their items."""

    name: ClassVar[str] = "content"
    fallback: ClassVar[str] = (
        "decay (time-decayed popularity) for cold or unknown customers; never-sold articles "
        "reach customers through text similarity"
    )
    popularity: float = 0.5  # explore scores x (1 + decayed sales) ** popularity
    method: str = "auto"  # "exact" (sparse products), "ann" (LSA + faiss, re-scored), auto: cost
    dim: int = 128  # LSA dimensions of the ANN search
    candidates: int = 300  # ANN candidates per article, re-scored with the exact cosine
    min_df: int = 1  # words in fewer articles are dropped
    threads: int = 1  # BLAS / faiss threads
    seed: int = 0  # truncated SVD and faiss k-means

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(
                f"content: method must be one of {', '.join(METHODS)}, not {self.method!r}"
            )

    def fit(self, data: Dataset) -> Self:
        tfidf = tfidf_matrix(data.articles, self.min_df)
        method = self.method
        if method == "auto":
            method = "exact" if exact_cost(tfidf) <= EXACT_BUDGET else "ann"
        log.info("content: %s neighbours of %d articles x %d terms", method, *tfidf.shape)
        with threadpool_limits(self.threads):
            if method == "exact":
                self.neighbours_ = nb.blocked_top_n(tfidf, tfidf.T, self.neighbours, desc="content")
            else:
                self.neighbours_ = ann_neighbours(
                    tfidf, self.neighbours, self.candidates, self.dim, self.seed, self.threads
                )
        self.fit_customers(data)
        return self


def article_text(articles: pl.DataFrame) -> list[str]:
    """Each article's text: the TEXT_COLUMNS it has, joined by spaces (nulls left out)."""
    columns = [c for c in TEXT_COLUMNS if c in articles.columns]
    if not columns:
        return [""] * articles.height
    parts = [pl.col(c).cast(pl.String).fill_null("") for c in columns]
    return articles.select(pl.concat_str(parts, separator=" ")).to_series().to_list()


def tfidf_matrix(articles: pl.DataFrame, min_df: int = 1) -> sp.csr_matrix:
    """(n_articles, n_terms) L2-normalised float32 TF-IDF; zero rows for articles without text."""
    vectorizer = TfidfVectorizer(
        sublinear_tf=True, stop_words="english", min_df=min_df, dtype=np.float32
    )
    try:
        return sp.csr_matrix(vectorizer.fit_transform(article_text(articles)))
    except ValueError:  # no article has a single word (empty vocabulary)
        log.warning("content: the articles have no text; no article has neighbours")
        return sp.csr_matrix((articles.height, 1), dtype=np.float32)


def exact_cost(tfidf: sp.csr_matrix) -> float:
    """Multiply-adds of the exact all-pairs product X @ X.T: the sum of squared term counts."""
    df = np.bincount(tfidf.indices, minlength=tfidf.shape[1]).astype(np.float64)
    return float((df**2).sum())


def ann_neighbours(
    tfidf: sp.csr_matrix, n: int, candidates: int, dim: int, seed: int, threads: int
) -> sp.csr_matrix:
    """Top-`n` exact TF-IDF cosine neighbours among the `candidates` nearest LSA vectors."""
    import faiss  # only this path needs it

    n_items, n_terms = tfidf.shape
    dim = max(1, min(dim, n_terms - 1, n_items - 1))
    vectors = TruncatedSVD(dim, random_state=seed).fit_transform(tfidf).astype(np.float32)
    vectors = np.ascontiguousarray(vectors)
    faiss.normalize_L2(vectors)
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads)
    try:
        index = _index(vectors, seed)
        k = min(candidates + 1, n_items)
        parts = [
            _exact_top(tfidf, start, index.search(vectors[start : start + SEARCH_BATCH], k)[1], n)
            for start in tqdm(range(0, n_items, SEARCH_BATCH), desc="content ann", unit="batch")
        ]
    finally:
        faiss.omp_set_num_threads(previous)
    return sp.csr_matrix(sp.vstack(parts, format="csr"), dtype=np.float32)


def _exact_top(tfidf: sp.csr_matrix, start: int, cand: np.ndarray, n: int) -> sp.csr_matrix:
    """Rows start.. of the neighbour matrix: the `n` best candidates by exact TF-IDF cosine."""
    cand = np.where(cand == np.arange(start, start + len(cand))[:, None], -1, cand)
    sims = _rescore(tfidf, start, cand)
    valid = cand >= 0
    mat = sp.csr_matrix(
        (sims[valid], (np.nonzero(valid)[0], cand[valid])), shape=(len(cand), tfidf.shape[0])
    )
    return top_n_per_row(mat, n)


def _index(vectors: np.ndarray, seed: int) -> Any:
    """Exact inner-product index for a small catalogue, an inverted file (IVF) for a large one."""
    import faiss

    n, dim = vectors.shape
    if n <= FLAT_MAX:
        index = faiss.IndexFlatIP(dim)
    else:
        lists = max(1, min(int(4 * np.sqrt(n)), n // 39))  # faiss wants >= 39 points per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.train(vectors)
        index.nprobe = 32  # ~99% of the flat index's top-200 (measured on the H&M catalogue)
    index.add(vectors)
    return index


def _rescore(tfidf: sp.csr_matrix, start: int, cand: np.ndarray) -> np.ndarray:
    """Exact TF-IDF cosine of articles start.. (rows) with their candidates (-1: none, 0).

    A few hundred queries at a time are made dense (small enough to stay in cache), so each
    candidate costs one gather per non-zero of its own row: 5x faster than multiplying two
    gathered sparse matrices row by row, and less memory.
    """
    sims = np.zeros(cand.shape, dtype=np.float32)
    for first in range(0, cand.shape[0], RESCORE_QUERIES):
        block = cand[first : first + RESCORE_QUERIES]
        queries = tfidf[start + first : start + first + len(block)].toarray()
        pair_row, pair_col = np.nonzero(block >= 0)
        rows = tfidf[block[pair_row, pair_col]]
        lengths = np.diff(rows.indptr)
        products = rows.data * queries[np.repeat(pair_row, lengths), rows.indices]
        # a trailing 0 keeps every start index in range when the last rows are empty
        dots = np.add.reduceat(np.append(products, np.float32(0)), rows.indptr[:-1])
        sims[first + pair_row, pair_col] = np.where(lengths > 0, dots, 0)
    return sims
