"""Two-stage ranker vs the baselines, the single models and the hybrids, on a rolling backtest.

Every fold refits every model on the data before its test window (fold 0 is the last
`--test-days` days). Prints the MAP@k / HR@k table (last window and mean over the folds, with fit
and recommend seconds), the ratios to the best baseline and the best single model, the ranker's
candidate recall per source, its feature importance and the calibration of its scores (listed
articles by predicted purchase probability: the share bought); writes benchmarks/results/ranker.json
(with the ranker's training statistics per fold and the models counted as baselines and as single
models) and the importance plot.

    .venv/bin/python benchmarks/ranker_bench.py build/online-retail/dataset --folds 4
    .venv/bin/python benchmarks/ranker_bench.py build/hm/dataset --test-days 1 --folds 2 \
        -p ranker.label_days=1 -p ranker.train_weeks=2

`--skip N` leaves out the newest N windows: with `--skip 4` the folds are the four weeks before the
usual test weeks, on which settings can be chosen without looking at the reported folds.
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting starve each other on a shared, loaded machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import itertools
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import polars as pl

from fashionrec.atomic import write_text
from fashionrec.cli import parse_params
from fashionrec.data.dataset import Dataset
from fashionrec.data.split import Split, rolling
from fashionrec.evaluate import fit_recommend, markdown_table, score_recs, summarize, truth_of
from fashionrec.metrics import hit_matrix
from fashionrec.models.ranker import candidate_recall, feature_importance

BASELINES = ("popular", "decay", "repurchase")
SINGLE = ("popular", "decay", "repurchase", "itemcf", "als", "segments", "content", "bpr", "usercf")
MODELS = "popular,decay,repurchase,itemcf,als,usercf,segments,weighted,switching,cascade,ranker"
RESULTS = Path(__file__).parent / "results"
RELIABILITY_BINS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 1.0)
log = logging.getLogger("ranker_bench")


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Dataset.load(args.dataset)
    if args.days:  # a large data set: its last days only (every model sees the same window)
        data = data.last_days(args.days)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    params = parse_params(args.param, names)
    splits = rolling(data, args.folds + args.skip, args.test_days)[args.skip :]
    k = args.k
    folds: dict[str, list[dict[str, Any]]] = {m: [] for m in names}
    recall: list[pl.DataFrame] = []
    calibration: list[pl.DataFrame] = []
    importance = None
    for f, split in enumerate(splits):
        log.info("fold %d: %s", f, split.label)
        for name in names:
            run_ = fit_recommend(name, params.get(name, {}), split, k)
            scores = score_recs(run_.recs, split, k)
            row = {
                f"map@{k}": scores[f"map@{k}"],
                f"hr@{k}": scores[f"hr@{k}"],
                "fit_s": run_.fit_s,
                "recommend_s": run_.recommend_s,
            }
            if name == "ranker":
                row["training"] = run_.model.info_  # per labelled period and per booster
                recall.append(candidate_recall(run_.model, split.test).with_columns(fold=f))
                calibration.append(listed_probabilities(run_.model, split, k))
                if f == 0:
                    importance = feature_importance(run_.model, args.png)
            folds[name].append(row)
            log.info("fold %d %s: map %.4f fit %.1fs", f, name, row[f"map@{k}"], run_.fit_s)
    rows = []
    for name in names:
        mean = summarize(folds[name])  # numeric keys only
        last = folds[name][0]
        training = [r["training"] for r in folds[name] if "training" in r]
        rows.append(
            {
                "model": name,
                "last_map": last[f"map@{k}"],
                "last_hr": last[f"hr@{k}"],
                "mean_map": mean[f"map@{k}"],
                "mean_map_ci95": mean.get(f"map@{k}_ci95"),
                "mean_hr": mean[f"hr@{k}"],
                "fit_s": mean["fit_s"],
                "recommend_s": mean["recommend_s"],
                "folds": [r[f"map@{k}"] for r in folds[name]],
                **({"training": training} if training else {}),  # the ranker's, per fold
            }
        )
    by = {r["model"]: r for r in rows}
    # the models run that count as a baseline / a single model in the ratios
    groups = {
        group: [m for m in members if m in by]
        for group, members in (("baseline", BASELINES), ("single", SINGLE))
    }
    ratios = {}
    if "ranker" in by:
        for period in ("last", "mean"):
            for group, present in groups.items():
                if not present:
                    continue
                best = max(present, key=lambda m: by[m][f"{period}_map"])
                ratios[f"{period}_vs_best_{group}"] = {
                    "best": best,
                    "ratio": by["ranker"][f"{period}_map"] / max(by[best][f"{period}_map"], 1e-12),
                }
    recall_table = (
        pl.concat(recall)
        .group_by("source", maintain_order=True)
        .agg(
            pl.col("candidates_per_user").mean(),
            pl.col("recall").first().alias("recall_last"),
            pl.col("recall").mean().alias("recall_mean"),
        )
        if recall
        else None
    )
    return {
        "dataset": str(args.dataset),
        "days": args.days,
        "folds": args.folds,
        "skip": args.skip,
        "test_days": args.test_days,
        "k": k,
        "windows": [s.label for s in splits],
        "params": params,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rows": rows,
        "groups": groups,
        "ratios": ratios,
        "recall": None if recall_table is None else recall_table.to_dicts(),
        "importance": None if importance is None else importance.head(30).to_dicts(),
        "calibration": reliability(pl.concat(calibration)).to_dicts() if calibration else None,
    }


def listed_probabilities(model: Any, split: Split, k: int) -> pl.DataFrame:
    """The ranker's predicted purchase probability (score - 1: its ranked tier) of every article
    in the top k of the test buyers, and whether the buyer bought it in the test period."""
    users, truth = truth_of(split.test)
    recs = model.recommend(users, k)
    hits = hit_matrix(recs.items, truth)
    ranked = recs.scores >= 1.0  # the `decay` fill of customers without history scores below 1
    return pl.DataFrame({"p": recs.scores[ranked] - 1.0, "bought": hits[ranked].astype(float)})


def reliability(listed: pl.DataFrame, edges: tuple[float, ...] = RELIABILITY_BINS) -> pl.DataFrame:
    """Listed articles by predicted probability bin: how many, the mean predicted probability
    and the share bought (a reliability diagram as a table), and a last row for all."""
    binned = listed.with_columns(
        bin=pl.col("p").cut(
            list(edges[1:-1]),
            labels=[f"{a:g}-{b:g}" for a, b in itertools.pairwise(edges)],
            left_closed=True,
        )
    )
    rows = (
        binned.group_by("bin")
        .agg(
            pl.len().alias("articles"), pl.col("p").mean().alias("mean_p"), pl.col("bought").mean()
        )
        .sort("mean_p")
    )
    total = listed.select(
        pl.lit("all").alias("bin"),
        pl.len().alias("articles"),
        pl.col("p").mean().alias("mean_p"),
        pl.col("bought").mean(),
    )
    return pl.concat([rows.with_columns(pl.col("bin").cast(pl.String)), total])


def report(result: dict[str, Any]) -> str:
    k = result["k"]
    cols = ["last_map", "last_hr", "mean_map", "mean_hr", "fit_s", "recommend_s"]
    rows = [
        {c: r[c] for c in ["model", *cols]} | {"mean_map_ci95": r["mean_map_ci95"]}
        for r in result["rows"]
    ]
    out = [
        f"{result['dataset']} · {result['folds']} folds of {result['test_days']} days · k={k}",
        f"(last = {result['windows'][0]}; MAP@{k} / HR@{k}; seconds are per fold)",
        "",
        markdown_table(rows, cols),
    ]
    if result["ratios"]:
        out += ["", "| ranker vs | best | ratio |", "|---|---|---:|"]
        out += [
            f"| {key} | {v['best']} | {v['ratio']:.2f} |" for key, v in result["ratios"].items()
        ]
        out += ["", "; ".join(f"{g}: {', '.join(m)}" for g, m in result["groups"].items() if m)]
    if result["recall"]:
        out += ["", "Candidate recall (share of the test purchases among the candidates)", ""]
        out += [
            markdown_table(
                result["recall"], ["candidates_per_user", "recall_last", "recall_mean"], "source"
            )
        ]
    if result.get("calibration"):
        out += ["", "Calibration: the ranker's listed articles by predicted probability", ""]
        out += [markdown_table(result["calibration"], ["articles", "mean_p", "bought"], "bin")]
    if result["importance"]:
        out += ["", "Feature importance (fold 0, total gain)", ""]
        out += [markdown_table(result["importance"][:20], ["gain_share", "splits"], "feature")]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="build/online-retail/dataset")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--skip", type=int, default=0, help="leave out the newest SKIP windows")
    parser.add_argument("--test-days", type=int, default=7)
    parser.add_argument("--k", type=int, default=12)
    parser.add_argument("--days", type=int, default=None, help="use the last DAYS days only")
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("-p", "--param", action="append", help="model.key=value")
    parser.add_argument("--out", type=Path, default=RESULTS / "ranker.json")
    parser.add_argument(
        "--png", type=Path, default=None, help="importance plot (default: beside --out)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    if args.skip < 0:
        parser.error("--skip must be >= 0")
    if args.png is None:  # an experiment with its own --out never overwrites the default's plot
        args.png = args.out.with_name(
            args.out.stem.replace("ranker", "ranker_importance", 1) + ".png"
        )
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(message)s",
    )
    logging.getLogger("ranker_bench").setLevel(logging.INFO)
    t0 = time.perf_counter()
    result = run(args)
    result["seconds"] = time.perf_counter() - t0
    print(report(result))
    write_text(args.out, json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
