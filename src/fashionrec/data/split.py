"""Train/test splits: the Kaggle week protocol, leave-last-out, a time fraction, rolling folds."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import polars as pl

from fashionrec.data.dataset import Dataset
from fashionrec.errors import ConfigError

SPLITS = ("week", "leave-last-out", "time-fraction")


@dataclass(frozen=True)
class Split:
    """Train and test (and optionally validation) views of one Dataset, sharing its id space."""

    name: str
    train: Dataset
    test: Dataset
    valid: Dataset | None = None

    @property
    def label(self) -> str:
        tx = self.test.transactions
        if tx.is_empty():
            return f"{self.name} (empty test)"
        return f"{self.name} test {tx['t_dat'].min()}..{tx['t_dat'].max()}"


def _check(split: Split, data: Dataset) -> Split:
    span = f"the data spans {data.min_date}..{data.max_date}"
    if split.train.transactions.is_empty():
        raise ConfigError(
            f"{split.name} split: no training transactions before the test period ({span}; "
            "use fewer --test-days or --folds)"
        )
    if split.test.transactions.is_empty():
        raise ConfigError(f"{split.name} split: the test period has no transactions ({span})")
    return split


def week(data: Dataset, test_days: int = 7, offset_days: int = 0) -> Split:
    """Kaggle protocol: the last `test_days` days (ending `offset_days` before the newest date)
    are the test period, everything before is training."""
    if test_days < 1:
        raise ConfigError(f"--test-days must be at least 1, not {test_days}")
    end = data.max_date - timedelta(days=offset_days)
    start = end - timedelta(days=test_days - 1)
    test = data.window(start=start, end=end + timedelta(days=1))
    return _check(Split("week", data.window(end=start), test), data)


def time_fraction(data: Dataset, fraction: float = 0.7) -> Split:
    """The first `fraction` of the time span is training, the rest is test."""
    if not 0 < fraction < 1:
        raise ConfigError(f"--fraction must be between 0 and 1, not {fraction}")
    span = (data.max_date - data.min_date).days + 1
    cutoff: date = data.min_date + timedelta(days=max(1, round(span * fraction)))
    return _check(Split("time-fraction", data.window(end=cutoff), data.window(start=cutoff)), data)


def leave_last_out(data: Dataset) -> Split:
    """Each user's last purchase is test and the second last validation (users with >= 2 / >= 3
    purchases); all earlier purchases are training."""
    tx = data.transactions.with_row_index("_pos")
    from_end = pl.col("_pos").rank("ordinal", descending=True).over("user")
    count = pl.len().over("user")
    tx = tx.with_columns(from_end.alias("_from_end"), count.alias("_n"))
    test = (pl.col("_from_end") == 1) & (pl.col("_n") >= 2)
    valid = (pl.col("_from_end") == 2) & (pl.col("_n") >= 3)
    drop = ["_pos", "_from_end", "_n"]
    return _check(
        Split(
            "leave-last-out",
            data.with_transactions(tx.filter(~test & ~valid).drop(drop)),
            data.with_transactions(tx.filter(test).drop(drop)),
            data.with_transactions(tx.filter(valid).drop(drop)),
        ),
        data,
    )


def make_split(
    data: Dataset, name: str, *, test_days: int = 7, fraction: float | None = None
) -> Split:
    """A split by its CLI name (`fraction`: the time-fraction split's, by default its own)."""
    if name == "week":
        return week(data, test_days)
    if name == "leave-last-out":
        return leave_last_out(data)
    if name == "time-fraction":
        return time_fraction(data) if fraction is None else time_fraction(data, fraction)
    raise ConfigError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")


def rolling(data: Dataset, folds: int, test_days: int = 7) -> list[Split]:
    """`folds` consecutive test windows of `test_days`, newest first; each trains on all before."""
    if folds < 1:
        raise ConfigError(f"--folds must be at least 1, not {folds}")
    return [week(data, test_days, offset_days=f * test_days) for f in range(folds)]
