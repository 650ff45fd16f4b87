"""Customer segments: k-modes clusters of customers, each served its own trending articles.

Segments come from the customers table where it has attributes (club status, news frequency, age
band, postal region, gender, country ...), else from a purchase profile (dominant index and
garment group, price, sales channel, basket size and visit frequency bands). Clustering is
k-modes (Huang 1998) from the `kmodes` package on categories, and k-prototypes (Huang 1997,
vectorised here) when age is kept as a number. A new customer joins the nearest mode of the
attributes they give (`assign`), so a sign-up form is enough for a first list
(`recommend_attributes`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl
import scipy.sparse as sp

from fashionrec.atomic import replace_with, write_text
from fashionrec.data.dataset import Dataset, _age_band
from fashionrec.errors import ConfigError
from fashionrec.metrics import hit_matrix
from fashionrec.models.base import (
    Recs,
    batched_with,
    fill,
    first_k,
    popularity_fallback,
    rank_list,
    row_top_k,
    rows_of,
    seen_with,
    top_k_dense,
)

log = logging.getLogger(__name__)

SOURCES = ("auto", "customers", "profile")
PROFILE_GROUPS = ("index_group_name", "garment_group_name")  # dominant article group per customer
ID_COLUMNS = ("user", "customer_id")
UNKNOWN = "unknown"  # a null attribute (the same label as Dataset.customer_groups)
OTHER = "(other)"  # the rare values of a column with more than `max_levels` values
LIST_LENGTH = 256  # articles kept per segment; the global list fills the rest
ASSIGN_BATCH = 100_000


# ---------------------------------------------------------------------------------------------
# Attributes: one categorical (and optionally numeric) row per customer.


@dataclass
class Attributes:
    """Per-customer attributes: `cat` (n_users, n_cat) str, `num` (n_users, n_num) float with NaN
    where unknown, `has` (n_users,) bool: the customer has attributes at all."""

    cat_names: list[str]
    cat: np.ndarray
    num_names: list[str]
    num: np.ndarray
    has: np.ndarray


def customer_attributes(
    data: Dataset, *, numeric_age: bool = False, postal_prefix: int = 1
) -> Attributes:
    """The customers table as attributes: age as a band (or a number), postal codes cut to their
    first `postal_prefix` characters (a region; hashed codes as in H&M are left out), every other
    column as it is, nulls as "unknown"."""
    frame = data.customers
    cat: dict[str, np.ndarray] = {}
    num: dict[str, np.ndarray] = {}
    for col in frame.columns:
        if col in ID_COLUMNS:
            continue
        series = frame[col]
        if col == "age":
            if numeric_age:
                num["age"] = series.cast(pl.Float64).fill_null(np.nan).to_numpy()
            else:
                cat["age_band"] = _strings(_age_band(series))
        elif col == "postal_code":
            if postal_prefix > 0 and not _hashed(series):
                cat["postal_prefix"] = _strings(series.cast(pl.String).str.slice(0, postal_prefix))
        else:
            cat[col] = _strings(series)
    n = data.n_users
    return Attributes(
        list(cat),
        np.stack(list(cat.values()), axis=1) if cat else np.empty((n, 0), dtype=str),
        list(num),
        np.stack(list(num.values()), axis=1) if num else np.empty((n, 0)),
        np.ones(n, dtype=bool),
    )


def purchase_profile(
    data: Dataset, edges: dict[str, list[float]] | None = None, n_bands: int = 4
) -> tuple[Attributes, dict[str, list[float]]]:
    """Each buyer's dominant index and garment group and sales channel, and the quantile band
    ("1" = lowest) of their mean price, items per visit and visits; `edges` are the band
    boundaries (computed over the buyers here when None, so that new data can reuse them)."""
    tx = data.transactions
    groups = [c for c in PROFILE_GROUPS if c in data.articles.columns]
    if groups:
        tx = tx.join(data.articles.select("item", *groups), on="item", how="left")
    return profile_of(tx, groups, data.n_users, edges, n_bands)


def profile_of(
    tx: pl.DataFrame,
    groups: list[str],
    n_users: int,
    edges: dict[str, list[float]] | None = None,
    n_bands: int = 4,
) -> tuple[Attributes, dict[str, list[float]]]:
    """`purchase_profile` of the transactions `tx` (user, item, t_dat, the article `groups` and
    optionally price and sales_channel_id) of users 0..n_users-1."""
    per_user = tx.group_by("user").agg(
        pl.len().alias("n"),
        pl.col("t_dat").n_unique().alias("visits"),
        *([pl.col("price").mean().alias("price")] if "price" in tx.columns else []),
    )
    per_user = per_user.with_columns(basket=pl.col("n") / pl.col("visits"))
    cols: dict[str, np.ndarray] = {}
    for col in [*groups, *(["sales_channel_id"] if "sales_channel_id" in tx.columns else [])]:
        cols[col] = _dominant(tx, col, n_users)
    users = per_user["user"].to_numpy()
    edges = {} if edges is None else edges
    for name, src in (("price_band", "price"), ("basket_band", "basket"), ("visit_band", "visits")):
        if src not in per_user.columns:
            continue
        values = per_user[src].cast(pl.Float64).to_numpy()
        if name not in edges:
            known = values[~np.isnan(values)]
            qs = np.quantile(known, np.arange(1, n_bands) / n_bands) if len(known) else []
            edges[name] = [float(e) for e in np.unique(qs)]
        column = np.full(n_users, UNKNOWN, dtype=object)
        column[users] = _band(values, edges[name])
        cols[name] = column
    has = np.zeros(n_users, dtype=bool)
    has[users] = True
    cat = np.stack([c.astype(str) for c in cols.values()], axis=1) if cols else None
    attrs = Attributes(
        list(cols),
        cat if cat is not None else np.empty((n_users, 0), dtype=str),
        [],
        np.empty((n_users, 0)),
        has,
    )
    return attrs, edges


def _informative(attrs: Attributes) -> bool:
    """Whether some attribute takes at least two values (else there is nothing to cluster)."""
    cat = any(len(np.unique(attrs.cat[:, j])) > 1 for j in range(attrs.cat.shape[1]))
    num = any(len(np.unique(c[np.isfinite(c)])) > 1 for c in attrs.num.T)
    return cat or num


def _strings(series: pl.Series) -> np.ndarray:
    return series.cast(pl.String).fill_null(UNKNOWN).to_numpy().astype(str)


def _hashed(series: pl.Series) -> bool:
    """Postal codes that are hashes (H&M: 64 hex characters) carry no region in a prefix."""
    lengths = series.cast(pl.String).str.len_chars().drop_nulls()
    return len(lengths) > 0 and float(lengths.median()) > 10


def _band(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Quantile band labels "1".."n" of `values` for the inner band boundaries `edges`: band b
    holds edges[b-2] < value <= edges[b-1], so a value tied at a boundary stays in the lower
    band (with many one-visit customers, 1 visit is band "1"); "unknown" for NaN."""
    bands = (np.searchsorted(np.asarray(edges), values, side="left") + 1).astype(str)
    return np.where(np.isnan(values), UNKNOWN, bands)


def _dominant(tx: pl.DataFrame, col: str, n_users: int) -> np.ndarray:
    """(n_users,) each buyer's most frequent value of `col` (ties: the smallest), else unknown."""
    counts = (
        tx.filter(pl.col(col).is_not_null())
        .group_by("user", col)
        .len()
        .with_columns(pl.col(col).cast(pl.String))
        .sort(["user", "len", col], descending=[False, True, False])
        .unique("user", keep="first", maintain_order=True)
    )
    out = np.full(n_users, UNKNOWN, dtype=object)
    out[counts["user"].to_numpy()] = counts[col].to_numpy()
    return out


# ---------------------------------------------------------------------------------------------
# Clustering: k-modes with the kmodes package, k-prototypes vectorised.

INITS = ("auto", "Cao", "Huang", "random")


def cluster(
    codes: np.ndarray,
    num: np.ndarray,
    k: int,
    *,
    init: str = "auto",
    n_init: int = 4,
    seed: int = 0,
    gamma: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, float]:
    """k-modes (k-prototypes when `num` has columns) on integer-coded categories `codes` (n, c)
    and standardised numbers `num` (n, m). Returns modes (k', c), centres (k', m) and the cost
    (total dissimilarity of the n rows); k' < k when there are fewer distinct rows than k.

    Both run on the distinct rows weighted by their count: the same objective, and customer
    attributes have few distinct rows (about 1,300 among 50,000 H&M buyers). kmodes loops over
    rows in Python, so this takes a k-modes fit from 3-9 s to 0.2 s there, at an equal or lower
    cost. `init` "auto" keeps the best of a weighted Cao start and `n_init` Huang starts.
    """
    if init not in INITS:
        raise ConfigError(f"segments: init must be one of {', '.join(INITS)}, not {init!r}")
    n_num = num.shape[1]
    unique, counts = np.unique(
        np.concatenate([num, codes.astype(np.float64)], axis=1), axis=0, return_counts=True
    )
    distinct, dnum, weights = unique[:, n_num:].astype(np.int64), unique[:, :n_num], counts * 1.0
    if len(unique) <= k:  # every distinct row is its own mode
        order = np.argsort(-counts, kind="stable")
        return distinct[order], dnum[order], 0.0
    if n_num:
        return kprototypes(distinct, dnum, weights, k, gamma)
    if init == "auto":
        runs = [
            cluster(codes, num, k, init=name, n_init=n_init, seed=seed, gamma=gamma)
            for name in ("Cao", "Huang")
        ]
        return min(runs, key=lambda run: run[2])
    from kmodes.kmodes import KModes

    start: Any = init
    if init == "Cao":  # the library's Cao init would count each distinct row once
        modes = cao_init(distinct, np.empty((len(distinct), 0)), weights, k, gamma)[0]
        start = np.stack(  # in the library's encoding: the index among the column's values
            [
                np.searchsorted(np.unique(distinct[:, j]), modes[:, j])
                for j in range(modes.shape[1])
            ],
            axis=1,
        )
    km = KModes(n_clusters=k, init=start, n_init=n_init, random_state=seed)
    km.fit(distinct, sample_weight=weights)
    return km.cluster_centroids_.astype(np.int64), np.empty((k, 0)), float(km.cost_)


def cao_init(
    codes: np.ndarray, num: np.ndarray, weights: np.ndarray, k: int, gamma: float
) -> tuple[np.ndarray, np.ndarray]:
    """Initial modes (and centres) of Cao, Liang and Bai (2009), each row counted `weights`
    times: the densest row first, then each time the row with the largest density x distance
    to the chosen ones (distinct rows are required).

    Hand-written because kmodes' init_cao has no weights: on distinct rows it takes rare rows
    for dense ones (on Online Retail: Bahrain and Brazil instead of Germany and France)."""
    density = np.zeros(len(codes))
    for j in range(codes.shape[1]):
        _, inverse = np.unique(codes[:, j], return_inverse=True)
        density += np.bincount(inverse, weights=weights)[inverse]
    if codes.shape[1] == 0:  # numbers only: the most frequent row first
        density = weights.copy()
    density /= weights.sum() * max(codes.shape[1], 1)
    chosen = [int(np.argmax(density))]
    for _ in range(1, k):
        dist = dissimilarity(codes, num, codes[chosen], num[chosen], gamma).min(axis=1)
        chosen.append(int(np.argmax(dist * density)))
    return codes[chosen], num[chosen]


def kprototypes(
    codes: np.ndarray, num: np.ndarray, weights: np.ndarray, k: int, gamma: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted batch k-prototypes (Huang 1997): squared Euclidean distance on the numbers plus
    gamma x mismatching categories; assign every row to its nearest prototype, then move each
    prototype to its rows' weighted mean and modes, until no row moves (the cost never rises).

    Hand-written, not kmodes.KPrototypes: that loops over rows in Python (about 110 s for 5,000
    customers and 8 segments on this machine) and its weighted updates are wrong in 0.12
    (`_move_point_num` adds weighted sums but unweighted counts). This takes well under a second
    on H&M-sized samples; tests/test_segments.py checks it against KPrototypes' cost."""
    modes, centres = cao_init(codes, num, weights, k, gamma)
    modes, centres = modes.copy(), centres.astype(np.float64).copy()
    labels = None
    for _ in range(100):
        dist = dissimilarity(codes, num, modes, centres, gamma)
        new = np.argmin(dist, axis=1)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
        for c in np.unique(labels):  # an emptied prototype keeps its place
            rows = labels == c
            w = weights[rows]
            centres[c] = np.average(num[rows], axis=0, weights=w)
            for j in range(codes.shape[1]):  # weighted mode; ties: the smallest code
                modes[c, j] = np.argmax(np.bincount(codes[rows, j], weights=w))
    cost = float((weights * dist[np.arange(len(dist)), np.argmin(dist, axis=1)]).sum())
    return modes, centres, cost


def dissimilarity(
    codes: np.ndarray,
    num: np.ndarray,
    modes: np.ndarray,
    centres: np.ndarray,
    gamma: float,
    given: np.ndarray | None = None,
) -> np.ndarray:
    """(n, k) k-modes distance (mismatching categories) or k-prototypes distance (squared
    Euclidean on numbers + gamma x mismatches), as in `kmodes`; a category where `given` is False
    and a NaN number count for nothing (match on the attributes given only)."""
    mismatch = codes[:, None, :] != modes[None, :, :]
    if given is not None:
        mismatch &= given[:, None, :]
    dist = mismatch.sum(axis=2).astype(np.float64)
    if num.shape[1]:
        sq = np.nan_to_num((num[:, None, :] - centres[None, :, :]) ** 2, nan=0.0)
        dist = sq.sum(axis=2) + gamma * dist
    return dist


# ---------------------------------------------------------------------------------------------
# The recommender.


@dataclass
class Segments:
    """k-modes customer segments (k-prototypes with `numeric_age`) from the customers table, or
    from a purchase profile where it has no attributes (`source`); each segment is served its
    trending articles (purchases weighted by 0.5 ** (age_days / half_life) within the segment),
    filled with time-decayed popularity. The clustering runs on up to `max_customers` sampled
    customers; all others join their nearest mode."""

    name: ClassVar[str] = "segments"
    fallback: ClassVar[str] = (
        "the segment's trending list for customers with attributes, purchases or not (segments "
        "from the customers table); decay (time-decayed popularity) for unknown customers, and "
        "for customers without purchases when segments come from the purchase profile"
    )
    # cold customers with attributes get their segment's list, not the unknown customers' list
    cold_start_by_attributes: ClassVar[bool] = True

    n_segments: int = 8
    source: str = "auto"
    numeric_age: bool = False
    half_life: float = 7.0
    prior: float = 100.0
    fill_half_life: float = 7.0
    max_customers: int = 50_000
    init: str = "auto"
    n_init: int = 4
    seed: int = 0
    postal_prefix: int = 1
    n_bands: int = 4
    max_levels: int = 30

    source_: str = field(default=None, init=False, repr=False)
    features_: list = field(default=None, init=False, repr=False)
    numeric_: list = field(default=None, init=False, repr=False)
    levels_: dict = field(default=None, init=False, repr=False)
    edges_: dict = field(default=None, init=False, repr=False)
    modes_: np.ndarray = field(default=None, init=False, repr=False)
    centres_: np.ndarray = field(default=None, init=False, repr=False)
    scale_: np.ndarray = field(default=None, init=False, repr=False)
    gamma_: float = field(default=None, init=False, repr=False)
    cost_: float = field(default=None, init=False, repr=False)
    labels_: np.ndarray = field(default=None, init=False, repr=False)
    sizes_: np.ndarray = field(default=None, init=False, repr=False)
    seg_items_: np.ndarray = field(default=None, init=False, repr=False)
    seg_scores_: np.ndarray = field(default=None, init=False, repr=False)
    fill_items_: np.ndarray = field(default=None, init=False, repr=False)
    fill_scores_: np.ndarray = field(default=None, init=False, repr=False)
    seen_: sp.csr_matrix = field(default=None, init=False, repr=False)
    # profile segments only (else None): each article's groups and last price, to place a
    # customer unknown at the fit by the profile of their purchases after it
    groups_: list = field(default=None, init=False, repr=False)
    item_groups_: np.ndarray = field(default=None, init=False, repr=False)
    item_price_: np.ndarray = field(default=None, init=False, repr=False)

    # ---- fitting -----------------------------------------------------------------------------

    def fit(self, data: Dataset) -> Self:
        if self.n_segments < 1 or self.max_customers < 1:
            raise ConfigError("segments: n_segments and max_customers must be at least 1")
        self.source_, self.edges_ = None, None
        attrs = self.attributes(data)
        codes, num = self._encode_fit(attrs)
        sample = self._sample(attrs.has)
        if len(sample) == 0 or (codes.shape[1] == 0 and num.shape[1] == 0):
            log.warning("segments: no customer attributes; one segment of everybody")
            modes, centres = np.zeros((1, codes.shape[1]), np.int64), np.zeros((1, num.shape[1]))
            self.cost_ = 0.0
        else:
            k = min(self.n_segments, len(sample))
            modes, centres, self.cost_ = cluster(
                codes[sample],
                num[sample],
                k,
                init=self.init,
                n_init=self.n_init,
                seed=self.seed,
                gamma=self.gamma_,
            )
        # segment 0 is the largest in the sample, so that ties (e.g. an unseen value) go there
        sample_labels = self._nearest(codes[sample], num[sample], modes, centres)
        order = np.argsort(-np.bincount(sample_labels, minlength=len(modes)), kind="stable")
        modes, centres = modes[order], centres[order]
        self.modes_ = self._decode(modes)
        self.centres_ = centres * self.scale_[1] + self.scale_[0]
        labels = np.full(data.n_users, -1, dtype=np.int32)
        labels[attrs.has] = self._nearest(codes[attrs.has], num[attrs.has], modes, centres)
        self.labels_ = labels
        self.sizes_ = np.bincount(labels[labels >= 0], minlength=len(modes)).astype(np.int64)
        log.info(
            "segments: %d from %s (%s), cost %.1f, sizes %s",
            len(modes),
            self.source_,
            ", ".join(self.features_ + self.numeric_),
            self.cost_,
            self.sizes_.tolist(),
        )
        self._trending(data)
        self._item_profile(data)
        return self

    def _item_profile(self, data: Dataset) -> None:
        """With profile segments: what `recommend_with` needs to profile new purchases."""
        self.groups_, self.item_groups_, self.item_price_ = None, None, None
        if self.source_ != "profile":
            return
        self.groups_ = [c for c in PROFILE_GROUPS if c in data.articles.columns]
        groups = [data.article_groups(c) for c in self.groups_]
        self.item_groups_ = (
            np.stack(groups, axis=1) if groups else np.empty((data.n_items, 0), dtype=str)
        )
        self.item_price_ = np.full(data.n_items, np.nan, dtype=np.float32)
        if "price" in data.transactions.columns:
            last = data.transactions.group_by("item").agg(pl.col("price").sort_by("t_dat").last())
            self.item_price_[last["item"].to_numpy()] = last["price"].fill_null(np.nan)

    def attributes(self, data: Dataset) -> Attributes:
        """The attributes segments are made of (the source is chosen at the first call, in fit)."""
        source = self.source_ or self.source
        if source not in SOURCES:
            raise ConfigError(f"segments: source must be one of {', '.join(SOURCES)}")
        if source in ("auto", "customers"):
            attrs = customer_attributes(
                data, numeric_age=self.numeric_age, postal_prefix=self.postal_prefix
            )
            if source == "customers" or _informative(attrs):
                self.source_ = "customers"
                return attrs
        attrs, self.edges_ = purchase_profile(data, self.edges_, self.n_bands)
        self.source_ = "profile"
        return attrs

    def _sample(self, has: np.ndarray) -> np.ndarray:
        """Up to `max_customers` customers with attributes, drawn with the seed (sorted)."""
        eligible = np.flatnonzero(has)
        if len(eligible) <= self.max_customers:
            return eligible
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(eligible, self.max_customers, replace=False))

    def _encode_fit(self, attrs: Attributes) -> tuple[np.ndarray, np.ndarray]:
        """Choose the levels of each category (the `max_levels` - 1 most frequent, the rest
        pooled as "(other)"; single-valued columns dropped) and standardise the numbers."""
        has = attrs.has
        self.levels_, keep = {}, []
        for j, col in enumerate(attrs.cat_names):
            values, counts = np.unique(attrs.cat[has, j], return_counts=True)
            if len(values) < 2:
                continue
            if len(values) > self.max_levels:
                top = np.lexsort((values, -counts))[: self.max_levels - 1]
                values = np.sort(np.append(values[top], OTHER))
            self.levels_[col] = values.tolist()
            keep.append(j)
        self.features_ = [attrs.cat_names[j] for j in keep]
        self.numeric_ = list(attrs.num_names)
        num = attrs.num[has]
        mean = np.nanmean(num, axis=0) if len(num) else np.zeros(num.shape[1])
        std = np.nanstd(num, axis=0) if len(num) else np.ones(num.shape[1])
        self.scale_ = np.stack([np.nan_to_num(mean), np.where(std > 0, std, 1.0)])
        self.gamma_ = 0.5  # Huang (1997): about half the standard deviation of the numbers
        return self._encode(attrs.cat[:, keep]), self._scale(attrs.num, impute=True)

    def _encode(self, cat: np.ndarray) -> np.ndarray:
        """(n, n_features) int codes of category strings; values outside the levels are
        "(other)" where that level exists, else -1 (they match no mode)."""
        codes = np.full(cat.shape, -1, dtype=np.int64)
        for j, col in enumerate(self.features_):
            levels = np.asarray(self.levels_[col])
            pos = np.clip(np.searchsorted(levels, cat[:, j]), 0, len(levels) - 1)
            found = levels[pos] == cat[:, j]
            other = int(np.searchsorted(levels, OTHER)) if OTHER in self.levels_[col] else -1
            codes[:, j] = np.where(found, pos, other)
        return codes

    def _decode(self, codes: np.ndarray) -> np.ndarray:
        """(k, n_features) category strings of coded modes."""
        if not self.features_:
            return np.empty((len(codes), 0), dtype=str)
        columns = [np.asarray(self.levels_[c])[codes[:, j]] for j, c in enumerate(self.features_)]
        return np.stack(columns, axis=1).astype(str)

    def _scale(self, num: np.ndarray, *, impute: bool = False) -> np.ndarray:
        """Standardised numbers; NaN (unknown) becomes the mean when `impute` (for the fit)."""
        z = (num - self.scale_[0]) / self.scale_[1]
        return np.nan_to_num(z, nan=0.0) if impute else z

    def _nearest(
        self,
        codes: np.ndarray,
        num: np.ndarray,
        modes: np.ndarray | None = None,
        centres: np.ndarray | None = None,
        given: np.ndarray | None = None,
    ) -> np.ndarray:
        """(n,) index of the nearest mode (ties: the lower index), vectorised in batches.

        Hand-written instead of KModes.predict (same dissimilarity, same first-index ties): that
        loops over rows in Python, 1.2 s per 100,000 customers against 0.03 s here, and it
        cannot match on the given attributes only.
        """
        if modes is None:
            modes = self._encode(self.modes_)
            centres = self._scale(self.centres_)
        out = np.empty(len(codes), dtype=np.int32)
        for s in range(0, len(codes), ASSIGN_BATCH):
            part = slice(s, s + ASSIGN_BATCH)
            g = None if given is None else given[part]
            dist = dissimilarity(codes[part], num[part], modes, centres, self.gamma_, g)
            out[part] = np.argmin(dist, axis=1)
        return out

    def _trending(self, data: Dataset) -> None:
        """Each segment's top articles by time-decayed purchases, shrunk towards the global ones
        by `prior` pseudo-purchases, and the global fill list."""
        labels = self.labels_
        users = np.flatnonzero(labels >= 0)
        member = sp.csr_matrix(
            (np.ones(len(users), dtype=np.float32), (labels[users], users)),
            shape=(len(self.modes_), data.n_users),
        )
        weights = data.user_items(half_life=self.half_life)
        counts = sp.csr_matrix(member @ weights)
        counts.eliminate_zeros()
        if self.prior > 0:  # (c_s(i) + prior * g(i) / G) / (m_s + prior): a Dirichlet prior
            total = np.asarray(weights.sum(axis=0)).ravel()
            share = total / max(total.sum(), 1e-12)
            mass = np.asarray(counts.sum(axis=1))
            scores = (counts.toarray() + self.prior * share) / (mass + self.prior)
            recs = top_k_dense(np.where(scores > 0, scores, -np.inf), LIST_LENGTH)
        else:
            recs = row_top_k(counts, LIST_LENGTH)
        self.seg_items_, self.seg_scores_ = recs.items, np.maximum(recs.scores, 0)
        self.fill_items_, self.fill_scores_ = popularity_fallback(data, self.fill_half_life)
        self.seen_ = data.user_items(binary=True)

    # ---- serving -------------------------------------------------------------------------------

    def recommend(self, users: np.ndarray, k: int, *, exclude_seen: bool = False) -> Recs:
        return self.recommend_with(users, None, k, exclude_seen=exclude_seen)

    def recommend_with(
        self,
        users: np.ndarray,
        extra: list[np.ndarray] | None,
        k: int,
        *,
        exclude_seen: bool = False,
    ) -> Recs:
        """`recommend`, counting `extra[i]` (articles users[i] bought after the fit, on one
        visit): with segments from the purchase profile, a customer without a segment (unknown
        at the fit, or without purchases) joins the segment nearest to the profile of these
        purchases; a customer with a segment keeps it until the refit (segments from the
        customers table do not depend on purchases). `exclude_seen` leaves these out too."""

        def serve(u: np.ndarray, new: sp.csr_matrix | None) -> Recs:
            seen = seen_with(rows_of(self.seen_, u), new) if exclude_seen else None
            return self._serve(self._segments_with(u, new), k, seen)

        return batched_with(users, extra, self.seen_.shape[1], serve)

    def segment_of(self, users: np.ndarray) -> np.ndarray:
        """(n,) segment of user indices; -1 for unknown users and users without attributes."""
        users = np.asarray(users, dtype=np.int64)
        known = (users >= 0) & (users < len(self.labels_))
        return np.where(known, self.labels_[np.where(known, users, 0)], -1).astype(np.int32)

    def _segments_with(self, users: np.ndarray, new: sp.csr_matrix | None) -> np.ndarray:
        """`segment_of`, with the customers without a segment who have rows in `new` placed
        by the profile of those purchases (profile segments only)."""
        segments = self.segment_of(users)
        if new is None or self.item_groups_ is None:
            return segments
        rows = np.flatnonzero((segments < 0) & (np.diff(new.indptr) > 0))
        if not len(rows):
            return segments
        bought = new[rows].tocoo()
        repeat = np.maximum(np.rint(bought.data), 1).astype(np.int64)  # a count per article
        user, item = np.repeat(bought.row, repeat), np.repeat(bought.col, repeat)
        columns = {
            "user": user.astype(np.int32),
            "item": item.astype(np.int32),
            "t_dat": np.zeros(len(item), dtype=np.int32),  # one visit
            **{g: self.item_groups_[item, j] for j, g in enumerate(self.groups_)},
        }
        edges = dict(self.edges_ or {})
        if "price_band" in edges:
            columns["price"] = self.item_price_[item]
        tx = pl.DataFrame(columns).with_columns(
            *(pl.col(g).replace(UNKNOWN, None) for g in self.groups_),
            *([pl.col("price").fill_nan(None)] if "price" in columns else []),
        )
        attrs, _ = profile_of(tx, self.groups_, len(rows), edges, self.n_bands)
        cat = np.full((len(rows), len(self.features_)), UNKNOWN, dtype=object)
        for j, name in enumerate(self.features_):
            if name in attrs.cat_names:  # not the sales channel: unknown for new purchases
                cat[:, j] = attrs.cat[:, attrs.cat_names.index(name)]
        cat = cat.astype(str)
        given = cat != UNKNOWN
        placed = given.any(axis=1)  # nothing known (as `assign` with no attributes): stay -1
        segments[rows[placed]] = self._nearest(
            self._encode(cat[placed]), np.empty((int(placed.sum()), 0)), given=given[placed]
        )
        return segments

    def _serve(self, segments: np.ndarray, k: int, seen: sp.csr_matrix | None) -> Recs:
        """Each row's segment list, then the global list; the articles of the row of `seen`
        (one row per segment given, or None) skipped."""
        popular = rank_list(self.fill_items_, self.fill_scores_, len(segments), k, seen)
        width = k + (int(np.diff(seen.indptr).max(initial=0)) if seen is not None else 0)
        rows = np.where(segments >= 0, segments, 0)
        items = np.where((segments >= 0)[:, None], self.seg_items_[rows, :width], -1)
        keep = items >= 0
        if seen is not None:
            keep &= ~hit_matrix(items, seen)
        return fill(first_k(items, self.seg_scores_[rows, :width], keep, k), popular, k)

    # ---- new customers ---------------------------------------------------------------------------

    def options(self) -> dict[str, list[str] | str]:
        """What `assign` accepts: each category's values, and "number" for numeric attributes."""
        return {**self.levels_, **dict.fromkeys(self.numeric_, "number")}

    def assign(self, attributes: dict[str, object]) -> int:
        """The segment of a customer described by `attributes` (any subset of `options()`; raw
        `age`, `postal_code` and `price` are turned into band / prefix): the nearest mode on the
        attributes given only. -1 (the global list) when none is given."""
        codes, num, given = self._attribute_row(attributes)
        if not given.any() and not np.isfinite(num).any():
            return -1
        return int(self._nearest(codes, num, given=given)[0])

    def recommend_attributes(self, attributes: dict[str, object], k: int) -> Recs:
        """(1, k) recommendations for a new customer: their segment's trending list, filled."""
        segment = np.array([self.assign(attributes)], dtype=np.int32)
        return self._serve(segment, k, None)

    def _attribute_row(self, attributes: dict[str, object]) -> tuple[np.ndarray, ...]:
        """(1, n_features) codes, (1, n_num) standardised numbers (NaN: not given), given mask."""
        values = dict(attributes)
        raw: dict[str, Any] = {}
        try:
            if "age" in values and "age" not in self.numeric_:
                age = values.pop("age")
                raw["age_band"] = None if age is None else _age_band(pl.Series([float(age)]))[0]
            if "price" in values and "price_band" in (self.edges_ or {}):
                price = np.array([float(values.pop("price"))])
                raw["price_band"] = _band(price, self.edges_["price_band"])[0]
            num = np.array(
                [[np.nan if values.get(c) is None else float(values[c]) for c in self.numeric_]],
                dtype=np.float64,
            ).reshape(1, len(self.numeric_))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"segments: age and price must be numbers ({exc})") from None
        if "postal_code" in values:
            code = values.pop("postal_code")
            raw["postal_prefix"] = None if code is None else str(code)[: self.postal_prefix]
        for key in list(values):  # "index_group" for the column "index_group_name"
            if key not in self.features_ and f"{key}_name" in self.features_:
                values[f"{key}_name"] = values.pop(key)
        values = {**raw, **values}
        unknown = set(values) - set(self.features_) - set(self.numeric_)
        if unknown:
            raise ConfigError(
                f"segments: unknown attributes {', '.join(sorted(unknown))}; "
                f"known: {', '.join(self.features_ + self.numeric_)}"
            )
        for col in self.features_:  # a value outside the levels is a mistake, unless rare
            levels, value = self.levels_[col], values.get(col)  # ones were pooled as "(other)"
            if value is not None and OTHER not in levels and str(value) not in levels:
                raise ConfigError(
                    f"segments: {col} must be one of {', '.join(levels)}, not {str(value)[:60]!r}"
                )
        cat = np.array([[str(values.get(c)) for c in self.features_]], dtype=object).astype(str)
        given = np.array([[values.get(c) is not None for c in self.features_]])
        return self._encode(cat), self._scale(num), given

    def segment_customers(self, data: Dataset) -> np.ndarray:
        """(n_users,) segment of every customer of `data` (e.g. the full data after fitting on
        a split, or with new customers): -1 where there are no attributes."""
        attrs = self.attributes(data)
        index = [attrs.cat_names.index(c) for c in self.features_]
        codes, num = self._encode(attrs.cat[:, index]), self._scale(attrs.num, impute=True)
        out = np.full(data.n_users, -1, dtype=np.int32)
        out[attrs.has] = self._nearest(codes[attrs.has], num[attrs.has])
        return out


# ---------------------------------------------------------------------------------------------
# Choosing k.


def knee(ks: list[int], costs: list[float]) -> int:
    """The k farthest from the straight line between the first and the last (k, cost) point,
    both axes scaled to [0, 1]: where adding segments stops paying off."""
    x = np.asarray(ks, dtype=np.float64)
    y = np.asarray(costs, dtype=np.float64)
    if len(x) < 3:
        return int(x[0])
    x = (x - x[0]) / (x[-1] - x[0])
    y = (y - y[-1]) / (y[0] - y[-1]) if y[0] != y[-1] else np.zeros_like(y)
    # distance to the line from (0, 1) to (1, 0): |x + y - 1| / sqrt(2)
    return int(ks[int(np.argmax(np.abs(x + y - 1)))])


def elbow(
    data: Dataset, k_values: list[int], out_dir: Path, seed: int = 0, **params: Any
) -> dict[str, Any]:
    """Fit k-modes for every k on the same attributes (parameters as for `Segments`), write
    `elbow.json` (cost per customer for each k, the suggested k) and `elbow.png` to `out_dir`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not k_values or min(k_values) < 1:
        raise ConfigError("elbow: give k values of at least 1")
    from fashionrec.models import registry

    ks = sorted(set(k_values))
    model = registry.create("segments", **{**params, "seed": seed})
    attrs = model.attributes(data)
    codes, num = model._encode_fit(attrs)
    sample = model._sample(attrs.has)
    n = max(len(sample), 1)
    rows = np.concatenate([num[sample], codes[sample].astype(np.float64)], axis=1)
    distinct = len(np.unique(rows, axis=0))
    if ks[0] > distinct:
        raise ConfigError(
            f"elbow: the customers have {distinct} distinct attribute rows, fewer than any k "
            f"({ks[0]}..{ks[-1]}); give a k of at most {distinct}"
        )
    if ks[-1] > distinct:  # every distinct row its own mode: the clustering of k = distinct
        log.warning("elbow: k above the %d distinct attribute rows repeat k = %d (cost 0): %s",
                    distinct, distinct, ", ".join(str(k) for k in ks if k > distinct))  # fmt: skip
    costs = []
    for k in ks:
        cost = cluster(
            codes[sample],
            num[sample],
            k,
            init=model.init,
            n_init=model.n_init,
            seed=seed,
            gamma=model.gamma_,
        )[2]
        costs.append(cost / n)
        log.info("elbow: k=%d cost per customer %.4f", k, costs[-1])
    result = {
        "source": model.source_,
        "attributes": model.features_ + model.numeric_,
        "customers": len(sample),
        "k": ks,
        "cost": costs,
        "suggested_k": knee(ks, costs),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, costs, marker="o")
    ax.axvline(result["suggested_k"], color="grey", linestyle="--", label="suggested k")
    ax.set(xlabel="k (segments)", ylabel="cost per customer", title="k-modes elbow")
    ax.legend()
    fig.tight_layout()
    replace_with(out_dir / "elbow.png", lambda tmp: fig.savefig(tmp, dpi=100))
    plt.close(fig)
    write_text(out_dir / "elbow.json", json.dumps(result, indent=2))
    return result
