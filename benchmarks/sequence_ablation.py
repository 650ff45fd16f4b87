"""The H&M thesis' ablations of a sequence model at a small scale: embedding sizes, sequence order
and history length (`fashionrec.experiments.ablation`), each printed as a markdown table and
written to `benchmarks/results/ablation_<name>.json` (with the data set and parameters).

    .venv/bin/python benchmarks/sequence_ablation.py --data build/online-retail/dataset \
        --model ns-gru --param epochs=5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path

from fashionrec.cli import parse_params
from fashionrec.data.dataset import Dataset
from fashionrec.evaluate import markdown_table
from fashionrec.experiments import ABLATIONS, K, ablation

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ["hr@14", "ndcg@10", "coverage@14", "personalization@14", "epochs", "train_s_per_epoch"]


def write(path: Path, payload: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("build/online-retail/dataset"))
    parser.add_argument("--model", default="ns-gru")
    parser.add_argument("--which", nargs="+", default=list(ABLATIONS), choices=list(ABLATIONS))
    parser.add_argument("--param", "-p", action="append", help="key=value for the model")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    params = parse_params(args.param, [args.model])[args.model]
    tables = ablation(Dataset.load(args.data), tuple(args.which), args.model, params, K)
    for name, rows in tables.items():
        key = next(iter(rows[0]))
        print(f"\n{name} ({args.model}, {args.data}, k={K})\n")
        print(markdown_table([{**r, key: str(r[key])} for r in rows], COLUMNS, key))
        write(
            RESULTS / f"ablation_{name}.json",
            {"data": str(args.data), "model": args.model, "params": params, "k": K, "rows": rows},
        )


if __name__ == "__main__":
    main()
