"""What a posted purchase costs a request: for each history-aware model (`base.HistoryAware`),
the time of one customer's list as fitted (`recommend`) and with one purchase posted since the
fit (`recommend_with`, as `fashionrec serve` calls it), over the same random known customers and
articles. The fitted path is the reference in the same run (the ratio column), because these
machines are shared and noisy. Writes benchmarks/results/live_latency_<dataset>.json.

    .venv/bin/python benchmarks/live_bench.py build/online-retail/dataset
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from fashionrec.atomic import write_text
from fashionrec.data.dataset import Dataset
from fashionrec.models import registry
from fashionrec.models.base import HistoryAware

RESULTS = Path(__file__).parent / "results"
MODELS = "repurchase,itemcf,content,usercf,als,bpr,cvae,lightgcn,sasrec,ranker,weighted"
log = logging.getLogger("live_bench")


def timed(call, users: np.ndarray, items: np.ndarray) -> list[float]:
    """Milliseconds of `call(user, item)` per pair, after one warm-up call."""
    call(users[0], items[0])
    out = []
    for user, item in zip(users, items, strict=True):
        start = time.perf_counter()
        call(user, item)
        out.append(1000 * (time.perf_counter() - start))
    return out


def measure(model: HistoryAware, users: np.ndarray, items: np.ndarray) -> dict[str, float]:
    """Median and 95th percentile ms of one request, fitted and with one posted purchase."""
    fitted = timed(lambda u, i: model.recommend(np.array([u]), 12), users, items)
    live = timed(
        lambda u, i: model.recommend_with(np.array([u]), [np.array([i])], 12), users, items
    )
    row = {}
    for key, ms in (("fitted", fitted), ("live", live)):
        row[f"{key}_ms_median"], row[f"{key}_ms_p95"] = np.percentile(ms, [50, 95]).tolist()
    row["live_over_fitted"] = row["live_ms_median"] / row["fitted_ms_median"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    data = Dataset.load(args.dataset)
    rng = np.random.default_rng(args.seed)
    buyers = data.buyers()
    users = rng.choice(buyers, min(args.requests, len(buyers)), replace=False)
    sold = np.flatnonzero(data.item_popularity() > 0)
    items = rng.choice(sold, len(users))
    rows = []
    for name in args.models.split(","):
        model = registry.create(name)
        if not isinstance(model, HistoryAware):
            log.info("%s does not read purchases after the fit: skipped", name)
            continue
        start = time.perf_counter()
        model.fit(data)
        fit_s = time.perf_counter() - start
        row = {"model": name, "fit_s": fit_s} | measure(model, users, items)
        rows.append(row)
        log.info("%s: %s", name, row)
    print("| model | fitted ms (median / p95) | posted purchase ms (median / p95) | ratio |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['fitted_ms_median']:.2f} / {r['fitted_ms_p95']:.2f} | "
            f"{r['live_ms_median']:.2f} / {r['live_ms_p95']:.2f} | {r['live_over_fitted']:.1f} |"
        )
    out = {
        "dataset": str(args.dataset),
        "requests": len(users),
        "seed": args.seed,
        "k": 12,
        "rows": rows,
    }
    path = RESULTS / f"live_latency_{args.dataset.parent.name}.json"
    write_text(path, json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
