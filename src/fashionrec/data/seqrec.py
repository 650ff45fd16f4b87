"""Sequence data: the one-line-per-user benchmark format of sequential recommendation (S3-Rec,
ICLRec: `user item item ...`, oldest first) read into a Dataset, and the H&M thesis' two changes
to purchase sequences: removal of consecutive repeat purchases (one rule, `repeats`, for CSR-style
sequences and whole Datasets) and the order ablation (`reorder`).

A seqrec file has no dates: every purchase gets the same date and the file order is the time
order (the Dataset keeps the input order within a day), so `Dataset.sequences()`, the
leave-last-out split and the sequence models work unchanged; popularity is a plain count.
"""

from __future__ import annotations

import gzip
import hashlib
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl

from fashionrec.data.dataset import Dataset
from fashionrec.errors import DataError

DAY = date(2014, 7, 23)  # an arbitrary constant: the Amazon 2014 review data ends in July 2014
ORDERS = ("true", "day-shuffle", "random")  # the sequence orders of the thesis' ablation


def read_seqrec(path: str | Path) -> Dataset:
    """A Dataset from a seqrec file (plain or .gz; tokens separated by any whitespace): customers
    in file order, articles sorted by their integer id, one purchase per listed item."""
    path = Path(path)
    if not path.is_file():
        raise DataError("not a file" if path.exists() else "file does not exist", file=path)
    raw = path.read_bytes()
    try:
        text = (gzip.decompress(raw) if path.name.endswith(".gz") else raw).decode()
    except (OSError, EOFError) as exc:
        raise DataError(f"not a gzip file ({exc})", file=path) from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1 if not path.name.endswith(".gz") else None
        raise DataError("not UTF-8 text", file=path, row=line) from None
    lines = pl.DataFrame({"line": text.splitlines()}, schema={"line": pl.String})
    lines = lines.with_row_index("line_no", offset=1)
    if not lines.filter(pl.col("line").str.strip_chars() != "").height:
        raise DataError("the file has no lines", file=path)
    tokens = lines.with_columns(pl.col("line").str.extract_all(r"\S+")).filter(
        pl.col("line").list.len() > 0
    )
    short = tokens.filter(pl.col("line").list.len() < 2)
    if short.height:
        raise DataError(
            "a line needs a user id and at least one item", file=path, row=_first(short)
        )
    long = tokens.select(
        "line_no",
        pl.col("line").list.first().alias("customer_id"),
        pl.col("line").list.slice(1).alias("article_id"),
    ).explode("article_id")
    bad = long.filter(pl.col("article_id").cast(pl.Int64, strict=False).is_null())
    if bad.height:
        raise DataError(
            f"item {bad['article_id'][0]!r} is not an integer", file=path, row=_first(bad)
        )
    long = long.with_columns(pl.col("article_id").cast(pl.Int64).cast(pl.String))
    users = tokens.select(pl.col("line").list.first().alias("customer_id"))
    if users["customer_id"].is_duplicated().any():
        dup = tokens.filter(pl.col("line").list.first().is_duplicated())
        user = dup["line"][0][0]
        lines_of = dup.filter(pl.col("line").list.first() == user)["line_no"]
        raise DataError(
            f"user {user!r} has more than one line (first at line {lines_of[0]})",
            file=path,
            row=int(lines_of[1]),
        )
    customers = users.with_row_index("user").with_columns(pl.col("user").cast(pl.Int32))
    articles = (
        long.select(pl.col("article_id").cast(pl.Int64))
        .unique()
        .sort("article_id")
        .with_row_index("item")
        .select(pl.col("item").cast(pl.Int32), pl.col("article_id").cast(pl.String))
    )
    transactions = (
        long.join(customers, on="customer_id", maintain_order="left")
        .join(articles, on="article_id", maintain_order="left")
        .select(pl.lit(DAY).alias("t_dat"), "user", "item")
    )
    manifest = {
        "format": "fashionrec-dataset/1",
        "source": str(path),
        "id_format": "raw",
        "dataset_hash": hashlib.sha256(raw).hexdigest(),
        "rows": {"transactions": transactions.height},
        "n_customers": customers.height,
        "n_articles": articles.height,
    }
    return Dataset(transactions, articles, customers, manifest)


def _first(frame: pl.DataFrame) -> int:
    return int(frame["line_no"][0])


# ---------------------------------------------------------------------------------------------
# CSR-style sequences (indptr, items) as returned by Dataset.sequences(): each customer's purchases
# in time order.


def owners(indptr: np.ndarray) -> np.ndarray:
    """The row (customer) of every element of a CSR-style array."""
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def keep_where(indptr: np.ndarray, keep: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """(indptr, *arrays) with only the elements where the boolean `keep` is set."""
    out = np.zeros_like(indptr)
    np.cumsum(np.bincount(owners(indptr)[keep], minlength=len(indptr) - 1), out=out[1:])
    return (out, *(a[keep] for a in arrays))


def repeats(indptr: np.ndarray, items: np.ndarray) -> np.ndarray:
    """The thesis' rule: True where a purchase repeats the customer's previous article (several
    units of one article are one step of the sequence, not a transition)."""
    user = owners(indptr)
    out = np.zeros(len(items), dtype=bool)
    out[1:] = (items[1:] == items[:-1]) & (user[1:] == user[:-1])
    return out


def drop_repeats(
    indptr: np.ndarray, items: np.ndarray, *aligned: np.ndarray
) -> tuple[np.ndarray, ...]:
    """(indptr, items, *aligned) without the `repeats` (`aligned`: per-item arrays, e.g. days)."""
    return keep_where(indptr, ~repeats(indptr, items), items, *aligned)


def reorder(
    indptr: np.ndarray, items: np.ndarray, days: np.ndarray, order: str, seed: int
) -> np.ndarray:
    """The thesis' order ablation (one of ORDERS): "true" time order, "day-shuffle" (random order
    within each purchase day) or "random" (random order of the whole sequence)."""
    if order == "true":
        return items
    noise = np.random.default_rng(seed).random(len(items))
    keys = (noise, days, owners(indptr)) if order == "day-shuffle" else (noise, owners(indptr))
    return items[np.lexsort(keys)]


def without_repeats(data: Dataset) -> Dataset:
    """`data` without the purchases that repeat the customer's previous article (`repeats`)."""
    indptr, items, _ = data.sequences()
    # the transaction rows of `items`: sequences() lists each customer's rows in table order
    rows = np.argsort(data.transactions["user"].to_numpy(), kind="stable")
    keep = np.ones(len(rows), dtype=bool)
    keep[rows[repeats(indptr, items)]] = False
    return data.with_transactions(data.transactions.filter(pl.Series(keep)))
