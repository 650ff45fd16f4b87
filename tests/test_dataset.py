"""Dataset matrices and id maps, and the splits, on tiny data with known answers."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from fashionrec.data import split
from fashionrec.data.dataset import Dataset
from fashionrec.data.ingest import ingest
from fashionrec.errors import ConfigError

from .conftest import write_tables

ROWS = [
    ("2024-01-01", "a", "X"),
    ("2024-01-01", "b", "Y"),
    ("2024-01-03", "a", "Y"),
    ("2024-01-05", "a", "X"),
    ("2024-01-08", "b", "Z"),
    ("2024-01-09", "c", "X"),
    ("2024-01-10", "a", "Z"),
]


@pytest.fixture
def data(tmp_path: Path) -> Dataset:
    write_tables(tmp_path / "src", ROWS, ["X", "Y", "Z", "W"])
    ingest(tmp_path / "src", tmp_path / "ds")
    return Dataset.load(tmp_path / "ds")


def test_id_maps(data: Dataset) -> None:
    assert data.item_ids.to_index(["Z", "nope", "X"]).tolist() == [2, -1, 0]
    assert data.user_ids.to_ids(np.array([2, -1])).tolist() == ["c", None]
    assert (data.n_users, data.n_items) == (3, 4)


def test_user_items_counts_and_decay(data: Dataset) -> None:
    counts = data.user_items().toarray()
    assert counts[0].tolist() == [2, 1, 1, 0]  # a: X twice, Y, Z
    decayed = data.user_items(half_life=1.0).toarray()
    # a bought Z on the newest day (weight 1), X 5 and 9 days before (2**-5 + 2**-9)
    assert decayed[0, 2] == pytest.approx(1.0)
    assert decayed[0, 0] == pytest.approx(2**-5 + 2**-9)
    assert data.user_items(binary=True).toarray()[0].tolist() == [1, 1, 1, 0]


def test_decay_weights_do_not_depend_on_the_cpu(data: Dataset) -> None:
    """numpy's vectorised exp2 has an AVX-512 path whose last bits differ, which reordered
    near-tied articles from machine to machine; the weights must be the same with it turned off
    (on a CPU without AVX-512 both runs take the same path)."""
    code = (
        "import sys; from fashionrec.data.dataset import decay_table; "
        "sys.stdout.write(decay_table(400, 30.0).tobytes().hex())"
    )
    off = "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR X86_V4"
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for env in ({}, {"NPY_DISABLE_CPU_FEATURES": off})
    ]
    assert runs[0] == runs[1]
    table = np.frombuffer(bytes.fromhex(runs[0]), dtype=np.float32)
    assert table[30] == np.float32(0.5) and table[60] == np.float32(0.25)
    assert data.decay(1.0).tolist() == [2**-9, 2**-9, 2**-7, 2**-5, 2**-2, 2**-1, 1.0]


def test_sequences_and_last_purchase(data: Dataset) -> None:
    indptr, items, days = data.sequences()
    assert indptr.tolist() == [0, 4, 6, 7]
    assert items[indptr[0] : indptr[1]].tolist() == [0, 1, 0, 2]  # a: X Y X Z in time order
    assert np.all(np.diff(days[0:4]) >= 0)
    last = data.last_purchase()
    assert last[1] == (date(2024, 1, 8) - date(1970, 1, 1)).days


def test_popularity_and_user_share(data: Dataset) -> None:
    assert data.item_popularity().tolist() == [3, 2, 2, 0]
    # X bought by a and c out of 3 buyers
    assert data.item_user_share()[0] == pytest.approx(2 / 3)


def test_week_split(data: Dataset) -> None:
    s = split.week(data, test_days=3)  # test 2024-01-08..10
    assert s.test.transactions["t_dat"].min() == date(2024, 1, 8)
    assert s.train.transactions.height == 4 and s.test.transactions.height == 3
    assert s.train.n_items == data.n_items  # same id space
    s2 = split.week(data, test_days=3, offset_days=3)  # test 2024-01-05..07
    assert s2.test.transactions.height == 1 and s2.train.transactions.height == 3


def test_rolling_windows_do_not_overlap(data: Dataset) -> None:
    folds = split.rolling(data, folds=2, test_days=3)
    assert [f.test.transactions["t_dat"].max() for f in folds] == [
        date(2024, 1, 10),
        date(2024, 1, 5),
    ]
    for f in folds:
        assert f.train.max_date < f.test.min_date


def test_leave_last_out(data: Dataset) -> None:
    s = split.leave_last_out(data)
    # a: X Y X Z -> test Z, valid X, train X Y; b: Y Z -> test Z, no valid; c: one purchase -> train
    test = sorted(zip(s.test.transactions["user"], s.test.transactions["item"], strict=True))
    assert test == [(0, 2), (1, 2)]
    assert s.valid.transactions.select("user", "item").rows() == [(0, 0)]
    assert s.train.transactions.height == 4


def test_time_fraction(data: Dataset) -> None:
    s = split.time_fraction(data, 0.7)  # span 10 days -> cutoff 2024-01-08
    assert s.train.max_date < date(2024, 1, 8) <= s.test.min_date
    # 0.8 of the 10 days (01-01..01-10, both counted) ends after 01-08: 5 rows train, 2 test
    s = split.time_fraction(data, 0.8)
    assert (s.train.transactions.height, s.test.transactions.height) == (5, 2)
    assert s.train.max_date == date(2024, 1, 8) and s.test.min_date == date(2024, 1, 9)


def test_split_errors(data: Dataset) -> None:
    with pytest.raises(ConfigError, match="no training"):
        split.week(data, test_days=30)
    with pytest.raises(ConfigError, match="unknown split"):
        split.make_split(data, "random")
    with pytest.raises(ConfigError):
        split.time_fraction(data, 1.5)


def test_age_bands_are_left_closed(random_dataset: Dataset) -> None:
    import polars as pl

    from fashionrec.data.dataset import _age_band

    ages = pl.Series([10.0, 16, 24, 25, 64, 65, 90, None])
    assert _age_band(ages).to_list() == [
        "<16",
        "16-24",
        "16-24",
        "25-34",
        "55-64",
        "65+",
        "65+",
        None,
    ]
    # unknown ages first (the full-scale customers table starts so; this once failed)
    assert _age_band(pl.Series([None, float("nan"), 30.0])).to_list() == [None, None, "25-34"]
    labels = random_dataset.customer_groups("age_band")  # ages 20 + customer number
    assert labels[0] == "16-24" and labels[5] == "25-34" and labels[63] == "65+"
    with pytest.raises(ConfigError):
        random_dataset.customer_groups("shoe_size")
