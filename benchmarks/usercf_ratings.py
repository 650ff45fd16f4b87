"""usercf on explicit ratings: RMSE and MAE of user-based kNN with mean-centring on MovieLens-100k.

The ratings come from ../shared/data/ml100k/transactions_train.csv.gz (its `rating` column; the
ingested Dataset keeps no ratings). `--folds` random folds of the (customer, movie) pairs, drawn
by this script with `--seed` (not GroupLens' u1..u5 files): each fold's pairs are the test set,
the rest train. Rows:
- global mean, customer mean, customer + movie bias (Koren's baseline, 10 ALS sweeps, lambda 10):
  baselines
- usercf: `RatingUserCF` (vectorised, row blocks of the similarity) for each `--k` (and
  `--shrinkage`)
- reference: the same predictor (first k and shrinkage) written plainly, one pair at a time
  over a dense similarity matrix (fine for 943 customers): its predictions must equal ours
Times are process CPU seconds (robust on a shared machine). Prints a markdown table (mean ± sd
over folds) and writes benchmarks/results/usercf_ratings.json.

    .venv/bin/python benchmarks/usercf_ratings.py [--folds 5] [--k 20 40 80]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from fashionrec.atomic import write_text
from fashionrec.models.usercf import RatingUserCF

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "ml100k" / "transactions_train.csv.gz"


def load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, rating) with dense indices from the ml100k transactions file."""
    tx = pl.read_csv(path, schema_overrides={"customer_id": pl.String, "article_id": pl.String})
    users = np.unique(tx["customer_id"].to_numpy(), return_inverse=True)[1]
    items = np.unique(tx["article_id"].to_numpy(), return_inverse=True)[1]
    return users.astype(np.int64), items.astype(np.int64), tx["rating"].to_numpy().astype(float)


def biases(u: np.ndarray, i: np.ndarray, r: np.ndarray, shape: tuple[int, int], lam: float = 10.0):
    """Global mean and regularised customer and movie biases (alternating least squares)."""
    mu = r.mean()
    bu, bi = np.zeros(shape[0]), np.zeros(shape[1])
    for _ in range(10):
        bi = np.bincount(i, r - mu - bu[u], shape[1]) / (lam + np.bincount(i, minlength=shape[1]))
        bu = np.bincount(u, r - mu - bi[i], shape[0]) / (lam + np.bincount(u, minlength=shape[0]))
    return mu, bu, bi


def reference(train: sp.csr_matrix, users: np.ndarray, items: np.ndarray, k: int, shrink: float):
    """The same predictor, one pair at a time over a dense similarity matrix."""
    dense = train.toarray()
    rated = dense != 0
    counts = rated.sum(axis=1)
    mean_all = dense[rated].mean()
    means = np.where(counts > 0, dense.sum(axis=1) / np.maximum(counts, 1), mean_all)
    centred = np.where(rated, dense - means[:, None], 0.0)
    norms = np.linalg.norm(centred, axis=1)
    unit = centred / np.where(norms > 0, norms, 1.0)[:, None]
    sims = unit @ unit.T
    if shrink > 0:
        common = rated.astype(float) @ rated.T.astype(float)
        sims *= common / (common + shrink)
    lo, hi = dense[rated].min(), dense[rated].max()
    out = np.empty(len(users))
    for j, (u, i) in enumerate(zip(users, items, strict=True)):
        raters = np.flatnonzero(rated[:, i])
        raters = raters[raters != u]
        s = sims[u, raters]
        pick = np.argsort(-s, kind="stable")[:k]
        pick = pick[s[pick] > 1e-9]  # as usercf: a smaller cosine is rounding noise
        if len(pick) == 0:
            out[j] = means[u]
            continue
        v = raters[pick]
        out[j] = means[u] + (s[pick] * centred[v, i]).sum() / s[pick].sum()
    return np.clip(out, lo, hi)


def errors(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {
        "rmse": float(np.sqrt(np.mean((pred - truth) ** 2))),
        "mae": float(np.mean(np.abs(pred - truth))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--k", type=int, nargs="+", default=[20, 40, 80])
    parser.add_argument("--shrinkage", type=float, nargs="+", default=[0.0, 25.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/usercf_ratings.json")
    args = parser.parse_args()

    u, i, r = load(args.source)
    shape = (int(u.max()) + 1, int(i.max()) + 1)
    fold = np.random.default_rng(args.seed).permutation(len(r)) % args.folds
    runs: dict[str, list[dict[str, float]]] = {}
    max_diff, n_diff = 0.0, 0
    for f in range(args.folds):
        test, train = fold == f, fold != f
        ratings = sp.csr_matrix((r[train], (u[train], i[train])), shape=shape)
        tu, ti, tr = u[test], i[test], r[test]
        mu, bu, bi = biases(u[train], i[train], r[train], shape)
        counts = np.diff(ratings.indptr)
        user_mean = np.asarray(ratings.sum(axis=1)).ravel() / np.maximum(counts, 1)
        user_mean = np.where(counts > 0, user_mean, mu)
        preds = {
            "global mean": np.full(len(tr), mu),
            "customer mean": user_mean[tu],
            "customer + movie bias": np.clip(mu + bu[tu] + bi[ti], 1, 5),
        }
        times: dict[str, float] = {}
        for k in args.k:
            for shrink in args.shrinkage:
                name = f"usercf k={k} shrinkage={shrink:g}"
                t0 = time.process_time()
                preds[name] = RatingUserCF(k=k, shrinkage=shrink).fit(ratings).predict(tu, ti)
                times[name] = time.process_time() - t0
        k0, s0 = args.k[0], args.shrinkage[0]
        t0 = time.process_time()
        ref = reference(ratings, tu, ti, k0, s0)
        times[f"reference k={k0} shrinkage={s0:g}"] = time.process_time() - t0
        preds[f"reference k={k0} shrinkage={s0:g}"] = ref
        diff = np.abs(ref - preds[f"usercf k={k0} shrinkage={s0:g}"])
        max_diff, n_diff = max(max_diff, float(diff.max())), n_diff + int((diff > 1e-6).sum())
        for name, pred in preds.items():
            runs.setdefault(name, []).append(errors(pred, tr) | {"seconds": times.get(name, 0.0)})
        print(f"fold {f + 1}/{args.folds} done", flush=True)

    rows = []
    for name, folds in runs.items():
        row = {"method": name}
        for key in ("rmse", "mae", "seconds"):
            values = np.array([x[key] for x in folds])
            row[key], row[f"{key}_sd"] = (
                float(values.mean()),
                float(values.std(ddof=1) if len(values) > 1 else 0.0),
            )
        rows.append(row)
    print(f"\nMovieLens-100k, {len(r):,} ratings, {args.folds} random folds (mean ± sd)\n")
    print("| method | RMSE | MAE | CPU s per fold |\n|---|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['method']} | {row['rmse']:.4f} ± {row['rmse_sd']:.4f} | "
            f"{row['mae']:.4f} ± {row['mae_sd']:.4f} | {row['seconds']:.2f} |"
        )
    print(
        f"\nusercf vs reference: {n_diff} of {len(r):,} test pairs differ by more than 1e-6 (an "
        f"exact tie at the k-th neighbour, broken by rounding); max difference {max_diff:.2e}"
    )
    ours = f"usercf k={args.k[0]} shrinkage={args.shrinkage[0]:g}"
    ref_name = f"reference k={args.k[0]} shrinkage={args.shrinkage[0]:g}"
    ref_s = float(np.mean([x["seconds"] for x in runs[ref_name]]))
    ours_s = float(np.mean([x["seconds"] for x in runs[ours]]))
    speedup = ref_s / ours_s if ours_s > 0 else None  # None: too fast to measure
    shown = "unmeasured (0 s)" if speedup is None else f"{speedup:.1f}x"
    print(f"speed-up of usercf over the per-pair reference: {shown}")
    result = {
        "source": str(args.source),
        "ratings": len(r),
        "folds": args.folds,
        "seed": args.seed,
        "split": "random folds of the (customer, movie) pairs",
        "max_abs_diff_vs_reference": max_diff,
        "pairs_differing_vs_reference": n_diff,
        "timing": "process CPU seconds per fold (fit + predict)",
        "speedup_vs_reference": speedup,
        "rows": rows,
    }
    write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
