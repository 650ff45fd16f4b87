"""Calibration of the H&M generator: the final week of generated data against the real final week
in ../shared/data/hm (article popularity curve, purchases per customer, repeat purchases,
baskets, channel split, prices), and the whole-history statistics known for the real data:
how many (customer, article) pairs are bought on more than one day, or three, and how soon
re-buys come (from a public analysis of the full Kaggle file, `synthetic.HM_HISTORY`). Prints a
markdown table and writes benchmarks/results/generator_calibration.json.

    .venv/bin/python benchmarks/generator_calibration.py GENERATED_DIR [--real ../shared/data/hm]

GENERATED_DIR comes from `fashionrec generate` (or `fashionrec.data.synthetic.generate`);
counts are divided by its scale, so any scale compares with the real week, though the
popularity curve (top shares, articles sold once) is only comparable at scale 1.0.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import polars as pl

from fashionrec.atomic import write_text
from fashionrec.data.synthetic import HM_HISTORY, calibrate, calibration_markdown, history_stats

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("generated", type=Path)
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared" / "data" / "hm")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks/results/generator_calibration.json"
    )
    args = parser.parse_args()
    table = calibrate(args.generated, args.real)
    generated = history_stats(args.generated)
    history = [
        {"statistic": k, "real": real, "generated": generated[k], "ratio": generated[k] / real}
        for k, real in HM_HISTORY.items()
    ]
    table = pl.concat([table, pl.DataFrame(history)], how="vertical_relaxed")
    meta_path = args.generated / "generator.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    result = {
        "benchmark": "generator_calibration",
        "generator": meta,
        "real": str(args.real),
        "week": "the last 7 days of each transactions table (the last rows: the whole history)",
        "rows": table.to_dicts(),
    }
    write_text(args.json, json.dumps(result, indent=2) + "\n")
    scale = meta.get("scale", "?")
    print(f"generated (scale {scale}, seed {meta.get('seed', '?')}) vs real, final week\n")
    print(calibration_markdown(table))


if __name__ == "__main__":
    main()
