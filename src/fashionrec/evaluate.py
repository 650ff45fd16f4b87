"""Run models on splits and collect every metric into table rows (mean, 95% CI over folds)."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy import stats

from fashionrec.data.dataset import Dataset
from fashionrec.data.ingest import pad_hm_ids
from fashionrec.data.split import Split
from fashionrec.errors import ConfigError, DataError
from fashionrec.metrics import by_group, by_item_group, evaluate_recs, per_user
from fashionrec.models import registry

log = logging.getLogger(__name__)

TABLE_METRICS = (
    "map",
    "hr",
    "precision",
    "recall",
    "ndcg",
    "coverage",
    "personalization",
    "novelty",
)


def table_columns(k: int) -> list[str]:
    """The columns of the printed results table."""
    return [f"{m}@{k}" for m in TABLE_METRICS] + ["fit_s", "recommend_s"]


def truth_of(test: Dataset) -> tuple[np.ndarray, sp.csr_matrix]:
    """Test buyers (sorted user indices) and their (n_buyers, n_items) binary purchase matrix."""
    users = test.buyers()
    return users, test.user_items(binary=True)[users]


def score_recs(recs: np.ndarray, split: Split, k: int) -> dict[str, float]:
    """Every metric of `recs` (one row per test buyer, in `truth_of` order) on the split."""
    _, truth = truth_of(split.test)
    return evaluate_recs(recs, truth, k, item_popularity=split.train.item_user_share())


def breakdown(recs: np.ndarray, split: Split, k: int, by: str) -> list[dict[str, Any]]:
    """Metrics per group: a customers column (or `age_band`) groups the test buyers; an articles
    column groups the test purchases (recall within the group and share of recommendations)."""
    users, truth = truth_of(split.test)
    data = split.test
    if by == "age_band" or by in data.customers.columns:
        labels = data.customer_groups(by)[users]
        per = per_user(recs, truth, k)
        names, counts = np.unique(labels, return_counts=True)
        means = {
            f"{m}@{k}": by_group(per[f"{m}@{k}"], labels) for m in ("map", "hr", "recall", "ndcg")
        }
        return [
            {"group": g, "users": int(n)} | {key: means[key][g] for key in means}
            for g, n in zip(names.tolist(), counts.tolist(), strict=True)
        ]
    if by in data.articles.columns:
        groups = by_item_group(recs, truth, data.article_groups(by))
        return [
            {
                "group": g,
                "relevant": d["relevant"],
                f"recall@{k}": d["recall"],
                f"share@{k}": d["share"],
            }
            for g, d in groups.items()
        ]
    raise ConfigError(
        f"--by {by!r} is not a customers or articles column; customers: "
        f"{', '.join(c for c in data.customers.columns if c != 'user')}"
        f"{', age_band' if 'age' in data.customers.columns else ''}; "
        f"articles: {', '.join(c for c in data.articles.columns if c != 'item')}"
    )


@dataclass(frozen=True)
class Run:
    """One model fitted on a split and its recommendations for the split's test buyers."""

    name: str
    model: Any
    users: np.ndarray
    recs: np.ndarray
    fit_s: float
    recommend_s: float


def fit_recommend(
    name: str, params: dict[str, Any], split: Split, k: int, *, exclude_seen: bool = False
) -> Run:
    """Fit `name` on the split's training data and recommend k articles to every test buyer."""
    model = registry.create(name, **params)
    t0 = time.perf_counter()
    model.fit(split.train)
    t1 = time.perf_counter()
    users, _ = truth_of(split.test)
    recs = model.recommend(users, k, exclude_seen=exclude_seen)
    return Run(name, model, users, recs.items, t1 - t0, time.perf_counter() - t1)


def run_model(
    name: str,
    params: dict[str, Any],
    split: Split,
    k: int,
    *,
    exclude_seen: bool = False,
    by: str | None = None,
) -> dict[str, Any]:
    """Fit `name` on the split's training data, recommend for the test buyers, score them."""
    run = fit_recommend(name, params, split, k, exclude_seen=exclude_seen)
    row = {
        "model": name,
        **score_recs(run.recs, split, k),
        "fit_s": run.fit_s,
        "recommend_s": run.recommend_s,
        "users": len(run.users),
    }
    if by is not None:
        row["by"] = breakdown(run.recs, split, k, by)
    log.info("%s on %s: map@%d %.4f", name, split.label, k, row[f"map@{k}"])
    return row


def evaluate(
    models: list[tuple[str, dict[str, Any]]],
    splits: list[Split],
    k: int = 12,
    *,
    exclude_seen: bool = False,
    by: str | None = None,
) -> list[dict[str, Any]]:
    """One row per model: each metric averaged over the splits (folds), with a 95% CI over folds;
    with `by`, also the per-group metrics (averaged over folds) under the key "by"."""
    rows = []
    for name, params in models:
        folds = [run_model(name, params, s, k, exclude_seen=exclude_seen, by=by) for s in splits]
        row = summarize(folds) | {
            "model": name,
            "folds": len(folds),
            "test": [s.label for s in splits],
        }
        if by is not None:
            row["by"] = _mean_groups([f["by"] for f in folds])
        rows.append(row)
    return rows


def _mean_groups(folds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Average per-group rows over folds (a group missing from a fold is absent there)."""
    frame = pl.DataFrame([r for fold in folds for r in fold])
    return frame.group_by("group").mean().sort("group").to_dicts()


def summarize(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of every numeric key over folds, and `<key>_ci95`: the t-interval half-width."""
    out: dict[str, Any] = {}
    n = len(folds)
    for key, value in folds[0].items():
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        values = np.array([f[key] for f in folds], dtype=np.float64)
        out[key] = float(values.mean())
        if n > 1:
            half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
            out[f"{key}_ci95"] = float(half)
    return out


def markdown_table(rows: list[dict[str, Any]], columns: list[str], key: str = "model") -> str:
    """A markdown table of `rows`; a value with a CI prints as `mean ± half-width`."""

    def cell(row: dict[str, Any], col: str) -> str:
        value = row.get(col)
        if value is None:
            return ""
        if col in ("users", "relevant") or isinstance(value, int):
            return f"{round(value):,}"
        digits = 2 if col.endswith("_s") else 4
        text = f"{value:.{digits}f}"
        ci = row.get(f"{col}_ci95")
        return f"{text} ± {ci:.{digits}f}" if ci is not None else text

    lines = [f"| {key} | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += ["| " + " | ".join([str(r[key])] + [cell(r, c) for c in columns]) + " |" for r in rows]
    return "\n".join(lines)


def read_submission(path: str | Path, data: Dataset, users: np.ndarray, k: int) -> np.ndarray:
    """(len(users), k) item indices from a Kaggle submission (`customer_id,prediction`), -1 where a
    customer is missing or has fewer than k known articles."""
    path = Path(path)
    if not path.is_file():
        raise DataError("is a directory" if path.is_dir() else "file does not exist", file=path)
    try:
        sub = pl.read_csv(path, infer_schema=False)
    except (pl.exceptions.ComputeError, pl.exceptions.NoDataError, OSError) as exc:
        from fashionrec.data.ingest import Source, parse_error

        raise parse_error(Source("submission", path, ","), exc) from exc
    for col in ("customer_id", "prediction"):
        if col not in sub.columns:
            raise DataError("required column is missing", file=path, column=col, row=0)
    sub = sub.with_row_index("_row", offset=1)
    dup = sub.filter(~pl.col("customer_id").is_first_distinct())
    if dup.height:
        raise DataError(
            f"customer {dup['customer_id'][0]!r} appears twice",
            file=path,
            column="customer_id",
            row=int(dup["_row"][0]),
        )
    long = (
        sub.with_columns(pl.col("prediction").fill_null("").str.split(" "))
        .explode("prediction")
        .filter(pl.col("prediction") != "")
        .with_columns(pl.int_range(pl.len()).over("customer_id").alias("rank"))
    )
    long = long.filter(pl.col("rank") < k)
    known = data.user_ids.to_index(sub["customer_id"].fill_null("")) >= 0
    if sub.height == 0 or not known.any():  # the wrong file, or ids in another format
        example = f" (e.g. {sub['customer_id'][0]!r})" if sub.height else ""
        raise DataError(
            f"none of its {sub.height:,} rows names a customer of the dataset{example}",
            file=path,
            column="customer_id",
        )
    user = data.user_ids.to_index(long["customer_id"])
    item = _article_index(data, long["prediction"])
    unknown = int((item < 0).sum())
    if unknown:
        log.warning("%s: %d predicted article ids are not in the catalogue", path, unknown)
    row_of = np.full(data.n_users + 1, -1, dtype=np.int64)
    row_of[users] = np.arange(len(users))
    rows = row_of[user]  # user -1 indexes the sentinel slot, which stays -1
    keep = (rows >= 0) & (item >= 0)
    recs = np.full((len(users), k), -1, dtype=np.int32)
    # unknown articles are dropped, so a row's known predictions close up to the left
    ranks = (
        pl.DataFrame({"r": rows[keep]})
        .with_columns(pl.int_range(pl.len()).over("r").alias("p"))["p"]
        .to_numpy()
    )
    recs[rows[keep], ranks] = item[keep]
    missing = len(users) - len(np.unique(rows[rows >= 0]))
    if missing:
        log.warning(
            "%s: %d of %d test customers have no row; they count as misses",
            path,
            missing,
            len(users),
        )
    return recs


def _article_index(data: Dataset, ids: pl.Series) -> np.ndarray:
    """Article indices for submitted ids, zero-padding numeric H&M ids as ingest does."""
    if data.manifest.get("id_format") == "hm":
        ids = pl.select(pad_hm_ids(pl.lit(ids))).to_series()
    return data.item_ids.to_index(ids)
