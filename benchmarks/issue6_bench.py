"""Issue 6 results: cvae, lightgcn and usercf against reference models, with fit time and memory.

Two tables per data set:
- week: the standard protocol (the last 7 days are the test period; `--test-days 1` for the H&M
  week) and the standard metrics at k=12, for popular, decay, repurchase, segments, cvae, cvae
  without the condition (`cvae-uncond`), lightgcn and usercf, all with default parameters;
- time-fraction: the cVAE project's protocol (the first 70% of the time span train, the rest
  test) at k=20 with its recall_1@20 (a hit among the 20) and recall_30@20 (at least 6 of the 20
  bought), over all test buyers and split into warm (bought in training) and cold ones, for
  popular, segments, cvae and cvae-uncond: the value of the condition.
Every (data set, split, model) runs in a fresh subprocess, one at a time: fit wall and CPU
seconds, and peak memory = the child's ru_maxrss (peak resident set size of the whole process:
Python, libraries, the data set and the model), with the part added by fit + recommend (peak
minus the high-water mark just before fit). Results merge into benchmarks/results/issue6.json
(keyed by data set, split and model), so data sets can be run one call at a time.

    .venv/bin/python benchmarks/issue6_bench.py --datasets ml100k online-retail hm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks/results/issue6.json"
DATASETS = {"hm": 1, "online-retail": 7, "ml100k": 7}  # name -> test days of the week split
WEEK_MODELS = {
    "popular": ("popular", {}),
    "decay": ("decay", {}),
    "repurchase": ("repurchase", {}),
    "segments": ("segments", {}),
    "cvae": ("cvae", {}),
    "cvae-uncond": ("cvae", {"conditional": False}),
    "lightgcn": ("lightgcn", {}),
    "usercf": ("usercf", {}),
}
FRACTION_MODELS = ("popular", "segments", "cvae", "cvae-uncond")
WEEK_COLUMNS = ["map", "hr", "recall", "ndcg", "coverage", "novelty"]
FRACTION_COLUMNS = ["recall_1", "recall_30", "map", "recall", "ndcg", "coverage"]


def child(job: dict[str, Any]) -> dict[str, Any]:
    """Fit and score one model (runs in its own process)."""
    from fashionrec.data.dataset import Dataset
    from fashionrec.data.split import make_split
    from fashionrec.evaluate import score_recs, truth_of
    from fashionrec.metrics import per_user
    from fashionrec.models import registry

    data = Dataset.load(ROOT / "build" / job["dataset"] / "dataset")
    split = make_split(data, job["split"], test_days=job["test_days"])
    model = registry.create(job["model"], **job["params"])
    k = job["k"]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wall, cpu = time.perf_counter(), time.process_time()
    model.fit(split.train)
    fit_s, fit_cpu_s = time.perf_counter() - wall, time.process_time() - cpu
    users, truth = truth_of(split.test)
    wall = time.perf_counter()
    recs = model.recommend(users, k).items
    row = {
        **score_recs(recs, split, k),
        "fit_s": fit_s,
        "fit_cpu_s": fit_cpu_s,
        "recommend_s": time.perf_counter() - wall,
        "users": len(users),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_fit_mb": before,
    }
    row["fit_recommend_rss_mb"] = row["peak_rss_mb"] - before
    if job["split"] == "time-fraction":  # warm (bought in training) and cold test buyers
        warm = np.diff(split.train.user_items(binary=True)[users].indptr) > 0
        per = per_user(recs, truth, k)
        row["cold_share"] = float(1 - warm.mean())
        for name, mask in (("warm", warm), ("cold", ~warm)):
            for metric in ("recall_1", "recall_30"):
                values = per[f"{metric}@{k}"][mask]
                row[f"{metric}@{k}_{name}"] = float(values.mean()) if mask.any() else None
    log = getattr(model, "train_log_", None)
    if log:
        row["epochs_run"] = len(log)
    return row


def run(job: dict[str, Any]) -> dict[str, Any]:
    """`child(job)` in a fresh interpreter (so that ru_maxrss is this model's alone)."""
    cmd = [sys.executable, __file__, "--child", json.dumps(job)]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise RuntimeError(f"{job}: failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: dict[str, dict], columns: list[str], k: int, extra: list[str]) -> str:
    head = [f"{c}@{k}" for c in columns] + extra
    lines = ["| model | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
    for name, row in rows.items():
        cells = []
        for col in head:
            value = row.get(col)
            if value is None:
                cells.append("")
            elif col.endswith("_mb") or col.endswith("_s"):
                cells.append(f"{value:.1f}" if col.endswith("_s") else f"{value:.0f}")
            elif isinstance(value, int):
                cells.append(f"{value:,}")
            else:
                cells.append(f"{value:.4f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--models", nargs="+", default=list(WEEK_MODELS), choices=list(WEEK_MODELS))
    parser.add_argument("--splits", nargs="+", default=["week", "time-fraction"])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    from fashionrec.atomic import write_text

    result = json.loads(args.out.read_text()) if args.out.exists() else {"results": {}}
    for dataset in args.datasets:
        for split in args.splits:
            k = 12 if split == "week" else 20
            names = [m for m in args.models if split == "week" or m in FRACTION_MODELS]
            for label in names:
                model, params = WEEK_MODELS[label]
                job = {
                    "dataset": dataset,
                    "split": split,
                    "test_days": DATASETS[dataset],
                    "model": model,
                    "params": params,
                    "k": k,
                }
                print(f"{dataset} {split} {label} ...", flush=True)
                row = run(job) | {"model": model, "params": params}
                result["results"].setdefault(f"{dataset}/{split}", {})[label] = row
                result |= {
                    "machine": platform.machine(),
                    "cpus": os.cpu_count(),
                    "memory": "peak_rss_mb: ru_maxrss of a fresh subprocess per model (the "
                    "whole process); fit_recommend_rss_mb: peak minus the high-water mark "
                    "before fit",
                    "timing": "fit_s wall seconds, fit_cpu_s process CPU seconds (the machine "
                    "is shared: wall time depends on the load)",
                }
                write_text(args.out, json.dumps(result, indent=2) + "\n")
    for key, rows in result["results"].items():
        dataset, split = key.split("/")
        if split == "week":
            extra = ["fit_s", "fit_cpu_s", "peak_rss_mb", "fit_recommend_rss_mb"]
            print(f"\n### {dataset}, week split (test days {DATASETS[dataset]}), k=12\n")
            print(table(rows, WEEK_COLUMNS, 12, extra))
        else:
            extra = ["recall_1@20_warm", "recall_1@20_cold", "recall_30@20_warm"]
            extra += ["recall_30@20_cold", "cold_share", "fit_s", "fit_cpu_s", "peak_rss_mb"]
            print(f"\n### {dataset}, time-fraction split (first 70% train), k=20\n")
            print(table(rows, FRACTION_COLUMNS, 20, extra))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
