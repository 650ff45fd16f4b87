"""How high can MAP@12 go on the synthetic H&M data? An oracle that knows what the generator hid.

`fashionrec.data.synthetic` draws each purchase from hidden state: the customer's segment, two
favourite departments, repeat rate and basket size, every article's weekly mass, and the
segment's weekly taste over departments. No model sees these; the oracle reads them back from
`synthetic.world` (same scale and seed as the tables) and ranks the articles of each held-out
buyer by their expected number of purchases in the held-out week under the generator's own
rules (`chunk_transactions`):

- a basket's first row re-buys an earlier row of the customer with probability `repeat` (the
  row `floor(E * U^3)` back from the newest of E earlier rows), else it is drawn from a
  favourite department (0.30) or from the segment's taste over departments; within a department
  articles are drawn in proportion to their weekly mass;
- later rows repeat, copy the first row's department (0.10) or another colour of its product
  (0.17), or are drawn like the first one; a visit within 14 days of the previous one re-buys
  its articles (0.11 of rows the next day, 0.93 times that per further day of the gap);
- a fresh draw never gives an article the customer bought before (the generator draws it again
  from its department, so its chance goes to the other articles).

Ranking by this expectation is what a model that learned the generator perfectly would do, so
its MAP@12 estimates the ceiling (it leaves out only the copies of earlier rows within the
held-out week itself). The variants replace one hidden part at a time by what the training
data shows, then all four (the segment stays as generated in every row): `observed mass` (each
article's sales in the last 7 days, the segments' departments in the last 28), `favourites from
history` (the exact posterior of the two favourite departments given the department of each
purchase day's first row), `mean repeat rate`, `observed basket` (rows per purchase day).
Printed and written (benchmarks/results/synthetic_ceiling_<name>.json)
next to `repurchase`, the best baseline, fitted on the same split:

    .venv/bin/python benchmarks/synthetic_ceiling.py build/scale-0.1/raw build/scale-0.1/dataset
    .venv/bin/python benchmarks/synthetic_ceiling.py build/scale-1/tables build/scale-1/dataset
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import numpy as np
import polars as pl

from fashionrec import evaluate
from fashionrec.atomic import write_text
from fashionrec.data import synthetic
from fashionrec.data.dataset import Dataset
from fashionrec.data.split import week
from fashionrec.metrics import evaluate_recs

log = logging.getLogger("synthetic_ceiling")
K = 12
P_FAV_ANCHOR = synthetic.P_FAVOURITE_ANCHOR
P_DUP, P_COLOUR, P_DEPT, P_FAV = (synthetic.P_DUP, synthetic.P_COLOUR, synthetic.P_DEPT,
                                  synthetic.P_FAVOURITE)  # fmt: skip
POOL_SEGMENT, POOL_FAVOURITE = 100, 30  # fresh candidates per segment / favourite department


class Ids(NamedTuple):
    """Index maps between the generator and an ingested Dataset of its tables."""

    gen_of: np.ndarray  # data user -> generator customer
    item_of: np.ndarray  # generator position -> data item
    pos_of: np.ndarray  # data item -> generator position


def ids(w: synthetic.World, data: Dataset) -> Ids:
    """The maps of `w`'s customers and articles to `data`'s indices (-1: absent)."""
    gen_of = np.full(data.n_users, -1, np.int64)
    idx = data.user_ids.to_index(w.customers.table["customer_id"])
    gen_of[idx[idx >= 0]] = np.flatnonzero(idx >= 0)
    item_of = data.item_ids.to_index(
        w.articles["article_id"].cast(pl.String).gather(w.catalogue.order)
    ).astype(np.int64)
    pos_of = np.full(data.n_items, -1, np.int64)
    pos_of[item_of[item_of >= 0]] = np.flatnonzero(item_of >= 0)
    return Ids(gen_of, item_of, pos_of)


def article_table(cat: synthetic.Catalogue, m: np.ndarray) -> pl.DataFrame:
    """Per article position with mass `m`: department, share of its department's mass (`mm`:
    a draw from the department) and `gg`, the chance per unit of department mass that a colour
    row (another colour of a first row from the department, by mass) lands on it."""
    starts = np.unique(cat.prod_lo)
    of_prod = np.searchsorted(starts, cat.prod_lo)
    others = np.add.reduceat(m, starts)[of_prod] - m  # the other colours' mass
    t = np.where(others > 0, m / np.where(others > 0, others, 1), 0.0)
    t_others = np.add.reduceat(t, starts)[of_prod] - t
    single = np.bincount(cat.dept, np.where(others > 0, 0.0, m), minlength=cat.n_dept)
    md = np.maximum(np.add.reduceat(m, cat.dept_bounds[:-1])[cat.dept], 1e-300)
    mm = m / md
    gg = m * t_others / md + single[cat.dept] / md * mm  # no other colour: a department draw
    frame = pl.DataFrame({"pos": np.arange(cat.n), "dept": cat.dept, "mm": mm, "gg": gg})
    return frame.filter(pl.col("mm") > 0)


def true_week(w: synthetic.World, wk: int) -> tuple[np.ndarray, np.ndarray]:
    """The generator's article mass in week `wk` and the segments' taste over departments."""
    cat = w.catalogue
    m = np.diff(cat.cum[wk * (cat.n + 1) : (wk + 1) * (cat.n + 1)])
    rows = np.arange(len(synthetic.SEGMENTS)) * synthetic.N_WEEKS + wk
    taste = np.diff(cat.dept_cum.reshape(-1, cat.n_dept + 1)[rows], axis=1)
    return m, taste


def observed_week(
    w: synthetic.World, train: Dataset, pos_of: np.ndarray, gen_of: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """What the training data shows instead: each article's sales in the last 7 days, and each
    segment's share of the departments' sales in the last 28 days (segment as generated)."""
    cat, tx = w.catalogue, train.transactions
    end = train.max_date
    last7 = tx.filter(pl.col("t_dat") > end - timedelta(days=7))["item"].to_numpy()
    m = np.bincount(pos_of[last7], minlength=cat.n).astype(float)
    last28 = tx.filter(pl.col("t_dat") > end - timedelta(days=28))
    seg = w.customers.segment[gen_of[last28["user"].to_numpy()]]
    dept = cat.dept[pos_of[last28["item"].to_numpy()]]
    taste = np.zeros((len(synthetic.SEGMENTS), cat.n_dept))
    np.add.at(taste, (seg, dept), 1.0)
    return m, taste / np.maximum(taste.sum(axis=1, keepdims=True), 1)


def customers(
    w: synthetic.World, tx: pl.DataFrame, buyers: np.ndarray, gen_of: np.ndarray,
    estimate: set[str],
) -> pl.DataFrame:  # fmt: skip
    """Per buyer: segment, repeat rate and basket size (as generated, or with `estimate` as the
    training data `tx` shows them) and the last purchase day."""
    cust = w.customers
    g = gen_of[buyers]
    frame = pl.DataFrame(
        {
            "user": buyers.astype(np.int32),
            "seg": cust.segment[g],
            "r": cust.repeat[g],
            "b": cust.basket[g],
        }
    )
    per_user = tx.group_by("user").agg(
        last=(pl.col("t_dat").max() - pl.lit(synthetic.START)).dt.total_days(),
        rows_per_day=pl.len() / pl.col("t_dat").n_unique(),
    )
    frame = frame.join(per_user, on="user", how="left")
    if "repeat" in estimate:  # the population mean of the Beta distribution
        a, b = synthetic.REPEAT_BETA
        frame = frame.with_columns(r=pl.lit(a / (a + b)))
    if "basket" in estimate:  # rows per purchase day, else the population mean
        frame = frame.with_columns(b=pl.col("rows_per_day").fill_null(cust.basket.mean()))
    return frame.with_columns(
        b=pl.col("b").clip(upper_bound=80.0),
        r=pl.when(pl.col("last").is_null()).then(0.0).otherwise(pl.col("r")),  # nothing to repeat
    )


def mean_taste(cat: synthetic.Catalogue) -> pl.DataFrame:
    """(seg, dept, sbar): each segment's taste over departments, averaged over the weeks."""
    n_seg = len(synthetic.SEGMENTS)
    taste = np.diff(cat.dept_cum.reshape(-1, cat.n_dept + 1), axis=1)
    sbar = taste.reshape(n_seg, synthetic.N_WEEKS, cat.n_dept).mean(axis=1)
    return pl.DataFrame(
        {
            "seg": np.repeat(np.arange(n_seg), cat.n_dept),
            "dept": np.tile(np.arange(cat.n_dept), n_seg),
            "sbar": sbar.ravel(),
        }
    )


def favourites(
    w: synthetic.World, tx: pl.DataFrame, users: pl.DataFrame, gen_of: np.ndarray,
    pos_of: np.ndarray, seg_taste: pl.DataFrame, estimate: bool,
) -> tuple[pl.DataFrame, pl.DataFrame]:  # fmt: skip
    """(user, dept, fav): the expected number of the customer's two favourite departments that
    are `dept` (as generated: 1 or 2), for the departments named; and (user, kappa): for every
    other department d, fav = kappa * (the segment's mean taste for d).

    With `estimate`, the posterior given the departments of the customer's first rows of each
    purchase day in `tx` (a basket's first row comes from a favourite with probability 0.30,
    else from the segment's taste `S`; the favourites were two draws from `S`): for the ordered
    pair (a, b) the weight is S(a) S(b) prod_v P(d_v | a, b), which sums in closed form over
    all pairs (`e1`: one slot, `e2`: both slots on the department; departments not bought have
    e1 = S)."""
    cust, cat = w.customers, w.catalogue
    if not estimate:
        g = gen_of[users["user"].to_numpy()]
        fav = (
            pl.DataFrame(
                {
                    "user": np.repeat(users["user"].to_numpy(), 2),
                    "dept": cust.favourite[g].ravel(),
                }
            )
            .group_by("user", "dept")
            .agg(fav=pl.len().cast(pl.Float64))
        )
        return fav, users.select("user", kappa=pl.lit(0.0))
    phi = P_FAV_ANCHOR
    firsts = (
        tx.group_by("user", "t_dat", maintain_order=True)
        .agg(pl.col("item").first())
        .with_columns(dept=pl.col("item").map_batches(lambda s: pl.Series(cat.dept[pos_of[s]])))
        .group_by("user", "dept")
        .agg(c=pl.len())
        .join(users.select("user", "seg"), on="user")
        .join(seg_taste, on=["seg", "dept"])
        .with_columns(base=(1 - phi) * pl.col("sbar"))
        .with_columns(
            e1=pl.col("sbar") * (1 + phi / 2 / pl.col("base")) ** pl.col("c"),
            e2=pl.col("sbar") ** 2 * (1 + phi / pl.col("base")) ** pl.col("c"),
        )
    )
    # Z = (sum e1)^2 - sum e1^2 + sum e2; the departments not bought add S^2 to both sums
    per_user = (
        firsts.group_by("user")
        .agg(
            s_seen=pl.col("sbar").sum(),
            e1=pl.col("e1").sum(),
            e1_sq=(pl.col("e1") ** 2).sum(),
            e2=pl.col("e2").sum(),
        )
        .join(users.select("user"), on="user", how="right")
        .with_columns(pl.col("s_seen", "e1", "e1_sq", "e2").fill_null(0.0))
        .with_columns(big_e1=1 - pl.col("s_seen") + pl.col("e1"))  # not bought: e1 = S
        .with_columns(z=pl.col("big_e1") ** 2 - pl.col("e1_sq") + pl.col("e2"))
        .with_columns(kappa=2 * pl.col("big_e1") / pl.col("z"))
    )
    fav = firsts.join(per_user.select("user", "big_e1", "z"), on="user").select(
        "user",
        "dept",
        fav=2 * (pl.col("e1") * (pl.col("big_e1") - pl.col("e1")) + pl.col("e2")) / pl.col("z"),
    )
    return fav, per_user.select("user", "kappa")


def history(tx: pl.DataFrame, pos_of: np.ndarray) -> pl.DataFrame:
    """Per customer of `tx` and article bought before: the chance that a repeat row copies one
    of its rows (the row floor(E * U^3) back from the newest of E) and its share of the last
    visit."""
    hist = (
        tx.select("t_dat", "user", "item")
        .with_columns(
            back=pl.int_range(pl.len()).reverse().over("user"),
            rows=pl.len().over("user"),
            in_last=(pl.col("t_dat") == pl.col("t_dat").max().over("user")).cast(pl.Float64),
        )
        .with_columns(
            p_rep=((pl.col("back") + 1) / pl.col("rows")) ** (1 / 3)
            - (pl.col("back") / pl.col("rows")) ** (1 / 3),
        )
    )
    return (
        hist.group_by("user", "item")
        .agg(pl.col("p_rep").sum(), pl.col("in_last").sum())
        .with_columns(
            p_last=pl.col("in_last") / pl.col("in_last").sum().over("user"),
            pos=pl.col("item").map_batches(lambda s: pl.Series(pos_of[s.to_numpy()])),
        )
        .select("user", "pos", "p_rep", "p_last")
    )


def oracle(
    w: synthetic.World, maps: Ids, train: Dataset, buyers: np.ndarray, estimate: set[str]
) -> np.ndarray:
    """Top-K data item indices for each buyer (rows of `buyers`), -1 padded. `estimate` names
    the hidden parts replaced by what the training data shows: `mass` (article and segment
    sales), `favourite`, `repeat`, `basket`."""
    cust, cat = w.customers, w.catalogue
    gen_of, item_of, pos_of = maps
    tx = train.transactions.filter(pl.col("user").is_in(pl.Series(buyers).implode()))

    # the held-out days, their generator weeks and the chance a visit falls on each
    first = (train.max_date - synthetic.START).days + 1
    days = np.arange(first, first + 7)
    days = days[days < synthetic.N_DAYS]
    day_weight = cust.volume[days] / cust.volume[days].sum()
    if "mass" in estimate:
        weeks = [(1.0, observed_week(w, train, pos_of, gen_of))]
    else:
        wks = days // 7
        weeks = [(float(day_weight[wks == k].sum()), true_week(w, int(k))) for k in np.unique(wks)]

    users = customers(w, tx, buyers, gen_of, estimate)
    # a visit within SHORT_DAYS of the previous one re-buys from it, less the longer the gap
    last = users["last"].fill_null(-(10**6)).to_numpy()
    gap = days[None, :] - last[:, None]
    decay = synthetic.SHORT_DECAY ** (gap.clip(1, None) - 1.0)
    near = np.where(gap <= synthetic.SHORT_DAYS, decay, 0.0) @ day_weight
    users = users.with_columns(q=pl.Series(synthetic.P_SHORT * near))
    hist = history(tx, pos_of)
    sbar = mean_taste(cat)
    fav, kappa = favourites(w, tx, users, gen_of, pos_of, sbar, "favourite" in estimate)
    users = users.join(kappa, on="user")
    top_fav = (  # the departments whose best articles are candidates
        fav.sort(["user", "fav"], descending=[False, True]).group_by("user").head(3)
    )

    # candidates: the articles bought before, and per week the best articles of the segment's
    # taste and of each favourite department (by mass and by colour-row chance)
    parts = [hist.select("user", "pos")]
    tables = []
    for weight, (m, taste) in weeks:
        arts = article_table(cat, m)
        seg_taste = pl.DataFrame(
            {
                "seg": np.repeat(np.arange(taste.shape[0]), taste.shape[1]),
                "dept": np.tile(np.arange(taste.shape[1]), taste.shape[0]),
                "s": taste.ravel(),
            }
        )
        for col in ("mm", "gg"):
            seg_best = (
                arts.join(seg_taste, on="dept")
                .sort(pl.col("s") * pl.col(col), descending=True)
                .group_by("seg", maintain_order=True)
                .head(POOL_SEGMENT)
            )
            parts.append(users.join(seg_best, on="seg").select("user", "pos"))
            fav_best = arts.sort(col, descending=True).group_by("dept", maintain_order=True)
            fav_best = fav_best.head(POOL_FAVOURITE)
            parts.append(top_fav.join(fav_best, on="dept").select("user", "pos"))
        tables.append((weight, arts.drop("dept"), seg_taste))

    cand = (
        pl.concat(parts)
        .unique()
        .join(users, on="user")
        .join(hist.with_columns(new=pl.lit(0.0)), on=["user", "pos"], how="left")
        .with_columns(
            pl.col("p_rep", "p_last").fill_null(0.0),
            pl.col("new").fill_null(1.0),  # 0: bought before, so never a fresh draw
            dept=pl.col("pos").map_batches(lambda s: pl.Series(cat.dept[s.to_numpy()])),
        )
        .join(fav, on=["user", "dept"], how="left")
        .join(sbar, on=["seg", "dept"], how="left")
        .with_columns(pl.col("fav").fill_null(pl.col("kappa") * pl.col("sbar")))
    )
    # expected rows of the article per visit: first row + (basket - 1) later rows
    r, b, fav = pl.col("r"), pl.col("b"), pl.col("fav")
    fresh = pl.lit(0.0)
    for i, (weight, arts, seg_taste) in enumerate(tables):
        cand = cand.join(arts.rename({"mm": f"mm{i}", "gg": f"gg{i}"}), on="pos", how="left")
        cand = cand.join(seg_taste.rename({"s": f"s{i}"}), on=["seg", "dept"], how="left")
        s = pl.col(f"s{i}").fill_null(0.0)
        mm, gg = pl.col(f"mm{i}").fill_null(0.0), pl.col(f"gg{i}").fill_null(0.0)
        first = (P_FAV_ANCHOR / 2) * fav + (1 - P_FAV_ANCHOR - r) * s  # first row's department
        later = (P_FAV / 2 + (P_COLOUR + P_DEPT) / 2 * r) * fav * mm  # (a repeated first row
        later += (1 - P_DUP - P_COLOUR - P_DEPT - P_FAV - r) * s * mm  # has no department)
        later += first * (P_DEPT * mm + P_COLOUR * gg)
        fresh = fresh + weight * (first * mm + (b - 1) * later)
    q = pl.col("q")
    own = b * r * pl.col("p_rep") + pl.col("new") * fresh
    score = (1 - q) * own + q * b * pl.col("p_last")
    top = (
        cand.with_columns(score=score)
        .sort(["user", "score", "pos"], descending=[False, True, False])
        .group_by("user", maintain_order=True)
        .head(K)
        .with_columns(rank=pl.int_range(pl.len()).over("user"))
    )
    recs = np.full((len(buyers), K), -1, np.int64)
    recs[np.searchsorted(buyers, top["user"].to_numpy()), top["rank"].to_numpy()] = item_of[
        top["pos"].to_numpy()
    ]
    return recs


VARIANTS = {
    "oracle": set(),
    "oracle, observed mass": {"mass"},
    "oracle, favourites from history": {"favourite"},
    "oracle, mean repeat rate": {"repeat"},
    "oracle, observed basket": {"basket"},
    "oracle, all four observed": {"mass", "favourite", "repeat", "basket"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tables", type=Path, help="the generator's output (with generator.json)")
    parser.add_argument("dataset", type=Path, help="those tables ingested")
    parser.add_argument("--holdout", type=int, default=7, help="held-out days (the last ones)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not (args.tables / "generator.json").exists():
        parser.error(f"{args.tables}: no generator.json (the output of `fashionrec generate`)")
    gen = json.loads((args.tables / "generator.json").read_text())
    source = gen["articles_source"]
    w = synthetic.world(gen["scale"], gen["seed"], None if source == "synthetic" else Path(source))
    data = Dataset.load(args.dataset)
    split = week(data, args.holdout)
    buyers, truth = evaluate.truth_of(split.test)
    rows = [evaluate.run_model(name, {}, split, K) for name in ("decay", "repurchase")]
    base = max(row[f"map@{K}"] for row in rows)
    maps = ids(w, data)
    for name, estimate in VARIANTS.items():
        t0 = time.perf_counter()
        recs = oracle(w, maps, split.train, buyers, estimate)
        row = {"model": name, **evaluate_recs(recs, truth, K)}
        row |= {"recommend_s": time.perf_counter() - t0, "x_best_baseline": row[f"map@{K}"] / base}
        log.info(
            "%s: map@%d %.4f (%.3fx repurchase)", name, K, row[f"map@{K}"], row["x_best_baseline"]
        )
        rows.append(row)
    cols = [f"map@{K}", f"hr@{K}", f"recall@{K}", f"ndcg@{K}", "x_best_baseline"]
    print(evaluate.markdown_table(rows, cols))
    name = args.dataset.parent.name if args.dataset.name == "dataset" else args.dataset.name
    out = args.out or Path(__file__).parent / "results" / f"synthetic_ceiling_{name}.json"
    result = {"tables": str(args.tables), "dataset": str(args.dataset), "test": split.label,
              "buyers": len(buyers), "generator": gen, "rows": rows}  # fmt: skip
    write_text(out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
