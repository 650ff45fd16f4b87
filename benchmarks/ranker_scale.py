"""Time and memory of the two-stage ranker at scale: fit on a data set (optionally its last days),
save the artifact, then in a fresh process load it and recommend 12 articles to every customer
(candidate generation + features + LightGBM prediction), reporting wall time and peak RSS of
each step, and the time of one customer's request with and without a posted purchase.
--users N serves a random N customers and scales their time to everyone. With --holdout DAYS
the fit leaves out the last DAYS days, the held-out buyers are served too, and their lists are
scored (MAP@12) next to the baselines popular, decay and repurchase fitted on the same data.
Writes benchmarks/results/ranker_scale_<name>[_<days>d][_<users>u][_holdout<days>d]
[_<key>=<value>]....json (named by every setting given, so that a reduced run and a default one
both stay).

    .venv/bin/python benchmarks/ranker_scale.py build/scale-0.1/dataset --days 56
    .venv/bin/python benchmarks/ranker_scale.py build/scale-1/dataset --holdout 7 --users 100000
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see ranker_bench.py

import argparse
import hashlib
import json
import logging
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from fashionrec import artifacts
from fashionrec.atomic import write_text
from fashionrec.cli import parse_params
from fashionrec.data.dataset import Dataset
from fashionrec.data.split import Split, week
from fashionrec.evaluate import run_model, score_recs, truth_of
from fashionrec.models import registry

BASELINES = ("popular", "decay", "repurchase")

RESULTS = Path(__file__).parent / "results"
log = logging.getLogger("ranker_scale")


def peak_gb() -> float:
    """Peak resident memory of this process so far: VmHWM of /proc/self/status (Linux), which
    starts afresh at exec, unlike ru_maxrss (that keeps the forking parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def load(args: argparse.Namespace) -> tuple[Dataset, Split | None]:
    """The data to fit on and, with --holdout, the split whose test period is scored."""
    data = Dataset.load(args.dataset)
    if args.days:
        data = data.last_days(args.days)
    if not args.holdout:
        return data, None
    split = week(data, args.holdout)
    return split.train, split


def fit(args: argparse.Namespace, data: Dataset) -> dict:
    params = parse_params(args.param, ["ranker"])["ranker"]
    model = registry.create("ranker", **params)
    t1 = time.perf_counter()
    model.fit(data)
    fit_s = time.perf_counter() - t1
    artifacts.save(model, args.artifact)
    return {
        "customers": data.n_users,
        "articles": data.n_items,
        "transactions": data.transactions.height,
        "buyers": len(data.buyers()),
        "params": params,
        "fit_s": fit_s,
        "fit_peak_gb": peak_gb(),
        "info": model.info_,
    }


def serve(args: argparse.Namespace) -> dict:
    """Recommend to every customer (or a random --users N of them: the time for everyone is then
    scaled from theirs) and, when the parent left buyers.npy, to those held-out buyers as well;
    recs.npy gets the lists of everyone served (-1 for the others)."""
    scratch = args.artifact.parent
    t0 = time.perf_counter()
    model = artifacts.load(args.artifact)
    load_s = time.perf_counter() - t0
    n = model.stage().ctx["u_n_tx"].shape[0]
    users = np.arange(n)
    if args.users is not None and args.users < n:
        users = np.sort(np.random.default_rng(0).choice(n, args.users, replace=False))
    t1 = time.perf_counter()
    recs = model.recommend(users, 12)
    recommend_s = time.perf_counter() - t1
    everyone = np.full((n, 12), -1, np.int32)
    everyone[users] = recs.items
    out = {
        "users": len(users),
        "artifact_load_s": load_s,
        "recommend_s": recommend_s,
        "recommend_all_s": recommend_s * n / len(users),
        "rows_full": int((recs.items >= 0).all(axis=1).sum()),
    }
    if (scratch / "buyers.npy").exists():
        buyers = np.load(scratch / "buyers.npy")
        t2 = time.perf_counter()
        everyone[buyers] = model.recommend(buyers, 12).items
        out |= {"holdout_buyers": len(buyers), "holdout_recommend_s": time.perf_counter() - t2}
    np.save(scratch / "recs.npy", everyone)  # benchmark scratch, not an artifact
    return out | live_latency(model) | {"serve_peak_gb": peak_gb()}


def live_latency(model: object, n: int = 200) -> dict:
    """Milliseconds per single-customer request (median, 95th percentile) of `n` random known
    customers: `recommend` as fitted, and `recommend_with` one posted purchase of a random
    article (the live path: the customer side recomputed), as the service calls them."""
    rng = np.random.default_rng(1)
    warm = np.flatnonzero(np.nan_to_num(model.stage().ctx["u_n_tx"]) > 0)
    users = rng.choice(warm, min(n, len(warm)), replace=False)
    bought = rng.integers(0, model.stage().ctx["n_items"], len(users))
    out = {}
    for name, call in (
        ("fitted", lambda u, i: model.recommend(np.array([u]), 12)),
        ("live", lambda u, i: model.recommend_with(np.array([u]), [np.array([i])], 12)),
    ):
        ms = []
        for u, i in zip(users, bought, strict=True):
            t = time.perf_counter()
            call(u, i)
            ms.append(1000 * (time.perf_counter() - t))
        out[f"{name}_ms_median"], out[f"{name}_ms_p95"] = np.percentile(ms, [50, 95]).tolist()
    log.info("one customer: %s", out)
    return out


def quality(split: Split, everyone: np.ndarray, k: int = 12) -> dict:
    """Every metric of the ranker's lists for everyone, on the test buyers, and of the baselines
    (fitted here); ratio = the ranker's MAP@k over the best baseline's."""
    users, _ = truth_of(split.test)
    ranker = {"model": "ranker", **score_recs(everyone[users], split, k)}
    log.info("ranker on %s: map@%d %.4f", split.label, k, ranker[f"map@{k}"])
    baselines = [run_model(name, {}, split, k) for name in BASELINES]
    best = max(baselines, key=lambda r: r[f"map@{k}"])
    return {
        "test": split.label,
        "buyers": len(users),
        "rows": [ranker, *baselines],
        "ratio": ranker[f"map@{k}"] / max(best[f"map@{k}"], 1e-12),
        "best_baseline": best["model"],
    }


def result_path(args: argparse.Namespace, params: dict) -> Path:
    """The result file, named by the data set and every setting given, so that a run with other
    settings does not overwrite it (a hash stands for parameters too long for a file name)."""
    name = args.dataset.parent.name if args.dataset.name == "dataset" else args.dataset.name
    tags = [f"ranker_scale_{name}"]
    tags += [f"{args.days}d"] if args.days else []
    tags += [f"{args.users}u"] if args.users is not None else []
    tags += [f"holdout{args.holdout}d"] if args.holdout else []
    settings = [re.sub(r"[^\w.=@-]+", "-", f"{k}={v}") for k, v in sorted(params.items())]
    stem = "_".join(tags + settings)
    if len(stem) > 200:
        digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()
        stem = "_".join([*tags, digest[:10]])
    return RESULTS / f"{stem}.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--days", type=int, default=None, help="fit on the last DAYS days only")
    parser.add_argument(
        "--users", type=int, default=None, help="recommend to N random customers (time scaled)"
    )
    parser.add_argument("--holdout", type=int, default=0, help="score MAP@12 on the last DAYS")
    parser.add_argument("-p", "--param", action="append", help="ranker parameter key=value")
    parser.add_argument("--artifact", type=Path, default=None)
    parser.add_argument("--step", choices=("all", "serve"), default="all")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.step == "serve":  # the child process: a clean peak RSS for serving alone
        print(json.dumps(serve(args)))
        return
    tmp = tempfile.TemporaryDirectory(prefix="ranker-scale-")
    args.artifact = args.artifact or Path(tmp.name) / "ranker"
    result = {"dataset": str(args.dataset), "days": args.days, "cpus": os.cpu_count()}
    t0 = time.perf_counter()
    data, split = load(args)
    result |= {"load_s": time.perf_counter() - t0} | fit(args, data)
    if split is not None:
        np.save(args.artifact.parent / "buyers.npy", truth_of(split.test)[0])
    cmd = [sys.executable, __file__, str(args.dataset), "--step", "serve"]
    cmd += ["--artifact", str(args.artifact)]
    if args.users is not None:
        cmd += ["--users", str(args.users)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout  # logs pass
    result |= json.loads(out.strip().splitlines()[-1])
    result["artifact_gb"] = sum(f.stat().st_size for f in args.artifact.iterdir()) / 2**30
    if split is not None:
        result["holdout"] = quality(split, np.load(args.artifact.parent / "recs.npy"))
    print(json.dumps({k: v for k, v in result.items() if k != "info"}, indent=2))
    path = result_path(args, result["params"])
    write_text(path, json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
