"""Write the results tables of `make readme` into README.md between its results markers.

Each argument is a results JSON; its shape says how it is drawn: `fashionrec evaluate --json`
rows, or one of the benchmark files (ranker, Beauty, thesis table, issue-6 models).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fashionrec.evaluate import markdown_table, table_columns
from fashionrec.experiments import THESIS_COLUMNS

START, END = "<!-- results:start -->", "<!-- results:end -->"
# The published full-ranking results on the same Beauty file (S3-Rec / ICLRec repositories).
PUBLISHED_BEAUTY = [
    {"model": "GRU4Rec (published)", "hr@10": 0.0283},
    {"model": "SASRec (published)", "hr@10": 0.0605, "ndcg@10": 0.0318, "hr@20": 0.0902},
    {"model": "ICLRec (published)", "hr@10": 0.0744, "ndcg@10": 0.0403},
]


def _table(rows: list[dict[str, Any]], columns: list[str], key: str = "model") -> str:
    def cell(value: Any, column: str) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.1f}" if column.endswith("_s") else f"{value:.4f}"
        return str(value)

    head = f"| {key} | " + " | ".join(columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    body = [f"| {r[key]} | " + " | ".join(cell(r.get(c), c) for c in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body]) + "\n"


def evaluate_rows(path: Path, rows: list[dict]) -> str:
    tests = rows[0]["test"]
    what = tests[0] if len(tests) == 1 else f"{len(tests)} rolling weeks, mean ± 95% CI"
    return f"`{path}` ({what}):\n\n{markdown_table(rows, table_columns(12))}\n"


def ranker(path: Path, result: dict) -> str:
    rows = [
        {
            "model": r["model"],
            "last week map@12": r["last_map"],
            "4-week mean map@12": r["mean_map"],
            "fit_s": r["fit_s"],
            "recommend_s": r["recommend_s"],
        }
        for r in result["rows"]
    ]
    ratios = result["ratios"]
    lines = [
        f"- {name.replace('_', ' ')}: {v['ratio']:.2f}× `{v['best']}`" for name, v in ratios.items()
    ]
    columns = ["last week map@12", "4-week mean map@12", "fit_s", "recommend_s"]
    return (
        f"`{path}` (two-stage ranker against baselines, single models and hybrids on "
        f"`{result['dataset']}`, {result['folds']} rolling weeks):\n\n"
        f"{_table(rows, columns)}\n" + "\n".join(lines) + "\n"
    )


def beauty(path: Path, rows: list[dict]) -> str:
    columns = ["hr@10", "ndcg@10", "hr@20", "ndcg@20", "fit_s"]
    return (
        f"`{path}` (Amazon Beauty, leave-one-out, full ranking over all items; published rows "
        "from the S3-Rec/ICLRec papers on the same file):\n\n"
        f"{_table(rows + PUBLISHED_BEAUTY, columns)}"
    )


def thesis(path: Path, rows: list[dict]) -> str:
    columns = [*THESIS_COLUMNS, "fit_s"]
    named = [{**r, "data / model": f"{r['data']} / {r['model']}"} for r in rows]
    return (
        f"`{path}` (the H&M thesis table: leave-last-out after removing consecutive repeats, "
        f"k=14; `aals` = ALS + HNSW):\n\n{_table(named, columns, 'data / model')}"
    )


def issue6(path: Path, result: dict) -> str:
    out = []
    for name, models in result["results"].items():
        k = 20 if "fraction" in name else 12
        columns = [f"map@{k}", f"hr@{k}", f"recall_1@{k}", f"recall_30@{k}", "fit_s", "peak MB"]
        rows = [
            {**v, "model": m, "peak MB": round(v.get("peak_rss_mb", 0))} for m, v in models.items()
        ]
        out.append(f"`{path}` {name}:\n\n{_table(rows, columns)}")
    return "\n".join(out)


def section(path: Path) -> str:
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "ratios" in data:
        return ranker(path, data)
    if isinstance(data, dict) and "results" in data:
        return issue6(path, data)
    if data and "data" in data[0] and "hr@14" in data[0]:
        return thesis(path, data)
    if data and "hr@10" in data[0]:
        return beauty(path, data)
    return evaluate_rows(path, data)


def main(readme: str, *results: str) -> None:
    text = Path(readme).read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    body = "\n".join(section(Path(r)) for r in results)
    Path(readme).write_text(f"{head}{START}\n{body}{END}{tail}")


if __name__ == "__main__":
    main(*sys.argv[1:])
