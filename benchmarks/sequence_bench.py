"""Benchmark the sequence models (issue 5): Beauty with the S3-Rec/ICLRec protocol against the
published full-ranking numbers, and the H&M thesis table (k=14) on H&M-schema datasets next to ALS
and AALS (ALS + HNSW index) when `als` is registered.

Beauty (`--data beauty`): leave-one-out (last item test, second last validation inside `fit`),
full ranking over all 12,101 items with the user's earlier items masked, HR/NDCG@{10,20}; rows go
to `benchmarks/results/beauty.json` with the ratio to the published SASRec.
H&M schema (`--data online-retail hm`): consecutive repeats removed, leave-last-out
(`fashionrec.experiments.holdout`), HR@14, coverage@14, overlap@14, personalization@14,
novelty@14 (plus HR/NDCG@10) via `metrics.evaluate_recs`; rows go to
`benchmarks/results/sequence_thesis.json`.

Each run fits the models given (one at a time) and merges its rows into the JSON file, replacing
rows of the same (data, model, variant), so long trainings can run one per invocation:

    .venv/bin/python benchmarks/sequence_bench.py --data beauty --models sasrec \
        --param sasrec.epochs=60
    .venv/bin/python benchmarks/sequence_bench.py --data online-retail --models ns-gru,als
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from fashionrec.atomic import write_text
from fashionrec.cli import parse_params
from fashionrec.data.dataset import Dataset
from fashionrec.data.seqrec import read_seqrec
from fashionrec.evaluate import markdown_table
from fashionrec.experiments import THESIS_COLUMNS, K, holdout, run
from fashionrec.models import registry

log = logging.getLogger("sequence_bench")

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = Path(os.environ.get("FASHIONREC_SHARED_DATA", ROOT.parent / "shared" / "data"))
SEQUENCE = ("ns-rnn", "ns-lstm", "ns-gru", "ns-attention", "ns-transformer", "sasrec")
DATASETS = {
    "beauty": SHARED / "seqrec" / "Beauty.txt.gz",
    "online-retail": ROOT / "build" / "online-retail" / "dataset",
    "hm": ROOT / "build" / "hm" / "dataset",
}
# Published full-ranking numbers on this Beauty file (../shared/data/seqrec/README.md).
PUBLISHED = {
    "PopRec": {"hr@10": 0.0152, "ndcg@10": 0.0068, "hr@20": 0.0217, "ndcg@20": 0.0084},
    "GRU4Rec": {"hr@10": 0.0283, "ndcg@10": 0.0137, "hr@20": 0.0479, "ndcg@20": 0.0187},
    "SASRec": {"hr@10": 0.0605, "ndcg@10": 0.0318, "hr@20": 0.0902, "ndcg@20": 0.0394},
    "ICLRec": {"hr@10": 0.0744, "ndcg@10": 0.0403, "hr@20": 0.1058, "ndcg@20": 0.0483},
}
BEAUTY_COLUMNS = ["hr@10", "ndcg@10", "hr@20", "ndcg@20", "train_s_per_epoch", "epochs"]
# Per-dataset defaults (a --param overrides them). Beauty: the SASRec reference setting
# (max_len 50, all users validated); H&M: 105k articles, so sampled softmax.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "beauty": {m: {"max_history": 50, "valid_users": 30_000, "epochs": 40} for m in SEQUENCE},
    "online-retail": {},
    "hm": {m: {"loss": "sampled"} for m in SEQUENCE},
}


def load(name: str) -> Dataset:
    path = DATASETS[name]
    return read_seqrec(path) if name == "beauty" else Dataset.load(path)


def variants(names: list[str], params: dict[str, dict], data: str) -> list[tuple[str, str, dict]]:
    """(row label, registered model, parameters) per requested model; `aals` is ALS + HNSW and
    `model@tag` a labelled variant of a model (its parameters given as `model@tag.key=value`)."""
    out = []
    for label in names:
        model = "als" if label == "aals" else label.split("@")[0]
        if model not in registry.MODELS:
            log.warning("%s is not registered: no row", model)
            continue
        base = {"search": "ann"} if label == "aals" else {}
        preset = PRESETS[data].get(model, {})
        out.append((label, model, {**preset, **base, **params.get(label, {})}))
    return out


def merge(path: Path, rows: list[dict[str, Any]], key: tuple[str, ...]) -> list[dict[str, Any]]:
    """Replace rows with the same key in the JSON list at `path`, write it atomically."""
    old = json.loads(path.read_text()) if path.exists() else []
    new_keys = {tuple(r.get(c) for c in key) for r in rows}
    merged = [r for r in old if tuple(r.get(c) for c in key) not in new_keys] + rows
    write_text(path, json.dumps(merged, indent=2) + "\n")
    return merged


def environment() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
    }


def bench_beauty(models: list[str], params: dict[str, dict]) -> None:
    fit, test = holdout(load("beauty"))  # Beauty has no repeats: only leave-last-out
    merged: list[dict[str, Any]] = []
    for label, model, p in variants(models, params, "beauty"):
        row = run(model, p, fit, test, k=20, exclude_seen=True)
        ref = PUBLISHED["SASRec"]
        row |= {"model": label, "params": p, "env": environment()}
        row |= {f"{m}_vs_published_sasrec": row[m] / ref[m] for m in ref}
        merged = merge(RESULTS / "beauty.json", [row], ("model",))  # each row as it is done
    published = [{"model": f"{n} (published)", **v} for n, v in PUBLISHED.items()]
    table = markdown_table(merged + published, BEAUTY_COLUMNS)
    print(f"\nBeauty, full ranking, earlier items masked\n\n{table}\n")


def bench_thesis(data_name: str, models: list[str], params: dict[str, dict]) -> None:
    data = load(data_name)
    fit, test = holdout(data)
    merged: list[dict[str, Any]] = []
    for label, model, p in variants(models, params, data_name):
        row = run(model, p, fit, test, k=K)
        row = {"data": data_name, **row, "model": label, "params": p, "env": environment()}
        merged = merge(RESULTS / "sequence_thesis.json", [row], ("data", "model"))
    table = [r for r in merged if r["data"] == data_name]
    columns = [*THESIS_COLUMNS, "train_s_per_epoch", "epochs", "recommend_users_per_s"]
    print(f"\n{data_name}, leave-last-out, k={K}\n\n{markdown_table(table, columns)}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["beauty"], choices=list(DATASETS))
    parser.add_argument("--models", default=",".join(SEQUENCE), help="comma-separated; aals, m@tag")
    parser.add_argument("--param", "-p", action="append", help="model.key=value")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    params = parse_params(args.param, models)
    for name in args.data:
        if name == "beauty":
            bench_beauty(models, params)
        else:
            bench_thesis(name, models, params)


if __name__ == "__main__":
    main()
