"""ALS top-k for every customer: our exact, pruned and ANN paths against implicit's recommend.

The customer x article matrix is a Dataset (`--dataset`, Online Retail by default) with every
customer replicated `--replicas` times (copy r of customer u is a new customer with the same
purchases; `--replicas 1` serves the data set as it is, e.g. the H&M week). `als` (default
parameters) is fitted on the original data, and each copy gets its customer's factors: the
serving work is that of the replicated matrix, without fitting ALS on 10x the data (that takes
minutes). The same factors are then served by
- implicit: `AlternatingLeastSquares.recommend(userids, user_items, N=k)` (the reference),
- exact: `als` with search="exact" (batched dense scores, block pre-selection, top_k_dense),
- pruned: `als` with search="pruned" (exact; articles by decreasing norm, each customer stops
  where the norm bound says no further article can enter the top k),
- ann: `als` with search="ann" (faiss HNSW on the inner product),
with every article allowed and with bought articles excluded (implicit's default). With every
article allowed, a faiss IndexIVFFlat on the inner product (nlist = 4 sqrt(articles), k-means
seed 0) is timed too at each `--ivf-nprobe`, as a reference for the IVF design of issue 4 (it is
not a model option: it does not reach the target). Index and scan builds are timed apart.
Everything runs on `--threads` threads; times are process CPU seconds (robust on a shared
machine, equal to wall time for one thread on an idle one), the best of `--repeats` interleaved
runs. Prints a markdown table and writes `--out`.

    .venv/bin/python benchmarks/als_bench.py  # Online Retail x 10 -> results/als_bench.json
    .venv/bin/python benchmarks/als_bench.py --dataset build/hm/dataset --replicas 1 \
        --out benchmarks/results/als_bench_hm.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import faiss
import numpy as np
import polars as pl
from implicit.cpu.als import AlternatingLeastSquares
from threadpoolctl import threadpool_limits

from fashionrec.atomic import write_text
from fashionrec.data.dataset import Dataset
from fashionrec.models.als import ALS
from fashionrec.models.base import params_of

ROOT = Path(__file__).resolve().parents[1]


def replicate(data: Dataset, times: int) -> Dataset:
    """`times` copies of every customer with the same purchases: copy r of customer u is the
    new customer u + r * n_users, with customer_id '<id>#r'."""
    n = data.n_users
    customers = pl.concat(
        [
            data.customers.select(
                (pl.col("user") + r * n).cast(pl.Int32).alias("user"),
                (pl.col("customer_id") + f"#{r}").alias("customer_id"),
            )
            for r in range(times)
        ]
    )
    tx = pl.concat(
        [
            data.transactions.with_columns((pl.col("user") + r * n).cast(pl.Int32))
            for r in range(times)
        ]
    ).sort("t_dat", maintain_order=True)
    return Dataset(tx, data.articles, customers, data.manifest)


def timed(fn: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[float, float, tuple]:
    """(CPU seconds, wall seconds, result) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the truth lists' items (ignoring -1) that `found` holds in the same row."""
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=1) & (truth >= 0)
    return float(hits.sum() / max((truth >= 0).sum(), 1))


def same_modulo_ties(a_items, a_scores, b_items, b_scores, tol: float = 1e-5) -> dict:
    """Rows with identical lists, and rows whose lists differ only where scores tie (within
    `tol` relative: implicit's and numpy's float32 dot products may differ in the last bits)."""
    identical = (a_items == b_items).all(axis=1)
    scale = np.maximum(np.abs(b_scores), 1e-12)
    same_scores = (np.abs(a_scores - b_scores) <= tol * scale).all(axis=1)
    return {
        "identical_rows": float(identical.mean()),
        "equal_modulo_ties_rows": float((identical | same_scores).mean()),
    }


def ivf_index(items: np.ndarray, nlist: int) -> faiss.IndexIVFFlat:
    """faiss IVF over `items` by inner product, k-means seeded (the IVF reference)."""
    d = items.shape[1]
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = 0
    index.train(items)
    index.add(items)
    return index


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, default=ROOT / "build/online-retail/dataset")
    parser.add_argument("--replicas", type=int, default=10)
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ef-search", type=int, default=ALS.ef_search)
    parser.add_argument("--ivf-nprobe", type=int, nargs="*", default=[16, 32, 64])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/als_bench.json")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)

    base = Dataset.load(args.dataset)
    t0 = time.perf_counter()
    model = ALS(threads=args.threads, ef_search=args.ef_search).fit(base)
    fit_s = time.perf_counter() - t0
    data = base if args.replicas == 1 else replicate(base, args.replicas)
    model.user_factors_ = np.tile(model.user_factors_, (args.replicas, 1))
    model.seen_ = seen = data.user_items(binary=True)
    users = np.arange(data.n_users)
    print(
        f"{data.n_users} customers x {data.n_items} articles ({len(model.trained_)} sold), "
        f"{seen.nnz} pairs; als fit on the original {base.n_users} customers: {fit_s:.1f}s"
    )
    builds = {}
    for name, build in (("hnsw", model._ann_index), ("scan", model._norm_scan)):
        t0 = time.process_time()
        build()
        builds[name] = time.process_time() - t0
    nlist = round(4 * np.sqrt(len(model.trained_)))
    t0 = time.process_time()
    ivf = ivf_index(model._trained_factors(), nlist)
    builds["ivf"] = time.process_time() - t0

    reference = AlternatingLeastSquares(factors=model.factors, num_threads=args.threads)
    reference.user_factors, reference.item_factors = model.user_factors_, model.item_factors_
    # implicit ranks every article; ours only those sold in training (the others' factors are
    # meaningless), so when some were not sold implicit gets the same candidate list
    candidates = None if len(model.trained_) == data.n_items else model.trained_
    k, rows = args.k, []
    for exclude_seen in (False, True):
        mode = "exclude bought" if exclude_seen else "all articles"

        def ours(search: str, exclude_seen: bool = exclude_seen) -> tuple[np.ndarray, np.ndarray]:
            model.search = search
            recs = model.recommend(users, k, exclude_seen=exclude_seen)
            return recs.items, recs.scores

        def theirs(exclude_seen: bool = exclude_seen) -> tuple[np.ndarray, np.ndarray]:
            return reference.recommend(
                users, seen, N=k, filter_already_liked_items=exclude_seen, items=candidates
            )

        def faiss_ivf(nprobe: int) -> tuple[np.ndarray, np.ndarray]:
            params = faiss.SearchParametersIVF()
            params.nprobe = nprobe
            scores, pos = ivf.search(model.user_factors_[users], k, params=params)
            return np.where(pos >= 0, model.trained_[np.maximum(pos, 0)], -1), scores

        runs: dict[str, Callable] = {
            "implicit recommend": theirs,
            "exact (ours)": lambda: ours("exact"),
            "pruned (ours, exact)": lambda: ours("pruned"),
            "ann (ours, HNSW)": lambda: ours("ann"),
        }
        if not exclude_seen:
            for nprobe in args.ivf_nprobe:
                runs[f"faiss IVF nprobe={nprobe} (reference)"] = partial(faiss_ivf, nprobe)
        best: dict[str, tuple] = {}
        with threadpool_limits(args.threads, "blas"):
            for _ in range(args.repeats):  # interleaved, so that load changes hit every method
                for name, fn in runs.items():
                    cpu, wall, out = timed(fn)
                    if name not in best or cpu < best[name][0]:
                        best[name] = (cpu, wall, *out)
        ref_s, _, ref_items, ref_scores = best["implicit recommend"]
        ex_items = best["exact (ours)"][2]
        for name, (cpu, wall, items, scores) in best.items():
            row = {
                "mode": mode,
                "method": name,
                "users": len(users),
                "cpu_s": cpu,
                "wall_s": wall,
                "speedup_vs_implicit": ref_s / cpu,
            }
            if name != "implicit recommend":
                row["recall_vs_exact"] = recall(items, ex_items)
                row["recall_vs_implicit"] = recall(items, ref_items)
            if name.startswith(("exact", "pruned")):
                row |= same_modulo_ties(items, scores, ref_items, ref_scores)
            rows.append(row)

    print(
        "\n| mode | method | users | CPU s | wall s | speedup vs implicit | recall@12 vs exact |"
        "\n|---|---|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        rec = f"{r['recall_vs_exact']:.4f}" if "recall_vs_exact" in r else "-"
        print(
            f"| {r['mode']} | {r['method']} | {r['users']} | {r['cpu_s']:.2f} | {r['wall_s']:.2f} "
            f"| {r['speedup_vs_implicit']:.2f}x | {rec} |"
        )
    print()
    for r in rows:
        if "identical_rows" in r:
            print(
                f"{r['mode']}: {r['method']} vs implicit: identical rows "
                f"{r['identical_rows']:.4f}, equal modulo ties {r['equal_modulo_ties_rows']:.4f}"
            )
    print(
        f"builds (once per fitted model, CPU s): HNSW {builds['hnsw']:.2f}, "
        f"norm scan {builds['scan']:.3f}, IVF (nlist {nlist}) {builds['ivf']:.2f}"
    )
    result = {
        "dataset": str(args.dataset),
        "replicas": args.replicas,
        "users": data.n_users,
        "items": data.n_items,
        "items_sold": len(model.trained_),
        "pairs": int(seen.nnz),
        "k": k,
        "threads": args.threads,
        "repeats": args.repeats,
        "timing": "process CPU seconds, best of the repeats",
        "params": params_of(model) | {"search": "all"},
        "ivf_nlist": nlist,
        "fit_s": fit_s,
        "build_cpu_s": builds,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rows": rows,
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
