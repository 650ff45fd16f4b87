"""The H&M thesis' ablations of a sequence model at a small scale: embedding sizes, sequence order
and history length (`fashionrec.experiments.ablation`), each printed as a markdown table and
written to `benchmarks/results/ablation_<name>_<data set>.json` (with the data set and parameters;
the data set is the directory's name, or its parent's when it is called `dataset`).

    .venv/bin/python benchmarks/sequence_ablation.py --data build/online-retail/dataset \
        --model ns-gru --param epochs=5
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from fashionrec.atomic import write_text
from fashionrec.cli import parse_params
from fashionrec.data.dataset import Dataset
from fashionrec.evaluate import markdown_table
from fashionrec.experiments import ABLATIONS, K, ablation

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ["hr@14", "ndcg@10", "coverage@14", "personalization@14", "epochs", "train_s_per_epoch"]


def dataset_name(path: Path) -> str:
    """build/online-retail/dataset -> online-retail; any other directory: its own name."""
    path = path.resolve()
    return path.parent.name if path.name == "dataset" else path.name


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
        payload = {"data": str(args.data), "model": args.model, "params": params, "k": K}
        write_text(
            RESULTS / f"ablation_{name}_{dataset_name(args.data)}.json",
            json.dumps({**payload, "rows": rows}, indent=2) + "\n",
        )


if __name__ == "__main__":
    main()
