"""Benchmark `base.top_n_per_row` (the sparse top-n per row every model uses) against the same
function without its sampled bound (`_above_bound`: a long row's bound is the n-th largest of its
first 8n entries, and only the entries at or above it are sorted), on score matrices shaped like
the ranker's co-purchase scores and the item-item neighbour pruning. Checks that both give the
same matrix, prints a markdown table (best of 3) and writes ``benchmarks/results/topn_bench.json``.
Each matrix is timed with its columns sorted (as the ranker's co-purchase scores are, sorted once
per batch) and unsorted (a fresh sparse product: `top_n_per_row` then sorts the columns first,
which the bound does not change).

    .venv/bin/python benchmarks/topn_bench.py [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from fashionrec.atomic import write_text
from fashionrec.models import base

RESULTS = Path(__file__).resolve().parent / "results" / "topn_bench.json"
N_ITEMS = 105_542  # articles in the H&M catalogue

# (name, rows, columns, mean entries per row, n, long-tailed row lengths)
CASES = (
    ("co-purchase scores, Online Retail batch", 4_000, 4_000, 2_000, 40, False),
    ("co-purchase scores, H&M batch of 5,000", 5_000, N_ITEMS, 3_000, 40, False),
    ("item-item neighbours, 20,000 articles", 20_000, N_ITEMS, 500, 100, True),
)


def make(
    rows: int, cols: int, per_row: int, skewed: bool, rng: np.random.Generator
) -> sp.csr_matrix:
    """Random positive scores with ties (rounded to 1/64), unsorted columns like a sparse product;
    row lengths constant or long-tailed (a popular article co-occurs with thousands of others)."""
    if skewed:
        lengths = np.minimum(rng.pareto(1.2, rows) * per_row / 5 + 1, cols).astype(np.int64)
    else:
        lengths = np.full(rows, per_row, dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    indices = np.concatenate([rng.choice(cols, n, replace=False) for n in lengths]).astype(np.int32)
    data = (np.ceil(rng.random(indptr[-1]) * 64) / 64).astype(np.float32)
    mat = sp.csr_matrix((data, indices, indptr), shape=(rows, cols))
    mat.has_sorted_indices = False
    return mat


def best_of(fn: Callable[[], sp.csr_matrix], repeats: int = 3) -> tuple[float, sp.csr_matrix]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def without_bound(mat: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """`top_n_per_row` sorting every entry (the implementation before the sampled bound)."""
    saved = base._above_bound
    base._above_bound = lambda rows, cols, vals, n_rows, n: (rows, cols, vals)
    try:
        return base.top_n_per_row(mat, n)
    finally:
        base._above_bound = saved


def run(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    rows = []
    for name, n_rows, n_cols, per_row, n, skewed in CASES:
        unsorted = make(n_rows, n_cols, per_row, skewed, rng)
        ordered = unsorted.copy()
        ordered.sort_indices()
        for columns, mat in (("sorted", ordered), ("unsorted", unsorted)):
            plain_s, plain = best_of(lambda m=mat, n=n: without_bound(m, n))
            bound_s, bounded = best_of(lambda m=mat, n=n: base.top_n_per_row(m, n))
            same = (
                np.array_equal(plain.indptr, bounded.indptr)
                and np.array_equal(plain.indices, bounded.indices)
                and np.array_equal(plain.data, bounded.data)
            )
            rows.append(
                {
                    "case": name,
                    "columns": columns,
                    "rows": n_rows,
                    "entries": int(mat.nnz),
                    "n": n,
                    "full_sort_s": plain_s,
                    "sampled_bound_s": bound_s,
                    "speedup": plain_s / bound_s,
                    "identical": bool(same),
                }
            )
    return {
        "seed": seed,
        "machine": {"platform": platform.platform(), "processor": platform.processor()},
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    result = run(parser.parse_args().seed)
    print("| case | columns | entries | n | full sort s | sampled bound s | speedup | identical |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for r in result["rows"]:
        print(
            f"| {r['case']} | {r['columns']} | {r['entries']:,} | {r['n']} | "
            f"{r['full_sort_s']:.3f} | {r['sampled_bound_s']:.3f} | {r['speedup']:.1f}x | "
            f"{r['identical']} |"
        )
    write_text(RESULTS, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
