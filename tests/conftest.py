"""Fixtures: the real data in ../shared (skipped with a reason when absent) and tiny tables."""

from __future__ import annotations

import os
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fashionrec.data.dataset import Dataset
from fashionrec.data.ingest import ingest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FASHIONREC_SHARED_DATA", ROOT.parent / "shared" / "data"))
BUNDLED = ROOT / "data" / "online-retail"


def shared(name: str) -> Path:
    """A real data set from ../shared/data, or skip: a user's own clone has no ../shared."""
    path = SHARED / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is not here (only in the project workspace)")
    return path


MADE_END = date(2024, 3, 31)  # the last day of the datasets made by make_dataset


def make_dataset(
    rows: list[tuple[int, int, int]],
    n_items: int,
    customers: dict[str, list] | None = None,
    n_users: int | None = None,
    articles: dict[str, list | pl.Series] | None = None,
    prices: list[float] | None = None,
) -> Dataset:
    """A Dataset built directly (no ingest) from (days before MADE_END, user, item) rows in any
    order (sorted oldest first; `prices` follow their rows), articles A0.. and customers c0.."""
    n_users = n_users or len(next(iter(customers.values())))
    order = sorted(range(len(rows)), key=lambda j: -rows[j][0])
    rows = [rows[j] for j in order]
    tx = pl.DataFrame(
        {
            "t_dat": [MADE_END - timedelta(days=d) for d, _, _ in rows],
            "user": pl.Series([u for _, u, _ in rows], dtype=pl.Int32),
            "item": pl.Series([i for _, _, i in rows], dtype=pl.Int32),
        }
    )
    if prices is not None:
        tx = tx.with_columns(price=pl.Series([prices[j] for j in order], dtype=pl.Float32))
    arts = pl.DataFrame(
        {
            "item": pl.Series(range(n_items), dtype=pl.Int32),
            "article_id": [f"A{i}" for i in range(n_items)],
            **(articles or {}),
        }
    )
    custs = pl.DataFrame(
        {
            "user": pl.Series(range(n_users), dtype=pl.Int32),
            "customer_id": [f"c{u}" for u in range(n_users)],
            **(customers or {}),
        }
    )
    return Dataset(tx, arts, custs, {"dataset_hash": "test"})


def write_csv(path: Path, header: str, rows: list[str], *, newline: str = "\n") -> Path:
    path.write_text(newline.join([header, *rows]) + newline)
    return path


def write_tables(
    root: Path,
    transactions: list[tuple[str, str, str]] | list[str],
    articles: list[str],
    customers: list[str] | None = None,
) -> Path:
    """CSV tables in `root`; transactions as (t_dat, customer_id, article_id) or raw lines."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [t if isinstance(t, str) else ",".join(t) for t in transactions]
    write_csv(root / "transactions_train.csv", "t_dat,customer_id,article_id", lines)
    write_csv(root / "articles.csv", "article_id,prod_name", [f"{a},name {a}" for a in articles])
    if customers is not None:
        write_csv(root / "customers.csv", "customer_id,age", customers)
    return root


def known_answer_rows() -> list[tuple[str, str, str]]:
    """A store where the right answers are obvious.

    - A1 is what everybody bought in the last week: the top popular / decayed article.
    - u0 bought A4 three times recently (and nothing else recent): their top repurchase.
    - A0 was popular long ago only.
    """
    end = date(2024, 3, 31)
    day = lambda n: str(end - timedelta(days=n))  # noqa: E731
    rows = [(day(90 + i % 5), f"u{i}", "A0") for i in range(12)]
    rows += [(day(i % 6), f"u{i}", "A1") for i in range(1, 12)]
    rows += [(day(20), "u1", "A2"), (day(30), "u2", "A3"), (day(3), "u3", "A5")]
    rows += [(day(1), "u0", "A4"), (day(2), "u0", "A4"), (day(4), "u0", "A4")]
    return rows


@pytest.fixture(scope="session")
def known_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    root = tmp_path_factory.mktemp("known")
    write_tables(root / "src", known_answer_rows(), [f"A{i}" for i in range(7)])
    ingest(root / "src", root / "ds")
    return Dataset.load(root / "ds")


@pytest.fixture(scope="session")
def random_dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """60 users, 40 articles, ~900 Zipf-skewed purchases over 120 days (seeded)."""
    rng = np.random.default_rng(7)
    n = 900
    items = np.minimum(rng.zipf(1.6, n) - 1, 39)
    users = rng.integers(0, 60, n)
    days = rng.integers(0, 120, n)
    start = date(2023, 1, 1)
    rows = [
        (str(start + timedelta(days=int(d))), f"c{u:03d}", f"{i:03d}")
        for d, u, i in zip(days, users, items, strict=True)
    ]
    root = tmp_path_factory.mktemp("random")
    write_tables(
        root / "src",
        rows,
        [f"{i:03d}" for i in range(40)],
        customers=[f"c{u:03d},{20 + u}" for u in range(64)],
    )
    ingest(root / "src", root / "ds")
    return Dataset.load(root / "ds")


@pytest.fixture(scope="session")
def retail(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """The bundled Online Retail data set (CC BY 4.0), ingested once."""
    out = tmp_path_factory.mktemp("retail") / "ds"
    ingest(BUNDLED, out)
    return Dataset.load(out)


@pytest.fixture(autouse=True)
def _runs_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run records of CLI calls in tests go to a temporary directory, not ./runs."""
    monkeypatch.setenv("FASHIONREC_RUNS", str(tmp_path_factory.getbasetemp() / "runs"))
