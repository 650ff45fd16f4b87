"""Two-stage recommender: candidates from several cheap sources, ranked by LightGBM.

The design of the H&M Kaggle winners (and of most production recommenders):

1. Candidates. Each source is a function of fitted source models and users -> a ranked, scored
   list per user: the customer's own articles (`repurchase`), co-purchases of their recent
   articles (`itemcf`), other colours of the products they bought (`variants`, same
   product_code), their segment's trending articles (`segments`), the trending articles of their
   favourite departments (`departments`), overall time-decayed popularity (`decay`), ALS
   embeddings (`als`), customers like them (`usercf`) and, when given, a sequence model
   (`sasrec`...).
   The union of the lists is the candidate set; `candidate_recall` measures how much of the next
   week's purchases it holds.
2. Features (polars group-bys at the cutoff, numpy gathers per candidate): customer (recency,
   frequency, spend, channel, age, segment), article (sales in the last 1/7/28 days, trend,
   price vs its own mean, age, categories), customer x article (times bought, days since bought
   the article / product / department, CF, embedding and content scores, rank in each source).
   Visits (a customer's shopping days, 1 = the last) give the features that lead the importance
   tables: visits since the article was last bought (`p_vlast`), visits among the last 5 / 10
   with it (`p_v5`, `p_v10`), its share of all visits and of the last 5 (`p_visit_share`,
   `p_recent_share`), and days since the last visit over the customer's mean gap between visits
   (`u_visit_due`: above 1, a visit is due).
3. Ranking. LightGBM `lambdarank`, `rank_xendcg` and/or `binary` boosters (by default an
   ensemble of three: lambdarank, binary, binary)
   trained on the candidates of earlier weeks labelled by the following week's purchases,
   early-stopped on the last training week, then refit with the best iteration count on all of
   them. The sources and features are then re-fitted on all the training data to serve.

Everything happens inside `fit(data)` with `data` only: the test week is never seen. Customers
without training purchases get the time-decayed popularity list (`decay`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl
import scipy.sparse as sp
from tqdm import tqdm

from fashionrec.atomic import replace_with
from fashionrec.data.dataset import Dataset
from fashionrec.errors import ConfigError
from fashionrec.metrics import hit_matrix
from fashionrec.models import registry
from fashionrec.models.base import (
    HistoryAware,
    Recs,
    as_csr,
    as_csr_lists,
    batched,
    extra_matrix,
    fill,
    first_k,
    lookup,
    row_positions,
    row_top_k,
    rows_of,
    seen_with,
)
from fashionrec.models.compose import pack, pack_values, parse_params, unpack, unpack_values

log = logging.getLogger(__name__)

OBJECTIVES = ("lambdarank", "rank_xendcg", "binary")
RANKING = ("lambdarank", "rank_xendcg")  # per-customer objectives: a customer is a query group
SOURCES = ("repurchase", "itemcf", "variants", "departments", "segments", "decay", "als", "usercf")
DEFAULT_SOURCES = "repurchase:150,itemcf:40,variants:20,segments:20,decay:30,als:30"
SEQUENCE_SOURCES = tuple(  # the registered sequence models, found without importing torch
    name for name, path in registry.MODELS.items() if path.startswith("fashionrec.models.sequence:")
)
# The registered models behind the sources and features, with the ranker's default parameters
# (cheaper than the stand-alone defaults: they are fitted once per training week).
PART_PARAMS: dict[str, dict[str, Any]] = {
    "repurchase": {},
    "decay": {},
    "itemcf": {},
    "als": {"factors": 64, "iterations": 10},
    "segments": {},
    "content": {},
}
CATEGORY_COLUMNS = (
    "product_type_no",
    "product_group_name",
    "graphical_appearance_no",
    "colour_group_code",
    "perceived_colour_value_id",
    "perceived_colour_master_id",
    "department_no",
    "index_code",
    "index_group_no",
    "section_no",
    "garment_group_no",
)
CUSTOMER_SKIP = ("user", "customer_id", "postal_code", "age")
MAX_LEVELS = 64  # customers columns with more values are not used as features
BATCH = 5_000  # users per batch of candidates and features (about 1M candidate rows)
DAYS_7, DAYS_28 = 7, 28
# Stage.rows: the source model and field that hold each per-customer matrix
CUSTOMER_MATRICES = {
    "own": ("repurchase", "own_"),
    "history": ("itemcf", "history_"),
    "seen": ("itemcf", "seen_"),
}
PRIOR_DAYS = 2.0  # dep_affinity: purchase days of the segment's taste added to the customer's


def parse_sources(text: str) -> dict[str, int]:
    """'repurchase:50,itemcf:40' -> {'repurchase': 50, 'itemcf': 40}; a source without a count
    takes 30. Sources are those in SOURCES or a registered sequence model (SEQUENCE_SOURCES)."""
    out: dict[str, int] = {}
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        name, _, count = item.partition(":")
        try:
            out[name.strip()] = int(count) if count else 30
        except ValueError:
            raise ConfigError(f"ranker: bad source count in {item!r}") from None
    unknown = [s for s in out if s not in SOURCES and s not in SEQUENCE_SOURCES]
    if unknown or not out:
        raise ConfigError(
            f"ranker: unknown sources {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(SOURCES)} or a sequence model ({', '.join(SEQUENCE_SOURCES)})"
        )
    if min(out.values()) < 1:
        raise ConfigError("ranker: candidate counts must be at least 1")
    return out


# ---------------------------------------------------------------------------------------------
# Gathers at (user, item) pairs: sparse scores here, sorted key tables (user x article, user x
# product, user x department) by `base.lookup`.


def csr_values(mat: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """mat[rows[j], cols[j]] for every j (0 where not stored), vectorised."""
    mat = sp.csr_matrix(mat)
    mat.sort_indices()
    lengths = np.diff(mat.indptr)
    n_cols = np.int64(mat.shape[1])
    keys = np.repeat(np.arange(mat.shape[0], dtype=np.int64), lengths) * n_cols + mat.indices
    pos = lookup(keys, rows.astype(np.int64) * n_cols + cols)
    return _gather(mat.data, pos, 0.0)


def _gather(values: np.ndarray, pos: np.ndarray, missing: float = np.nan) -> np.ndarray:
    """values[pos] as float32, `missing` where pos is -1."""
    if not len(values):
        return np.full(len(pos), missing, np.float32)
    return np.where(pos >= 0, values[np.maximum(pos, 0)], missing).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Feature context: everything the features need, computed at the cutoff (the end of `data`).


def _codes(series: pl.Series) -> np.ndarray:
    """Dense integer codes of a column's values (sorted order, so they are stable), -1 for null."""
    codes = series.cast(pl.String).rank("dense").cast(pl.Float64).fill_null(0).to_numpy() - 1
    return codes.astype(np.int32)


def _scatter(n: int, index: pl.Series, values: pl.Series, missing: float = np.nan) -> np.ndarray:
    out = np.full(n, missing, dtype=np.float32)
    out[index.to_numpy()] = values.cast(pl.Float32).fill_null(np.nan).to_numpy()
    return out


def _pair_table(
    tx: pl.DataFrame, n_cols: int, col: str, prefix: str, extra: bool = False
) -> dict[str, np.ndarray]:
    """Per (user, `col`), keyed by user * n_cols + col (sorted): purchases, distinct days and
    days since the last one; with `extra` also days since the first, visits since the last
    purchase (`vlast`, 1: the customer's last visit), how many of the customer's last 5 and 10
    visits had one (`v5`, `v10`), purchases in the last 28 days, and purchases weighted
    0.5 ** (age / 30)."""
    aggs = [
        pl.len().alias("count"),
        pl.col("age").min().alias("last"),
        pl.col("age").n_unique().alias("days"),
    ]
    if extra:
        aggs += [
            pl.col("age").max().alias("first"),
            pl.col("visit").min().alias("vlast"),
            pl.col("visit").filter(pl.col("visit") <= 5).n_unique().alias("v5"),
            pl.col("visit").filter(pl.col("visit") <= 10).n_unique().alias("v10"),
            (pl.col("age") <= DAYS_28).sum().alias("c28"),
            (0.5 ** (pl.col("age") / 30.0)).sum().cast(pl.Float32).alias("weight"),
        ]
    table = (
        tx.filter(pl.col(col) >= 0)
        .group_by("user", col)
        .agg(aggs)
        .with_columns(key=pl.col("user").cast(pl.Int64) * n_cols + pl.col(col))
        .sort("key")
    )
    out = {f"{prefix}_key": table["key"].to_numpy()}
    for name in table.columns:
        if name not in ("user", col, "key"):
            dtype = pl.Float32 if table[name].dtype.is_float() else pl.Int32
            out[f"{prefix}_{name}"] = table[name].cast(dtype).to_numpy()
    return out


def group_rank(group: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Each article's rank (0: best) by `score` within its group (ties by index), NaN where the
    group is -1.

    >>> group_rank(np.array([0, 1, 0, -1, 0]), np.array([1.0, 5.0, 3.0, 9.0, 3.0])).tolist()
    [2.0, 0.0, 0.0, nan, 1.0]
    """
    valid = np.flatnonzero(group >= 0)
    order = valid[np.lexsort((valid, -score[valid], group[valid]))]
    start = np.searchsorted(group[order], group[order], side="left")
    rank = np.full(len(group), np.nan, np.float32)
    rank[order] = np.arange(len(order)) - start
    return rank


def context(data: Dataset, rows: bool = False) -> dict[str, Any]:
    """Feature arrays at the end of `data`: `u_*` per customer, `i_*` per article (float32,
    NaN where unknown), pair tables per customer x article / product / department, and the
    article -> product code / department maps. Ages count days before the cutoff (the day after
    the last one), so the last day has age 1. With `rows`, also each customer's purchases
    (`rows_*`, by customer: what `Stage.live_stage` recomputes the customer side from). The order of
    the keys is the order of the features."""
    n_users, n_items = data.n_users, data.n_items
    tx = with_visits(
        data.transactions.with_columns(
            age=(pl.lit(data.max_date) - pl.col("t_dat")).dt.total_days().cast(pl.Int32) + 1
        )
    )
    has_price = "price" in tx.columns
    has_channel = "sales_channel_id" in tx.columns
    articles = data.articles
    maps: dict[str, Any] = {"n_items": int(n_items)}
    for col, prefix in (("product_code", "pc"), ("department_no", "dep")):
        if col in articles.columns:
            maps[f"{prefix}_of"] = of = _codes(articles[col])
            maps[f"{prefix}_n"] = int(of.max(initial=-1)) + 1
    customer = customer_context(tx, n_users, maps)
    ctx: dict[str, Any] = {"n_items": int(n_items)}
    ctx |= {key: value for key, value in customer.items() if key.startswith("u_")}
    customers = data.customers
    if "age" in customers.columns:
        ctx["u_age"] = customers["age"].cast(pl.Float32).fill_null(np.nan).to_numpy()
    for col in customers.columns:
        if col in CUSTOMER_SKIP or customers[col].n_unique() > MAX_LEVELS:
            continue
        ctx[f"u_cat_{col}"] = _codes(customers[col]).astype(np.float32)

    recent = pl.col("age") <= DAYS_7
    item = tx.group_by("item").agg(
        (pl.col("age") <= 1).sum().alias("sales_1"),
        recent.sum().alias("sales_7"),
        (pl.col("age") <= DAYS_28).sum().alias("sales_28"),
        ((pl.col("age") > DAYS_7) & (pl.col("age") <= 2 * DAYS_7)).sum().alias("sales_prev_7"),
        pl.len().alias("sales_all"),
        pl.col("user").n_unique().alias("buyers"),
        pl.col("age").max().alias("age"),
        pl.col("age").min().alias("since_sale"),
        pl.col("repeat").mean().alias("repeat"),
        *([pl.col("price").mean().alias("price_mean"),
           pl.col("price").filter(recent).mean().alias("price_7"),
           pl.col("price").sort_by("age").first().alias("price_last")] if has_price else []),
        *([(pl.col("sales_channel_id") == 2).mean().alias("online")] if has_channel else []),
    )  # fmt: skip
    for col in item.columns[1:]:
        missing = 0.0 if col.startswith("sales") or col == "buyers" else np.nan
        ctx[f"i_{col}"] = _scatter(n_items, item["item"], item[col], missing)
    ctx["i_decay"] = data.item_popularity(half_life=7.0).astype(np.float32)
    for col in CATEGORY_COLUMNS:
        if col in articles.columns:
            ctx[f"i_cat_{col}"] = _codes(articles[col]).astype(np.float32)

    ctx |= {key: value for key, value in customer.items() if key.startswith("pair_")}
    # an article's rebuy cycle: the median days between repeat purchases of its customers
    days = ctx["pair_days"]
    gaps = (ctx["pair_first"] - ctx["pair_last"]) / np.maximum(days - 1, 1)
    cycle = pl.DataFrame({"item": ctx["pair_key"] % n_items, "gap": gaps, "rebuy": days >= 2})
    cycle = cycle.group_by("item").agg(
        pl.col("gap").filter(pl.col("rebuy")).median().alias("cycle"),
        pl.col("rebuy").mean().alias("rebuyers"),
    )
    for col in ("cycle", "rebuyers"):
        ctx[f"i_{col}"] = _scatter(n_items, cycle["item"], cycle[col])
    for prefix in ("pc", "dep"):
        if f"{prefix}_of" not in maps:
            continue
        of = ctx[f"{prefix}_of"] = maps[f"{prefix}_of"]
        ctx[f"{prefix}_n"] = maps[f"{prefix}_n"]
        ctx[f"i_{prefix}_rank"] = group_rank(of, ctx["i_decay"])
        group_decay = np.bincount(of[of >= 0], ctx["i_decay"][of >= 0], ctx[f"{prefix}_n"])
        with np.errstate(all="ignore"):  # the article's share of its group's decayed sales
            share = ctx["i_decay"] / group_decay[np.maximum(of, 0)]
        ctx[f"i_{prefix}_share"] = np.where(of >= 0, share, np.nan).astype(np.float32)
        ctx |= {key: value for key, value in customer.items() if key.startswith(f"{prefix}_")}
    if rows:
        ctx |= _customer_rows(tx, n_users)
    return ctx


def with_visits(tx: pl.DataFrame) -> pl.DataFrame:
    """Transactions that have `age` (days before the cutoff), with `repeat` (1.0: the customer
    bought the article on an earlier day) and `visit` (the customer's shopping days, 1 = the
    last) added."""
    first_buy = pl.col("age").max().over("user", "item")
    return tx.with_columns(
        repeat=(pl.col("age") < first_buy).cast(pl.Float32),
        visit=pl.col("age").rank("dense").over("user").cast(pl.Int32),
    )


def customer_context(tx: pl.DataFrame, n_users: int, ctx: dict[str, Any]) -> dict[str, Any]:
    """The customer side of the context from `tx` (`with_visits` rows, users 0..n_users-1):
    `u_*` aggregates, and the pair tables per customer x article and x product / department
    (for the maps `pc_of` / `dep_of` in `ctx`)."""
    aggs = [
        pl.col("age").min().alias("last"),
        pl.col("age").max().alias("first"),
        pl.len().alias("n_tx"),
        pl.col("age").n_unique().alias("n_days"),
        pl.col("item").n_unique().alias("n_items"),
        (pl.col("age") <= DAYS_7).sum().alias("tx_7"),
        (pl.col("age") <= DAYS_28).sum().alias("tx_28"),
        pl.col("age").filter(pl.col("age") <= DAYS_28).n_unique().alias("days_28"),
        pl.col("repeat").mean().alias("repeat"),
    ]
    if "price" in tx.columns:
        aggs += [pl.col("price").sum().alias("spend"), pl.col("price").mean().alias("price")]
    if "sales_channel_id" in tx.columns:
        aggs.append((pl.col("sales_channel_id") == 2).mean().alias("online"))
    user = tx.group_by("user").agg(aggs)
    out: dict[str, Any] = {}
    for col in user.columns[1:]:
        out[f"u_{col}"] = _scatter(n_users, user["user"], user[col])
    out |= _pair_table(tx, ctx["n_items"], "item", "pair", extra=True)
    for prefix in ("pc", "dep"):
        if f"{prefix}_of" in ctx:
            mapped = tx.with_columns(_code=pl.Series(ctx[f"{prefix}_of"][tx["item"].to_numpy()]))
            out |= _pair_table(mapped, ctx[f"{prefix}_n"], "_code", prefix)
    return out


def _customer_rows(tx: pl.DataFrame, n_users: int) -> dict[str, np.ndarray]:
    """Each customer's purchases as CSR-style arrays: `rows_indptr` (n_users + 1) and per row
    `rows_item`, `rows_age` and, where the data has them, `rows_price` and `rows_channel`."""
    user = tx["user"].to_numpy()
    order = np.argsort(user, kind="stable")
    indptr = np.zeros(n_users + 1, np.int64)
    np.cumsum(np.bincount(user, minlength=n_users), out=indptr[1:])
    age = tx["age"].to_numpy()
    out = {
        "rows_indptr": indptr,
        "rows_item": tx["item"].to_numpy()[order].astype(np.int32),
        "rows_age": age[order].astype(np.int16 if age.max(initial=0) < 2**15 else np.int32),
    }
    if "price" in tx.columns:
        out["rows_price"] = tx["price"].cast(pl.Float32).to_numpy()[order]
    if "sales_channel_id" in tx.columns:
        out["rows_channel"] = tx["sales_channel_id"].cast(pl.Int8).to_numpy()[order]
    return out


# ---------------------------------------------------------------------------------------------
# A stage: the sources and the feature context fitted on the history before one cutoff.


@dataclass
class Live:
    """The customer side of a stage recomputed for some customers (`Stage.live_stage`): row i is the
    customer `ids[i]` (-1: unknown) with the articles `extra[i]` bought after the fit."""

    ids: np.ndarray
    extra: list[np.ndarray]
    new: sp.csr_matrix  # `extra` as counts per article
    own: sp.csr_matrix  # the customers' own articles, as `repurchase` weighs them
    history: sp.csr_matrix  # recency-weighted purchases, as `itemcf` weighs them
    seen: sp.csr_matrix  # bought articles (1.0)


@dataclass
class Stage:
    """Fitted source models (`parts`, registered models by name) and the feature `ctx`; with
    `live`, the customer side is that of `Live` and users are its rows."""

    parts: dict[str, Any]
    ctx: dict[str, Any]
    live: Live | None = None

    def warm(self, users: np.ndarray) -> np.ndarray:
        """(n,) whether each user has training purchases (unknown users: False)."""
        n_tx = self.ctx["u_n_tx"]
        known = (users >= 0) & (users < len(n_tx))
        return known & (np.nan_to_num(n_tx[np.where(known, users, 0)]) > 0)

    def ids(self, users: np.ndarray) -> np.ndarray:
        """The source models' user indices of `users`."""
        return users if self.live is None else self.live.ids[users]

    def rows(self, what: str, users: np.ndarray) -> sp.csr_matrix:
        """Rows of `users` of the customers' own articles ("own"), recency-weighted history
        ("history") or bought articles ("seen")."""
        if self.live is not None:
            return rows_of(getattr(self.live, what), users)
        part, name = CUSTOMER_MATRICES[what]
        return rows_of(getattr(self.parts[part], name), users)

    @property
    def keeps_rows(self) -> bool:
        """Whether the context holds the customers' purchases (`live_stage` needs them)."""
        return "rows_indptr" in self.ctx

    def live_stage(self, users: np.ndarray, extra: list[np.ndarray]) -> Stage:
        """This stage for `users` (-1: unknown), each with the articles `extra[i]` bought after
        the fit counted as bought on the last day of the data (age 1, at the last price): the
        customer features and pair tables are recomputed from the stored purchases plus these,
        and the own articles, co-purchase history and seen articles get them with the weight of
        a purchase on the last day. The article features and the source models stay as fitted,
        but the ALS customer vectors are folded in again (`pair_als` and the `als` source). Users
        of the returned stage are 0..len(users)-1."""
        ctx = self.ctx
        if not self.keeps_rows:
            raise ConfigError(
                "ranker: this model was saved without its customers' purchases, so it cannot "
                "count new ones; refit it to serve live updates"
            )
        users = np.asarray(users, dtype=np.int64)
        indptr, pos = row_positions(ctx["rows_indptr"], users)
        new = extra_matrix(extra, ctx["n_items"])
        new_indptr, new_items = as_csr_lists(extra)
        new_rows = np.repeat(np.arange(len(users)), np.diff(new_indptr))
        columns = {
            "user": np.concatenate([np.repeat(np.arange(len(users)), np.diff(indptr)), new_rows]),
            "item": np.concatenate([ctx["rows_item"][pos], new_items]),
            "age": np.concatenate(
                [ctx["rows_age"][pos].astype(np.int32), np.ones(len(new_items), np.int32)]
            ),
        }
        if "rows_price" in ctx:
            columns["price"] = np.concatenate(
                [ctx["rows_price"][pos], ctx["i_price_last"][new_items]]
            )
        tx = pl.DataFrame(columns).with_columns(pl.col("user", "item", "age").cast(pl.Int32))
        if "rows_price" in ctx:
            tx = tx.with_columns(pl.col("price").fill_nan(None))
        if "rows_channel" in ctx:  # unknown for the new purchases
            channel = pl.Series(ctx["rows_channel"][pos]).extend(
                pl.Series([None] * len(new_items), dtype=pl.Int8)
            )
            tx = tx.with_columns(sales_channel_id=channel)
        live_ctx = {**ctx, **customer_context(with_visits(tx), len(users), ctx)}
        known = (users >= 0) & (users < len(ctx["u_n_tx"]))
        for key in ("u_age", *(k for k in ctx if k.startswith("u_cat_"))):
            if key in ctx:
                live_ctx[key] = np.where(known, ctx[key][np.where(known, users, 0)], np.nan)
        seen = seen_with(self.rows("seen", users), new)
        own, history = self.rows("own", users) + new, self.rows("history", users) + new
        return Stage(self.parts, live_ctx, Live(users, list(extra), new, own, history, seen))

    # ---- candidates ----------------------------------------------------------------------------

    def source(self, name: str, users: np.ndarray, n: int, cache: dict[str, Any]) -> Recs:
        """The top `n` candidates of source `name` for `users` (-1 padding)."""
        if name == "repurchase":
            return row_top_k(self.rows("own", users), n)
        if name == "itemcf":
            cf = self.cf(users, cache)
            return row_top_k(sp.csr_matrix(cf - cf.multiply(self.rows("seen", users))), n)
        if name == "variants":
            return self.variants(users, n)
        if name == "departments":
            return self.departments(users, n)
        part = self.parts[name]  # segments, decay, als, usercf, sequences
        if self.live is not None and isinstance(part, HistoryAware):
            return part.recommend_with(self.ids(users), [self.live.extra[u] for u in users], n)
        return part.recommend(self.ids(users), n)

    def variants(self, users: np.ndarray, n: int) -> Recs:
        """Other articles of the products the customer bought, scored by the recency-weighted
        purchases of the product (ties: the more popular article first)."""
        if "pc_of" not in self.ctx:
            return Recs.empty(len(users), n)
        product = as_csr(self.ctx["pc_of"][:, None], self.ctx["pc_n"])  # article x product
        own = self.rows("own", users)
        scores = sp.csr_matrix((own @ product) @ product.T)
        scores = sp.csr_matrix(scores - scores.multiply(own > 0))
        scores.eliminate_zeros()
        tie = 1.0 + 1e-3 * np.log1p(self.ctx["i_decay"])  # below any purchase-weight gap
        return row_top_k(sp.csr_matrix(scores @ sp.diags(tie)), n)

    def departments(self, users: np.ndarray, n: int, favourites: int = 3) -> Recs:
        """Trending articles of each customer's `favourites` departments (most recency-weighted
        purchases): up to `n` per department by time-decayed popularity, scored by the
        department's share of the customer's purchases x the article's popularity; best `n`."""
        if "dep_of" not in self.ctx:
            return Recs.empty(len(users), n)
        of, n_dep, pop = self.ctx["dep_of"], self.ctx["dep_n"], self.ctx["i_decay"]
        dep = as_csr(of[:, None], n_dep)  # article x department
        share = sp.csr_matrix(self.rows("own", users) @ dep)
        total = np.asarray(share.sum(axis=1)).ravel()
        fav = row_top_k(sp.csr_matrix(sp.diags(1.0 / np.maximum(total, 1e-12)) @ share), favourites)
        rank = self.ctx["i_dep_rank"]  # each department's top-n selling articles, -1 padded
        keep = np.flatnonzero((of >= 0) & (pop > 0) & (rank < n))
        top = np.full((n_dep, n), -1, np.int64)
        top[of[keep], rank[keep].astype(np.int64)] = keep
        items = np.where(fav.items[:, :, None] >= 0, top[np.maximum(fav.items, 0)], -1)
        share = np.where(fav.items >= 0, fav.scores, 0.0)[:, :, None]  # not -inf x 0 (NaN)
        scores = np.where(items >= 0, share * pop[np.maximum(items, 0)], -np.inf)
        items, scores = items.reshape(len(users), -1), scores.reshape(len(users), -1)
        best = np.argsort(-scores, axis=1, kind="stable")[:, :n]
        return Recs(
            np.take_along_axis(items, best, 1).astype(np.int32),
            np.take_along_axis(scores, best, 1).astype(np.float32),
        )

    def cf(self, users: np.ndarray, cache: dict[str, Any]) -> sp.csr_matrix:
        """(n_users, n_items) co-purchase scores: recency-weighted history @ item neighbours."""
        if "cf" not in cache:
            neighbours = self.parts["itemcf"].neighbours_
            cf = sp.csr_matrix(self.rows("history", users) @ neighbours)
            cf.sort_indices()  # once: the itemcf source and pair_cf then skip their sorts
            cache["cf"] = cf
        return cache["cf"]

    def candidates(self, users: np.ndarray, sources: dict[str, int]) -> tuple[pl.DataFrame, dict]:
        """The union of the sources' candidates: one row per (row of `users`, item) with each
        source's score and rank (null where the source did not propose the article)."""
        cache: dict[str, Any] = {}
        frames = []
        for name, n in sources.items():
            recs = self.source(name, users, n, cache)
            rows, rank = np.nonzero(recs.items >= 0)
            frames.append(
                pl.DataFrame(
                    {
                        "row": rows.astype(np.int32),
                        "item": recs.items[rows, rank].astype(np.int32),
                        f"{name}_score": recs.scores[rows, rank].astype(np.float32),
                        f"{name}_rank": rank.astype(np.float32),
                    }
                )
            )
        long = pl.concat(frames, how="diagonal")
        cand = long.group_by("row", "item").agg(pl.all().max()).sort("row", "item")
        return cand, cache

    # ---- features ------------------------------------------------------------------------------

    def features(
        self, users: np.ndarray, cand: pl.DataFrame, cache: dict[str, Any]
    ) -> pl.DataFrame:
        """`cand` with every feature column added (float32, null/NaN where unknown)."""
        ctx = self.ctx
        rows = cand["row"].to_numpy()
        items = cand["item"].to_numpy().astype(np.int64)
        user = users[rows].astype(np.int64)
        cols: dict[str, np.ndarray] = {}
        for key, value in ctx.items():
            if key.startswith("u_"):
                cols[key] = value[user]
            elif key.startswith("i_"):
                cols[key] = value[items]
        pos = lookup(ctx["pair_key"], user * ctx["n_items"] + items)
        cols["p_count"] = _gather(ctx["pair_count"], pos, 0.0)
        cols["p_days"] = _gather(ctx["pair_days"], pos, 0.0)
        cols["p_last"] = _gather(ctx["pair_last"], pos)
        cols["p_first"] = _gather(ctx["pair_first"], pos)
        cols["p_vlast"] = _gather(ctx["pair_vlast"], pos)
        cols["p_v5"] = _gather(ctx["pair_v5"], pos, 0.0)
        cols["p_v10"] = _gather(ctx["pair_v10"], pos, 0.0)
        cols["p_c28"] = _gather(ctx["pair_c28"], pos, 0.0)
        cols["p_weight"] = _gather(ctx["pair_weight"], pos, 0.0)
        with np.errstate(all="ignore"):
            gap = (cols["p_first"] - cols["p_last"]) / (cols["p_days"] - 1)
            cols["p_gap_ratio"] = np.where(cols["p_days"] >= 2, cols["p_last"] / gap, np.nan)
            cols["p_last_vs_user"] = cols["p_last"] - cols["u_last"]
            cols["p_visit_share"] = cols["p_days"] / cols["u_n_days"]
            cols["p_recent_share"] = cols["p_v5"] / np.minimum(cols["u_n_days"], 5)
            cols["p_due_item"] = cols["p_last"] / cols["i_cycle"]
            visit_gap = (cols["u_first"] - cols["u_last"]) / (cols["u_n_days"] - 1)
            cols["u_visit_gap"] = np.where(cols["u_n_days"] >= 2, visit_gap, np.nan)
            cols["u_visit_due"] = cols["u_last"] / cols["u_visit_gap"]
            cols["i_trend"] = cols["i_sales_7"] / (cols["i_sales_prev_7"] + 1)
            if "i_price_mean" in cols:
                cols["i_discount"] = cols["i_price_last"] / cols["i_price_mean"]
                cols["price_vs_user"] = cols["i_price_mean"] / cols["u_price"]
        for prefix in ("pc", "dep"):
            if f"{prefix}_of" not in ctx:
                continue
            code = ctx[f"{prefix}_of"][items].astype(np.int64)
            pos = lookup(ctx[f"{prefix}_key"], user * ctx[f"{prefix}_n"] + code)
            pos = np.where(code >= 0, pos, -1)
            cols[f"{prefix}_count"] = _gather(ctx[f"{prefix}_count"], pos, 0.0)
            cols[f"{prefix}_days"] = _gather(ctx[f"{prefix}_days"], pos, 0.0)
            cols[f"{prefix}_last"] = _gather(ctx[f"{prefix}_last"], pos)
            cols[f"{prefix}_share"] = cols[f"{prefix}_count"] / cols["u_n_tx"]
        if "itemcf" in self.parts:
            cols["pair_cf"] = csr_values(self.cf(users, cache), rows, items)
        if "content" in self.parts:
            content = self.parts["content"]
            sims = self.rows("own", users) @ content.neighbours_
            cols["pair_content"] = csr_values(sp.csr_matrix(sims), rows, items)
        if "segments" in self.parts:
            segment = self.parts["segments"].segment_of(self.ids(users)[rows])
            cols["u_segment"] = segment.astype(np.float32)
        if "seg_dep" in ctx:  # affinity to the department: own purchase days, segment prior
            dep = ctx["dep_of"][items]
            share = ctx["seg_dep"][segment, np.maximum(dep, 0)]  # -1: the last row, everybody
            cols["seg_dep_share"] = np.where(dep >= 0, share, np.nan)
            cols["dep_affinity"] = (cols["dep_days"] + PRIOR_DAYS * cols["seg_dep_share"]) / (
                np.nan_to_num(cols["u_n_days"]) + PRIOR_DAYS
            )
            cols["dep_draw"] = cols["dep_affinity"] * cols["i_dep_share"]
        if "als" in self.parts:
            new = None if self.live is None else rows_of(self.live.new, users)
            vectors = self.parts["als"].user_vectors(self.ids(users), new)  # NaN: unknown
            dot = np.einsum("ij,ij->i", vectors[rows], self.parts["als"].item_factors_[items])
            cols["pair_als"] = dot.astype(np.float32)
        ranks = [c for c in cand.columns if c.endswith("_rank")]
        extra = pl.DataFrame({k: np.asarray(v, dtype=np.float32) for k, v in cols.items()})
        return pl.concat([cand, extra], how="horizontal").with_columns(
            n_sources=pl.sum_horizontal([pl.col(c).is_not_null() for c in ranks]).cast(pl.Float32),
            rrf=pl.sum_horizontal([1.0 / (pl.col(c).fill_null(1e9) + 1.0) for c in ranks]),
        )

    def frame(self, users: np.ndarray, sources: dict[str, int]) -> pl.DataFrame:
        """Candidates and features of `users` (one batch)."""
        cand, cache = self.candidates(users, sources)
        return self.features(users, cand, cache)


def create_part(name: str, params: dict[str, dict[str, Any]], threads: int = 1) -> Any:
    """An unfitted source model: PART_PARAMS, then `params`; a model with a `threads` setting
    gets `threads` unless `params` set it."""
    kw = {**PART_PARAMS.get(name, {}), **params.get(name, {})}
    if "threads" in {f.name for f in fields(registry.get(name))}:
        kw.setdefault("threads", threads)
    return registry.create(name, **kw)


def fit_stage(
    data: Dataset,
    sources: dict[str, int],
    params: dict[str, dict[str, Any]],
    content: Any | None = None,
    threads: int = 1,
    rows: bool = False,
) -> Stage:
    """Fit the models the sources and features need on `data` (`create_part`), and the feature
    context (with `rows`, the customers' purchases too: the serving stage keeps them)."""
    names = ["repurchase", "decay"] + [
        s for s in sources if s not in ("repurchase", "decay", "variants", "departments")
    ]
    if "itemcf" not in names:
        names.append("itemcf")  # the pair_cf feature
    parts = {name: create_part(name, params, threads).fit(data) for name in names}
    if content is not None:
        parts["content"] = content
    ctx = context(data, rows)
    if "segments" in parts and "dep_of" in ctx:
        ctx["seg_dep"] = segment_departments(data, parts["segments"].segment_of, ctx["dep_of"])
    return Stage(parts, ctx)


def segment_departments(
    data: Dataset, segment_of: Callable[[np.ndarray], np.ndarray], dep_of: np.ndarray
) -> np.ndarray:
    """(segments + 1, departments): each customer segment's share of the departments'
    purchases in the last 28 days; the last row is everybody's (segment -1 indexes it)."""
    recent = data.transactions.filter(pl.col("t_dat") > data.max_date - timedelta(days=DAYS_28))
    users, items = recent["user"].to_numpy(), recent["item"].to_numpy()
    seg, dep = segment_of(users).astype(np.int64), dep_of[items].astype(np.int64)
    n_seg, n_dep = int(seg.max(initial=-1)) + 2, int(dep_of.max(initial=-1)) + 1
    counts = np.zeros((n_seg, n_dep))
    keep = dep >= 0
    np.add.at(counts, (seg[keep], dep[keep]), 1.0)
    counts[-1] += counts[:-1].sum(axis=0)  # everybody: the customers without a segment too
    return (counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The model.


def _log_rounds(what: str, period: int = 50) -> Callable[[Any], None]:
    """A LightGBM callback logging every `period` rounds (with the validation metric, if any):
    at full scale a booster trains for many minutes."""

    def callback(env: Any) -> None:
        done = env.iteration + 1
        if done % period == 0 or done == env.end_iteration:
            results = env.evaluation_result_list or []
            scores = " ".join(f"{d} {m}={v:.4f}" for d, m, v, *_ in results)
            log.info("ranker: %s round %d/%d %s", what, done, env.end_iteration, scores)

    return callback


# LightGBM settings that are not Ranker fields (learning_rate, num_leaves, min_data_in_leaf are)
LGB_DEFAULTS = {
    "feature_fraction": 0.8,
    "lambda_l2": 1.0,
    "max_bin": 255,
}


@dataclass
class Ranker:
    """Two-stage ranker: candidates from `sources` ("name:count,..."), ranked by LightGBM over
    customer, article and pair features. `objective` is one objective ("lambdarank",
    "rank_xendcg" or "binary")
    or a comma list of them: an ensemble whose boosters (seeded seed, seed + 1, ...) add their
    standardised scores. Trained on `train_weeks` periods of `label_days` days (at most
    `train_users` buyers each, negatives sampled down to `train_rows` candidate rows in all),
    early-stopped on the last period of the data, then refit on all of them; the sources' models
    take their parameters from `params` ("als.factors=32;...")."""

    name: ClassVar[str] = "ranker"
    fallback: ClassVar[str] = "decay (time-decayed popularity) for customers without purchases"
    sources: str = DEFAULT_SOURCES
    objective: str = "lambdarank,binary,binary"
    label_days: int = 7
    train_weeks: int = 3
    train_users: int = 50_000
    train_rows: int = 2_000_000
    content: bool = True
    params: str = ""
    n_estimators: int = 500
    early_stopping: int = 50
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 20
    seed: int = 0
    threads: int = 2

    booster_: list = field(default=None, init=False, repr=False)
    scales_: list = field(default=None, init=False, repr=False)
    calibration_: list | None = field(default=None, init=False, repr=False)
    arrays_: dict[str, np.ndarray] = field(default=None, init=False, repr=False)
    parts_: dict = field(default=None, init=False, repr=False)
    ctx_: dict = field(default=None, init=False, repr=False)
    features_: list = field(default=None, init=False, repr=False)
    info_: dict = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.objectives()
        if self.label_days < 1 or self.train_weeks < 0 or self.train_rows < 1:
            raise ConfigError("ranker: label_days and train_rows must be >= 1 and train_weeks >= 0")
        parse_sources(self.sources)

    def objectives(self) -> list[str]:
        """The objective of each booster of the ensemble (booster i is seeded seed + i)."""
        names = [o.strip() for o in str(self.objective).split(",") if o.strip()]
        if not names or any(o not in OBJECTIVES for o in names):
            raise ConfigError(
                f"ranker: objective must be a comma list of {', '.join(OBJECTIVES)}, "
                f"not {self.objective!r}"
            )
        return names

    def _params(self) -> dict[str, dict[str, Any]]:
        return parse_params(self.params, [*PART_PARAMS, *parse_sources(self.sources)])

    # ---- fit -----------------------------------------------------------------------------------

    def fit(self, data: Dataset) -> Self:
        sources, params = parse_sources(self.sources), self._params()
        content = None
        if self.content and _has_text(data):
            content = create_part("content", params, self.threads).fit(data)
        # week 1 (the last days of `data`) validates, weeks 2.. train
        weeks, info = [], []
        for j in range(1, self.train_weeks + 2):
            frame, stats = self._labelled(data, j, sources, params, content)
            info.append(stats)
            if frame is not None:
                weeks.append(frame)
        names = self._feature_names(weeks)
        self.booster_, self.scales_, self.calibration_, fits = [], [], None, []
        if sum(w["label"].sum() for w in weeks) > 0:
            full = pl.concat(weeks, how="diagonal_relaxed")
            del weeks  # one copy of the training rows from here on
            total, held = np.zeros(full.height), []
            for i, objective in enumerate(self.objectives()):
                booster, stats, held_out = self._train(full, names, objective, self.seed + i)
                raw = booster.predict(_matrix(full, names), raw_score=True)
                self.booster_.append(booster.model_to_string())
                self.scales_.append([float(raw.mean()), float(max(raw.std(), 1e-12))])
                total += (raw - self.scales_[-1][0]) / self.scales_[-1][1]
                held.append(held_out)
                fits.append(stats)
            # the probability: fitted on week 1's out-of-sample scores where there are (the
            # training rows' own scores are too confident), else on the training rows
            kept = np.array([1.0] + [w.get("negatives_kept", 1.0) for w in info])
            if held[0] is not None:
                rows, score = full["week"].to_numpy() == 1, sum(held)
            else:
                rows, score = slice(None), total
            label, week = full["label"].to_numpy()[rows], full["week"].to_numpy()[rows]
            self.calibration_ = calibrate(score, label, kept[week])
            del full, total, held  # not held while the serving stage is fitted below
        else:
            log.warning(
                "ranker: no purchases to learn from in the %d periods of label_days=%d before "
                "%s (the data starts %s): no booster is trained, and candidates rank by the "
                "customer's own articles, then the sources' reciprocal-rank fusion; on short "
                "data lower label_days (e.g. -p ranker.label_days=1)",
                self.train_weeks + 1, self.label_days, data.max_date, data.min_date,
            )  # fmt: skip
        self.features_ = names
        self.info_ = {"weeks": info, "boosters": fits}
        stage = fit_stage(data, sources, params, content, self.threads, rows=True)
        self.arrays_, self.parts_ = pack(stage.parts)
        self.ctx_ = pack_values(stage.ctx, "ctx", self.arrays_)
        self._stage, self._boosters = stage, None
        return self

    def _train(
        self, full: pl.DataFrame, names: list[str], objective: str, seed: int
    ) -> tuple[Any, dict, np.ndarray | None]:
        """One booster: early-stopped on week 1 when there are earlier weeks to train on, then
        refit with the best round count on every labelled week (week 1 too). Also the
        early-stopped booster's scores of the week 1 rows (out of sample), standardised on its
        training rows as the refit's are; None without early stopping."""
        import lightgbm as lgb

        params = self._lgb_params(objective, seed)
        valid, train = full.filter(pl.col("week") == 1), full.filter(pl.col("week") > 1)
        rounds, stats = self.n_estimators, {"objective": objective, "seed": seed}
        held_out = None
        if train.height and valid["label"].sum() > 0:
            eval_log: dict = {}
            booster = lgb.train(
                params,
                self._dataset(train, names, objective),
                num_boost_round=self.n_estimators,
                valid_sets=[self._dataset(valid, names, objective, only_positive=True)],
                valid_names=["valid"],
                callbacks=[
                    lgb.early_stopping(self.early_stopping, verbose=False),
                    lgb.record_evaluation(eval_log),
                    _log_rounds(objective),
                ],
            )
            rounds = max(1, booster.best_iteration or self.n_estimators)
            metric = next(iter(eval_log.get("valid", {}).values()), [])
            stats |= {"best_iteration": rounds, "valid_map": metric[rounds - 1] if metric else None}
            fitted = booster.predict(_matrix(train, names), num_iteration=rounds, raw_score=True)
            held_out = booster.predict(_matrix(valid, names), num_iteration=rounds, raw_score=True)
            held_out = (held_out - fitted.mean()) / max(fitted.std(), 1e-12)
        del train, valid
        booster = lgb.train(
            params,
            self._dataset(full, names, objective),
            num_boost_round=rounds,
            callbacks=[_log_rounds(f"{objective} refit")],
        )
        return booster, stats | {"rounds": rounds}, held_out

    def _labelled(
        self,
        data: Dataset,
        j: int,
        sources: dict[str, int],
        params: dict[str, dict[str, Any]],
        content: Any | None,
    ) -> tuple[pl.DataFrame | None, dict]:
        """Candidates + features of week j before the end of `data`, labelled by its purchases
        (the sources fitted on the data before it); None when there is nothing to learn from."""
        start = data.max_date + timedelta(days=1 - j * self.label_days)
        history = data.window(end=start)
        label = data.window(start=start, end=start + timedelta(days=self.label_days))
        stats: dict[str, Any] = {"start": str(start)}
        if history.transactions.is_empty() or label.transactions.is_empty():
            return None, stats
        stage = fit_stage(history, sources, params, content, self.threads)
        users = label.buyers()
        users = users[stage.warm(users)]
        rng = np.random.default_rng(self.seed + j)
        if len(users) > self.train_users:
            users = np.sort(rng.choice(users, self.train_users, replace=False))
        if not len(users):
            return None, stats
        truth = label.transactions.select("user", "item").unique().with_columns(label=pl.lit(1.0))
        # Negative sampling: every positive stays, and negatives are kept at the rate that brings
        # this period to its share of `train_rows` (the rows per customer are measured on the
        # first batch: the batches are in random order). This bounds the memory of training.
        users = rng.permutation(users)
        cap, keep, parts = self.train_rows / (self.train_weeks + 1), 1.0, []
        starts = range(0, len(users), BATCH)
        for s in tqdm(starts, desc=f"ranker week {j}", unit="batch", disable=len(starts) < 5):
            batch = users[s : s + BATCH]
            frame = stage.frame(batch, sources)
            frame = frame.with_columns(
                user=pl.Series(batch[frame["row"].to_numpy()], dtype=pl.Int32)
            )
            frame = frame.join(truth, on=["user", "item"], how="left").with_columns(
                pl.col("label").fill_null(0.0), week=pl.lit(j, pl.Int32)
            )
            if s == 0:
                keep = min(1.0, cap * len(batch) / max(frame.height * len(users), 1))
            if keep < 1.0:
                sampled = pl.Series(rng.random(frame.height) < keep)
                frame = frame.filter((pl.col("label") > 0) | sampled)
            parts.append(frame)
        frame = pl.concat(parts, how="diagonal_relaxed").sort("user", "item")
        n_pairs = truth.join(
            pl.DataFrame({"user": users.astype(np.int32)}), on="user", how="semi"
        ).height
        stats |= {
            "users": len(users),
            "rows": frame.height,
            "negatives_kept": keep,
            "positives": int(frame["label"].sum()),
            "recall": float(frame["label"].sum() / max(n_pairs, 1)),
        }
        log.info("ranker: week %d from %s: %s", j, start, stats)
        return frame, stats

    def _feature_names(self, weeks: list[pl.DataFrame]) -> list[str]:
        skip = {"row", "item", "user", "label", "week"}
        names: list[str] = []
        for w in weeks:
            names += [c for c in w.columns if c not in skip and c not in names]
        return names

    def _lgb_params(self, objective: str, seed: int) -> dict[str, Any]:
        return {
            **LGB_DEFAULTS,
            "objective": objective,
            "metric": "map",
            "eval_at": [12],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.threads,
            "verbose": -1,
        }

    def _dataset(
        self, frame: pl.DataFrame, names: list[str], objective: str, only_positive: bool = False
    ) -> Any:
        """A LightGBM dataset grouped by user; a ranking objective learns nothing from a user
        without a positive, so those are dropped (always for validation: MAP ignores them)."""
        import lightgbm as lgb

        if only_positive or objective in RANKING:
            has = frame.group_by("week", "user").agg(pl.col("label").max().alias("_has"))
            frame = frame.join(has, on=["week", "user"]).filter(pl.col("_has") > 0)
        frame = frame.sort("week", "user", "item")
        groups = frame.group_by("week", "user", maintain_order=True).len()["len"].to_numpy()
        return lgb.Dataset(
            _matrix(frame, names),
            label=frame["label"].to_numpy(),
            group=groups,
            feature_name=names,
            free_raw_data=True,
            params={"max_bin": LGB_DEFAULTS["max_bin"], "verbose": -1},
        )

    # ---- serve ---------------------------------------------------------------------------------

    def stage(self) -> Stage:
        """The fitted serving stage (rebuilt from the state after a load)."""
        if getattr(self, "_stage", None) is None:
            self._stage = Stage(
                unpack(self.arrays_, self.parts_), unpack_values(self.ctx_, "ctx", self.arrays_)
            )
        return self._stage

    def boosters(self) -> list[Any]:
        """The LightGBM boosters of the ensemble (none when there was nothing to train on)."""
        if getattr(self, "_boosters", None) is None:
            import lightgbm as lgb

            self._boosters = [lgb.Booster(model_str=text) for text in self.booster_ or []]
        return self._boosters

    def recommend(self, users: np.ndarray, k: int, *, exclude_seen: bool = False) -> Recs:
        return batched(users, lambda u: self._recommend(u, None, k, exclude_seen), batch=BATCH)

    def recommend_with(
        self,
        users: np.ndarray,
        extra: list[np.ndarray] | None,
        k: int,
        *,
        exclude_seen: bool = False,
    ) -> Recs:
        """`recommend`, counting `extra[i]` (articles users[i] bought after the fit) as bought on
        the last day of the data: the customer's features and candidates are recomputed with
        them (`Stage.live_stage`), so a purchase moves the list at once, without refitting. An
        unknown customer (-1) with purchases is ranked from them."""
        users = np.asarray(users, dtype=np.int64)
        if extra is None:
            return self.recommend(users, k, exclude_seen=exclude_seen)
        if not self.stage().keeps_rows:
            log.warning(
                "ranker: this model was saved by an older fashionrec without its customers' "
                "purchases, so new purchases count only after a refit"
            )
            return self.recommend(users, k, exclude_seen=exclude_seen)

        def part(pos: np.ndarray) -> Recs:
            return self._recommend(users[pos], [extra[i] for i in pos], k, exclude_seen)

        return batched(np.arange(len(users)), part, batch=BATCH)

    def _recommend(
        self, users: np.ndarray, extra: list[np.ndarray] | None, k: int, exclude_seen: bool
    ) -> Recs:
        stage = self.stage()
        fallback = stage.parts["decay"].recommend(users, k, exclude_seen=exclude_seen)
        if extra is not None:
            if exclude_seen:  # nor the new purchases
                new = extra_matrix(extra, stage.ctx["n_items"])
                keep = ~hit_matrix(fallback.items, new)
                fallback = first_k(fallback.items, fallback.scores, keep, k)
            stage, users = stage.live_stage(users, extra), np.arange(len(users))
        warm = stage.warm(users)
        items = np.full((len(users), k), -1, np.int32)
        scores = np.full((len(users), k), -np.inf, np.float32)
        if warm.any():
            ranked = self.rank(users[warm], k, exclude_seen=exclude_seen, stage=stage)
            items[warm], scores[warm] = ranked.items, ranked.scores
        return fill(Recs(items, scores), fallback, k)

    def score(self, frame: pl.DataFrame) -> np.ndarray:
        """Ranker scores of candidate rows: the sum of the boosters' raw scores, each
        standardised by its mean and deviation on the training rows. Untrained: own articles
        first, then by reciprocal-rank fusion of the sources."""
        boosters = self.boosters()
        if not boosters:
            return (frame["p_count"].to_numpy() > 0) + frame["rrf"].to_numpy() / (1 + len(SOURCES))
        x = _matrix(frame, self.features_)
        total = np.zeros(frame.height)
        for booster, (mean, std) in zip(boosters, self.scales_, strict=True):
            total += (booster.predict(x, raw_score=True, num_threads=self.threads) - mean) / std
        return total

    def rank(
        self, users: np.ndarray, k: int, *, exclude_seen: bool = False, stage: Stage | None = None
    ) -> Recs:
        """Top k candidates of warm `users` by the ranker (of the serving stage, or of `stage`);
        scores are the odds p / (1 - p) of the calibrated purchase probability p (`calibrate`;
        untrained or uncalibrated: p = sigmoid(score)), so that `fill` shows 1 + p."""
        frame = (stage or self.stage()).frame(users, parse_sources(self.sources))
        if exclude_seen:
            frame = frame.filter(pl.col("p_count") == 0)
        rows = frame["row"].to_numpy()
        item = frame["item"].to_numpy()
        score = self.score(frame)
        tie = frame["rrf"].to_numpy()
        order = np.lexsort((item, -tie, -score, rows))
        rows, item, score = rows[order], item[order], score[order]
        starts = np.searchsorted(rows, np.arange(len(users)))
        rank = np.arange(len(rows)) - starts[rows]
        keep = rank < k
        out_items = np.full((len(users), k), -1, np.int32)
        out_scores = np.full((len(users), k), -np.inf, np.float64)
        out_items[rows[keep], rank[keep]] = item[keep]
        a, b = self.calibration_ or (1.0, 0.0)
        out_scores[rows[keep], rank[keep]] = np.exp(np.clip(a * score[keep] + b, -15.0, 15.0))
        return first_k(out_items, out_scores.astype(np.float32), out_items >= 0, k)


def calibrate(score: np.ndarray, label: np.ndarray, kept: np.ndarray) -> list[float]:
    """[a, b] of the purchase probability sigmoid(a * score + b) (Platt scaling: a logistic
    regression of the labels on the ensemble score) with each negative weighted by 1 / the share
    of negatives kept in its period."""
    from sklearn.linear_model import LogisticRegression

    weight = np.where(label > 0, 1.0, 1.0 / np.maximum(kept, 1e-12))
    if label.min() == label.max():  # one class: no slope to fit
        return [0.0, 20.0 if label.max() > 0 else -20.0]
    fit = LogisticRegression(C=1e6).fit(score[:, None], label, sample_weight=weight)
    return [float(fit.coef_[0, 0]), float(fit.intercept_[0])]


def _matrix(frame: pl.DataFrame, names: list[str]) -> np.ndarray:
    """(rows, features) float32, C order (LightGBM predicts 15% faster from rows than from
    columns), NaN for missing values and for features the frame lacks: one polars select (4x
    faster than a column at a time, measured on a serving batch and on one customer)."""
    if not names:
        return np.empty((frame.height, 0), np.float32)
    present = set(frame.columns)
    exprs = [
        pl.col(n).cast(pl.Float32).fill_null(np.nan)
        if n in present
        else pl.lit(np.nan, pl.Float32).alias(n)
        for n in names
    ]
    return np.ascontiguousarray(frame.select(exprs).to_numpy())


def _has_text(data: Dataset) -> bool:
    from fashionrec.models.content import TEXT_COLUMNS

    return any(c in data.articles.columns for c in TEXT_COLUMNS)


# ---------------------------------------------------------------------------------------------
# Reports: candidate recall and feature importance.


def candidate_recall(model: Ranker, test: Dataset, users: np.ndarray | None = None) -> pl.DataFrame:
    """Share of the test purchases (distinct customer-article pairs of `users`, by default every
    test buyer) that are among each source's candidates, and among their union; the candidates
    are those of the fitted model's serving stage."""
    truth = test.transactions.select("user", "item").unique()
    users = test.buyers() if users is None else np.asarray(users)
    truth = truth.join(pl.DataFrame({"user": users.astype(np.int32)}), on="user", how="semi")
    total = max(truth.height, 1)
    stage = model.stage()
    rows = []
    cands = []
    for s in range(0, len(users), BATCH):
        batch = users[s : s + BATCH]
        cand, _ = stage.candidates(batch, parse_sources(model.sources))
        user = pl.Series(batch[cand["row"].to_numpy()], dtype=pl.Int32)
        cands.append(cand.with_columns(user=user))
    cand = pl.concat(cands, how="diagonal_relaxed")
    hit = truth.join(cand, on=["user", "item"], how="inner")
    for name in parse_sources(model.sources):
        col = f"{name}_rank"
        n_cand = int(cand[col].is_not_null().sum())
        found = int(hit[col].is_not_null().sum())
        rows.append(_recall_row(name, n_cand, found, len(users), total))
    rows.append(_recall_row("union", cand.height, hit.height, len(users), total))
    return pl.DataFrame(rows)


def _recall_row(name: str, n_cand: int, found: int, n_users: int, total: int) -> dict[str, Any]:
    return {
        "source": name,
        "candidates_per_user": n_cand / max(n_users, 1),
        "found": found,
        "purchases": total,
        "recall": found / total,
    }


def feature_importance(model: Ranker, png: str | Path | None = None, top: int = 25) -> pl.DataFrame:
    """Total gain and split count per feature (gain share of the total), best first; with
    `png`, also a horizontal bar chart of the `top` features by gain (matplotlib, Agg)."""
    boosters = model.boosters()
    if not boosters:
        return pl.DataFrame(schema={"feature": pl.String, "gain": pl.Float64, "splits": pl.Int64})
    gain = sum(b.feature_importance("gain").astype(np.float64) for b in boosters)
    splits = sum(b.feature_importance("split").astype(np.int64) for b in boosters)
    table = pl.DataFrame(
        {
            "feature": boosters[0].feature_name(),
            "gain": gain,
            "splits": splits,
            "gain_share": gain / max(gain.sum(), 1e-12),
        }
    ).sort(["gain", "feature"], descending=[True, False])
    if png is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        head = table.head(top).reverse()
        fig, ax = plt.subplots(figsize=(7, 0.25 * len(head) + 1.2))
        ax.barh(head["feature"].to_list(), head["gain_share"].to_list())
        ax.set(xlabel="share of total gain", title=f"ranker feature importance ({model.objective})")
        fig.tight_layout()
        replace_with(png, lambda tmp: fig.savefig(tmp, dpi=100))
        plt.close(fig)
    return table
