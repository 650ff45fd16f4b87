"""`fashionrec report`: one self-contained HTML page (and the same as markdown) with PNG plots.

Data overview, customer segments, the model comparison, the two-stage ranker's candidate recall
and feature importance, per-category and per-segment metrics, fairness gaps between customer
groups, popularity bias by rank position, and the sequence-model ablation tables when they exist.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from fashionrec.atomic import check_own_directory, new_directory
from fashionrec.data.dataset import Dataset
from fashionrec.data.split import Split, week
from fashionrec.errors import ConfigError
from fashionrec.evaluate import (
    Run,
    breakdown,
    fit_recommend,
    markdown_table,
    score_recs,
    table_columns,
    truth_of,
)
from fashionrec.metrics import by_group, per_user

log = logging.getLogger(__name__)
RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


@dataclass
class Page:
    """Sections as (title, markdown body, figures); rendered to markdown and HTML at the end."""

    out: Path
    sections: list[tuple[str, list[str | Path]]] = field(default_factory=list)

    def add(self, title: str, *parts: str | Path) -> None:
        self.sections.append((title, list(parts)))

    def figure(self, name: str, fig: plt.Figure) -> Path:
        path = self.out / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

    def write(self, title: str) -> tuple[Path, Path]:
        md = [f"# {title}\n"]
        body = [f"<h1>{html.escape(title)}</h1>"]
        for heading, parts in self.sections:
            md.append(f"\n## {heading}\n")
            body.append(f"<h2>{html.escape(heading)}</h2>")
            for part in parts:
                if isinstance(part, Path):
                    md.append(f"\n![{part.stem}]({part.name})\n")
                    data = base64.b64encode(part.read_bytes()).decode()
                    body.append(f'<img alt="{part.stem}" src="data:image/png;base64,{data}">')
                else:
                    md.append(f"\n{part}\n")
                    body.append(_md_to_html(part))
        (self.out / "report.md").write_text("\n".join(md))
        page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>{html.escape(title)}</title><style>
body {{ font: 15px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2rem auto; color: #222; }}
table {{ border-collapse: collapse; margin: .5rem 0 1rem; font-size: 13px; }}
td, th {{ border-bottom: 1px solid #ddd; padding: .25rem .6rem; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }} img {{ max-width: 100%; }}
h2 {{ border-top: 1px solid #eee; padding-top: 1rem; margin-top: 2rem; }}
</style></head><body>{"".join(body)}</body></html>"""
        (self.out / "report.html").write_text(page)
        return self.out / "report.html", self.out / "report.md"


def _md_to_html(text: str) -> str:
    """Markdown tables and paragraphs, which is all this report writes."""
    out, rows = [], []
    for line in [*text.strip().splitlines(), ""]:
        if line.startswith("|"):
            if not set(line) <= set("|-: "):
                rows.append([html.escape(c.strip()) for c in line.strip("|").split("|")])
            continue
        if rows:
            head, *rest = rows
            out.append(
                "<table><tr>"
                + "".join(f"<th>{c}</th>" for c in head)
                + "</tr>"
                + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rest)
                + "</table>"
            )
            rows = []
        if line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    return "\n".join(out)


# ---- sections ---------------------------------------------------------------------------------


def overview(page: Page, data: Dataset) -> None:
    tx = data.transactions
    weekly = tx.group_by(pl.col("t_dat").dt.truncate("1w")).len().sort("t_dat")
    per_customer = tx.group_by("user").len()["len"].to_numpy()
    popularity = np.sort(data.item_popularity())[::-1]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    axes[0].plot(weekly["t_dat"].to_list(), weekly["len"].to_numpy())
    axes[0].set_title("purchases per week")
    axes[0].tick_params(axis="x", rotation=30)
    axes[1].hist(per_customer, bins=np.unique(np.geomspace(1, per_customer.max() + 1, 40).round()))
    axes[1].set(xscale="log", yscale="log", title="purchases per customer", xlabel="purchases")
    sold = popularity[popularity > 0]
    axes[2].loglog(np.arange(1, len(sold) + 1), sold)
    axes[2].set(title="article popularity (rank vs purchases)", xlabel="rank")
    m = data.manifest
    facts = (
        f"| rows | customers | buying customers | articles | sold articles | from | to |\n"
        f"|---|---|---|---|---|---|---|\n| {tx.height:,} | {data.n_users:,} | "
        f"{len(per_customer):,} | {data.n_items:,} | {len(sold):,} | {data.min_date} | "
        f"{data.max_date} |"
    )
    missing = [f"{t}: {', '.join(c)}" for t, c in m.get("missing_columns", {}).items() if c]
    note = (
        "Missing optional data: " + "; ".join(missing)
        if missing
        else "No optional data is missing."
    )
    page.add("Data", facts, note, page.figure("data_overview", fig))


def segments_section(page: Page, data: Dataset, k_values: list[int], seed: int) -> Any:
    """Elbow and the profiles of the suggested number of segments; returns the fitted model."""
    from fashionrec.models.segments import Segments, elbow

    result = elbow(data, k_values, page.out, seed=seed)
    model = Segments(n_segments=int(result["suggested_k"]), seed=seed).fit(data)
    sizes = np.bincount(model.labels_[model.labels_ >= 0], minlength=len(model.modes_))
    header = "| segment | customers | " + " | ".join(model.features_) + " |"
    rows = [header, "|---|---:|" + "---|" * len(model.features_)]
    rows += [
        f"| {s} | {sizes[s]:,} | " + " | ".join(map(str, mode)) + " |"
        for s, mode in enumerate(model.modes_)
    ]
    text = (
        f"k-modes on {result['source']} attributes ({', '.join(result['attributes'])}); "
        f"suggested k = {result['suggested_k']} (the knee of the cost curve)."
    )
    page.add("Customer segments", text, page.out / "elbow.png", "\n".join(rows))
    return model


def comparison(page: Page, runs: list[Run], split: Split, k: int) -> list[dict]:
    rows = [
        {
            "model": r.name,
            **score_recs(r.recs, split, k),
            "fit_s": r.fit_s,
            "recommend_s": r.recommend_s,
        }
        for r in runs
    ]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows)), 3.6))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r[f"map@{k}"] for r in rows], 0.4, label=f"MAP@{k}")
    ax.bar(x + 0.2, [r[f"hr@{k}"] for r in rows], 0.4, label=f"HR@{k}")
    ax.set_xticks(x, [r["model"] for r in rows], rotation=20)
    ax.legend()
    more = [f"recall_1@{k}", f"recall_30@{k}", f"overlap@{k}"]
    page.add(
        f"Models ({split.label}, {len(runs[0].users):,} test buyers)",
        markdown_table(rows, table_columns(k) + more),
        page.figure("models", fig),
    )
    return rows


def ranker_section(page: Page, runs: list[Run], split: Split) -> None:
    """For each two-stage ranker: its candidate recall per source on the test buyers, its
    labelled training weeks and boosters, and its feature importance (table and plot)."""
    from fashionrec.models.ranker import Ranker, candidate_recall, feature_importance

    for run in runs:
        if not isinstance(run.model, Ranker):
            continue
        recall = candidate_recall(run.model, split.test, run.users).to_dicts()
        recall_columns = ["candidates_per_user", "recall", "found", "purchases"]
        weeks = [w for w in run.model.info_["weeks"] if "users" in w]
        parts: list[str | Path] = [
            "Candidate recall: the share of the test buyers' purchases (distinct customer-article "
            "pairs) among each source's candidates and among their union, which caps what the "
            "ranker can find.",
            markdown_table(recall, recall_columns, "source"),
            "Labelled weeks (the newest validates the boosters' early stopping) and boosters:",
            markdown_table(weeks, ["users", "rows", "positives", "recall"], "start"),
            markdown_table(run.model.info_["boosters"], ["rounds", "valid_map"], "objective"),
        ]
        png = page.out / f"importance_{run.name}.png"
        importance = feature_importance(run.model, png, top=20)
        if importance.height:
            top = importance.head(20).to_dicts()
            parts += [
                "Feature importance (total gain of the boosters):",
                png,
                markdown_table(top, ["gain_share", "splits"], "feature"),
            ]
        page.add(f"Two-stage ranker: {run.name}", *parts)


def groups_section(
    page: Page, runs: list[Run], split: Split, k: int, customer_groups: dict[str, np.ndarray]
) -> None:
    """Per-category metrics (article groups) and per-segment / age-band metrics, with fairness."""
    parts: list[str | Path] = []
    for col in ("index_group_name", "garment_group_name"):
        if col not in split.test.articles.columns:
            continue
        for r in runs:
            rows = breakdown(r.recs, split, k, col)
            parts.append(
                f"{r.name} by {col} (recall within the category; share of the "
                f"recommendations):\n\n"
                + markdown_table(rows, ["relevant", f"recall@{k}", f"share@{k}"], "group")
            )
    if not parts:
        parts.append(
            "The articles table has no category columns (index_group_name, "
            "garment_group_name), so there is no per-category breakdown."
        )
    page.add("Per category", *parts)
    if not customer_groups:
        page.add(
            "Per customer group and fairness",
            "No customer grouping is available (no age and no segments).",
        )
        return
    _, truth = truth_of(split.test)
    popularity = split.train.item_popularity()
    pct = _percentile_rank(popularity)
    fair: list[str | Path] = [
        "Separation (parity of hit rate among buyers): HR@k per group of test buyers; the gap is "
        "max − min and the ratio min / max. Independence (parity of exposure): the mean "
        "popularity percentile of the articles each group is shown (100 = the best seller); a "
        "large gap means some groups are shown only best sellers."
    ]
    summary = []
    for gname, labels_all in customer_groups.items():
        for r in runs:
            labels = labels_all[r.users]
            hr = by_group(per_user(r.recs, truth, k)[f"hr@{k}"], labels)
            exposure = by_group(_mean_valid(pct, r.recs), labels)
            names, counts = np.unique(labels, return_counts=True)
            rows = [
                {"group": g, "users": int(n), f"hr@{k}": hr[g], "exposure_pct": exposure[g]}
                for g, n in zip(names.tolist(), counts.tolist(), strict=True)
            ]
            fair.append(
                f"{r.name} by {gname}:\n\n"
                + markdown_table(rows, ["users", f"hr@{k}", "exposure_pct"], "group")
            )
            big = [row for row in rows if row["users"] >= 20] or rows
            hrs = [row[f"hr@{k}"] for row in big]
            exp = [row["exposure_pct"] for row in big]
            summary.append(
                {
                    "model": f"{r.name} · {gname}",
                    "hr_gap": max(hrs) - min(hrs),
                    "hr_ratio": min(hrs) / max(hrs) if max(hrs) else float("nan"),
                    "exposure_gap": max(exp) - min(exp),
                    "groups": len(big),
                }
            )
    fair.insert(
        1,
        "Gaps over groups with at least 20 test buyers:\n\n"
        + markdown_table(summary, ["groups", "hr_gap", "hr_ratio", "exposure_gap"]),
    )
    page.add("Per customer group and fairness", *fair)


def popularity_bias(page: Page, runs: list[Run], split: Split, k: int) -> None:
    """Popularity, price and age of the recommended articles by rank, against the catalogue."""
    train = split.train
    popularity = train.item_popularity()
    first = train.transactions.group_by("item").agg(pl.col("t_dat").min())
    age = np.full(train.n_items, np.nan)
    start = pl.Series([split.test.min_date]).cast(pl.Int32)[0]  # days since 1970-01-01
    age[first["item"].to_numpy()] = start - first["t_dat"].cast(pl.Int32).to_numpy()
    measures = {
        "purchases in training (log10)": np.log10(1 + popularity),
        "article age (days)": age,
    }
    if "price" in train.transactions.columns:
        price = train.transactions.group_by("item").agg(pl.col("price").mean())
        mean_price = np.full(train.n_items, np.nan)
        mean_price[price["item"].to_numpy()] = price["price"].to_numpy()
        measures["mean price"] = mean_price
    sold = popularity > 0
    fig, axes = plt.subplots(1, len(measures), figsize=(4.6 * len(measures), 3.6))
    for ax, (title, values) in zip(np.atleast_1d(axes), measures.items(), strict=True):
        for r in runs:
            ax.plot(np.arange(1, k + 1), _by_rank(values, r.recs), marker=".", label=r.name)
        ax.axhline(np.nanmean(values[sold]), color="grey", ls="--", label="catalogue (sold)")
        ax.set(title=title, xlabel="rank position")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    page.add(
        "Popularity bias",
        "Mean over customers of the recommended article's popularity, age and price at each "
        "rank position, against the mean of the sold catalogue (dashed).",
        page.figure("popularity_bias", fig),
    )


def ablations(page: Page) -> None:
    files = sorted(RESULTS.glob("ablation_*.json"))
    if not files:
        return
    parts: list[str | Path] = []
    for path in files:
        rows = json.loads(path.read_text())
        rows = rows.get("rows", rows) if isinstance(rows, dict) else rows
        if not rows:
            continue
        key = next(iter(rows[0]))
        cols = [c for c in rows[0] if c != key and isinstance(rows[0][c], int | float)]
        parts.append(f"`{path.name}`:\n\n" + markdown_table(rows, cols, key))
    page.add("Sequence-model ablations", *parts)


def _percentile_rank(values: np.ndarray) -> np.ndarray:
    order = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return 100.0 * order / max(len(values) - 1, 1)


def _mean_valid(values: np.ndarray, recs: np.ndarray) -> np.ndarray:
    """Per row: the mean of values[item] over the row's items (NaN where a row is empty)."""
    v = np.where(recs >= 0, values[np.maximum(recs, 0)], np.nan)
    with np.errstate(invalid="ignore"):
        return np.nanmean(v, axis=1)


def _by_rank(values: np.ndarray, recs: np.ndarray) -> np.ndarray:
    v = np.where(recs >= 0, values[np.maximum(recs, 0)], np.nan)
    with np.errstate(invalid="ignore"):
        return np.nanmean(v, axis=0)


# ---- the whole report -----------------------------------------------------------------------


def build(
    dataset: Path,
    models: list[tuple[str, dict]],
    out: Path,
    *,
    test_days: int = 7,
    k: int = 12,
    k_values: list[int] | None = None,
    seed: int = 0,
) -> dict:
    """Write report.html, report.md and the PNGs to `out` (built in a temporary directory and
    renamed into place: a failed run leaves nothing); returns the comparison rows."""
    t0 = time.perf_counter()
    out = Path(out)
    check_own_directory(out, "report.html", "an earlier report")
    data = Dataset.load(dataset)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"{out}: {out.parent} is a file, not a directory") from None
    with new_directory(out) as tmp:
        rows = _build(data, dataset, models, tmp, test_days, k, k_values, seed)
    log.info("report written to %s in %.1fs", out / "report.html", time.perf_counter() - t0)
    return {
        "rows": rows,
        "html": str(out / "report.html"),
        "markdown": str(out / "report.md"),
        "dataset_hash": data.hash,
    }


def _build(
    data: Dataset,
    dataset: Path,
    models: list[tuple[str, dict]],
    out: Path,
    test_days: int,
    k: int,
    k_values: list[int] | None,
    seed: int,
) -> list[dict]:
    """The sections of the report, written to `out`; the comparison rows."""
    split = week(data, test_days)
    page = Page(out)
    overview(page, data)
    groups: dict[str, np.ndarray] = {}
    if "age" in data.customers.columns:
        groups["age band"] = data.customer_groups("age_band")
    seg = segments_section(page, split.train, k_values or list(range(2, 9)), seed)
    groups["segment"] = seg.labels_.astype(str)
    runs = [fit_recommend(name, params, split, k) for name, params in models]
    rows = comparison(page, runs, split, k)
    ranker_section(page, runs, split)
    groups_section(page, runs, split, k, groups)
    popularity_bias(page, runs, split, k)
    ablations(page)
    page.write(f"fashionrec report: {dataset}")
    return rows
