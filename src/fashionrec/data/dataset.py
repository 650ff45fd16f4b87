"""Dataset: the ingested tables with dense int32 indices, and the matrices models are fitted on.

Models never see string ids: `IdMap` turns them into indices at the edges (CLI, API), and
every split keeps the full id space so that indices mean the same thing in train and test.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, replace
from datetime import date, timedelta
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from fashionrec.errors import ConfigError, DataError

TABLE_FILES = ("transactions.parquet", "articles.parquet", "customers.parquet", "manifest.json")
AGE_BANDS = (16, 25, 35, 45, 55, 65)  # lower bounds: 16-24, 25-34, ..., 65+


def decay_table(max_age: int, half_life: float) -> np.ndarray:
    """(max_age + 1,) float32: 0.5 ** (age / half_life) for each whole-day age, the precision
    every model and the Spark engine add up.

    Python's scalar power on purpose: numpy's vectorised exp2 takes a different code path on
    CPUs with AVX-512, and a last-bit difference there reorders near-tied articles, so the
    same data would score differently from machine to machine.

    >>> decay_table(2, 1.0).tolist()
    [1.0, 0.5, 0.25]
    """
    return np.array([0.5 ** (age / half_life) for age in range(max_age + 1)], dtype=np.float32)


@dataclass(frozen=True, eq=False)
class IdMap:
    """External string ids <-> dense indices 0..n-1 (the index is the position in `ids`)."""

    ids: pl.Series

    def __len__(self) -> int:
        return self.ids.len()

    def to_index(self, ids: list[str] | np.ndarray | pl.Series) -> np.ndarray:
        """int32 indices for `ids`; -1 for an id we have never seen."""
        if len(ids) <= 16:  # a request for one customer: a dict lookup, not a join
            lookup = self._lookup
            return np.array([lookup.get(i, -1) for i in ids], dtype=np.int32)
        query = pl.DataFrame({"id": pl.Series(ids, dtype=pl.String)})
        table = pl.DataFrame({"id": self.ids, "idx": np.arange(len(self), dtype=np.int32)})
        joined = query.join(table, on="id", how="left", maintain_order="left")
        return joined["idx"].fill_null(-1).to_numpy().astype(np.int32)

    @cached_property
    def _lookup(self) -> dict[str, int]:
        return {value: i for i, value in enumerate(self.ids.to_list())}

    def to_ids(self, index: np.ndarray) -> np.ndarray:
        """String ids for indices (object array); -1 maps to None."""
        index = np.asarray(index)
        out = np.full(index.shape, None, dtype=object)
        valid = index >= 0
        out[valid] = self.ids.to_numpy()[index[valid]]
        return out


@dataclass(frozen=True)
class Dataset:
    """Transactions (t_dat, user, item, [price, sales_channel_id]) plus articles and customers.

    `transactions` is sorted by t_dat with the input order kept within a day, so the last row of
    a user is their last purchase.
    """

    transactions: pl.DataFrame
    articles: pl.DataFrame
    customers: pl.DataFrame
    manifest: dict

    # ---- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> Dataset:
        """Read a directory written by `fashionrec ingest`."""
        path = Path(path)
        missing = [f for f in TABLE_FILES if not (path / f).exists()]
        if missing:
            raise ConfigError(
                f"{path}: not a fashionrec dataset (missing {', '.join(missing)}); "
                "create one with `fashionrec ingest SRC_DIR --out DATASET_DIR`"
            )
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"not valid JSON ({exc})", file=path / "manifest.json") from None
        if not isinstance(manifest, dict) or not manifest.get("dataset_hash"):
            raise DataError(
                "not a fashionrec manifest (no dataset_hash); ingest the data again",
                file=path / "manifest.json",
            )
        try:
            data = cls(
                transactions=pl.read_parquet(path / "transactions.parquet"),
                articles=pl.read_parquet(path / "articles.parquet"),
                customers=pl.read_parquet(path / "customers.parquet"),
                manifest=manifest,
            )
        except (pl.exceptions.PolarsError, OSError) as exc:
            raise DataError(f"cannot read the dataset ({exc})", file=path) from exc
        _check_tables(data, path)
        return data

    # ---- sizes and ids ---------------------------------------------------------------------

    @property
    def n_users(self) -> int:
        return self.customers.height

    @property
    def n_items(self) -> int:
        return self.articles.height

    @cached_property
    def user_ids(self) -> IdMap:
        return IdMap(self.customers["customer_id"])

    @cached_property
    def item_ids(self) -> IdMap:
        return IdMap(self.articles["article_id"])

    @property
    def min_date(self) -> date:
        return self.transactions["t_dat"].min()

    @property
    def max_date(self) -> date:
        return self.transactions["t_dat"].max()

    @property
    def hash(self) -> str:
        return str(self.manifest.get("dataset_hash", ""))

    # ---- views -----------------------------------------------------------------------------

    def with_transactions(self, transactions: pl.DataFrame) -> Dataset:
        """The same catalogue and customers with other transactions (a split or window)."""
        return replace(self, transactions=transactions)

    def window(self, start: date | None = None, end: date | None = None) -> Dataset:
        """Transactions with start <= t_dat < end (either bound optional)."""
        cond = pl.lit(True)
        if start is not None:
            cond &= pl.col("t_dat") >= start
        if end is not None:
            cond &= pl.col("t_dat") < end
        return self.with_transactions(self.transactions.filter(cond))

    def last_days(self, days: int) -> Dataset:
        """The last `days` days of transactions (relative to the newest date)."""
        if self.transactions.is_empty():
            return self
        return self.window(start=self.max_date - timedelta(days=days - 1))

    # ---- matrices ------------------------------------------------------------------------------

    def age_days(self) -> np.ndarray:
        """Age of each transaction in days before the newest date (0 = the last day)."""
        if self.transactions.is_empty():
            return np.zeros(0, dtype=np.float32)
        ages = (pl.lit(self.max_date) - self.transactions["t_dat"]).dt.total_days()
        return self.transactions.select(ages).to_series().to_numpy().astype(np.float32)

    def decay(self, half_life: float) -> np.ndarray:
        """(n_transactions,) float32 weight 0.5 ** (age_days / half_life) of each transaction."""
        ages = self.age_days().astype(np.int64)
        return decay_table(int(ages.max(initial=0)), half_life)[ages]

    def user_items(self, *, half_life: float | None = None, binary: bool = False) -> sp.csr_matrix:
        """(n_users, n_items) float32 CSR of purchase counts, or of 0.5**(age/half_life) weights.

        Repeat purchases add up, so the value mixes frequency and (with a half-life) recency.
        """
        tx = self.transactions
        weights = (
            np.ones(tx.height, dtype=np.float32) if half_life is None else self.decay(half_life)
        )
        mat = sp.csr_matrix(
            (weights, (tx["user"].to_numpy(), tx["item"].to_numpy())),
            shape=(self.n_users, self.n_items),
            dtype=np.float32,
        )
        mat.sum_duplicates()
        if binary:
            mat.data[:] = 1.0
        return mat

    def item_popularity(self, *, half_life: float | None = None) -> np.ndarray:
        """(n_items,) float64 purchase counts (or time-decayed counts)."""
        tx = self.transactions
        weights = None if half_life is None else self.decay(half_life)
        return np.bincount(tx["item"].to_numpy(), weights=weights, minlength=self.n_items).astype(
            np.float64
        )

    def item_user_share(self) -> np.ndarray:
        """(n_items,) share of buying customers who bought each item (for novelty)."""
        pairs = self.transactions.select("user", "item").unique()
        n_buyers = max(pairs["user"].n_unique(), 1)
        return np.bincount(pairs["item"].to_numpy(), minlength=self.n_items) / n_buyers

    def sequences(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-user time-ordered purchases as CSR-style (indptr (n_users+1,), items, days).

        `days` are days since 1970-01-01 (int32), so callers can window or weight by recency.
        """
        tx = self.transactions.with_row_index("_pos").sort(["user", "_pos"])
        users = tx["user"].to_numpy()
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=self.n_users), out=indptr[1:])
        days = tx["t_dat"].cast(pl.Int32).to_numpy()
        return indptr, tx["item"].to_numpy().astype(np.int32), days

    def last_purchase(self) -> np.ndarray:
        """(n_users,) date of each user's last purchase as days since epoch; -1 if none."""
        out = np.full(self.n_users, -1, dtype=np.int32)
        last = self.transactions.group_by("user").agg(pl.col("t_dat").max().cast(pl.Int32))
        out[last["user"].to_numpy()] = last["t_dat"].to_numpy()
        return out

    def buyers(self) -> np.ndarray:
        """Sorted indices of users with at least one transaction."""
        return np.unique(self.transactions["user"].to_numpy()).astype(np.int32)

    # ---- groupings for per-segment metrics ---------------------------------------------------

    def customer_groups(self, column: str) -> np.ndarray:
        """(n_users,) labels from a customers column, or `age_band` derived from age."""
        if column == "age_band":
            if "age" not in self.customers.columns:
                raise ConfigError("age_band needs an age column in the customers table")
            return _labels(_age_band(self.customers["age"]))
        if column not in self.customers.columns:
            raise ConfigError(f"no customers column {column!r}")
        return _labels(self.customers[column])

    def article_groups(self, column: str) -> np.ndarray:
        """(n_items,) labels from an articles column."""
        if column not in self.articles.columns:
            raise ConfigError(f"no articles column {column!r}")
        return _labels(self.articles[column])


def _age_band(age: pl.Series) -> pl.Series:
    """'16-24', '25-34', ..., '65+' ('<16' below, null where age is unknown)."""
    lows = list(AGE_BANDS)
    names = [f"<{lows[0]}"] + [f"{a}-{b - 1}" for a, b in itertools.pairwise(lows)]
    names = pl.Series([*names, f"{lows[-1]}+"], dtype=pl.String)
    values = age.cast(pl.Float64).to_numpy()
    bands = names.gather(np.searchsorted(lows, np.nan_to_num(values), side="right"))
    # gather + scatter: an object array with None first would not build a String Series
    return bands.scatter(np.flatnonzero(np.isnan(values)), None)


def _labels(series: pl.Series) -> np.ndarray:
    return series.cast(pl.String).fill_null("unknown").to_numpy().astype(str)


def _check_tables(data: Dataset, path: Path) -> None:
    """A DataError unless the tables have the columns and id ranges that ingest writes (a table
    copied from another dataset, or damaged, must not reach a model)."""
    need = {
        "transactions": ("t_dat", "user", "item"),
        "articles": ("item", "article_id"),
        "customers": ("user", "customer_id"),
    }
    for table, columns in need.items():
        frame = getattr(data, table)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(
                f"{table}.parquet lacks {', '.join(missing)}; ingest the data again", file=path
            )
    tx = data.transactions
    if tx.height and (
        int(tx["item"].max()) >= data.n_items or int(tx["user"].max()) >= data.n_users
    ):
        raise DataError(
            "transactions refer to articles or customers the tables do not have (tables from "
            "different datasets?); ingest the data again",
            file=path,
        )
