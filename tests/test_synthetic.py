"""The H&M-like generator: determinism, sizes, the structure the models rely on, clean ingest."""

from __future__ import annotations

import gzip
import json
import math
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from fashionrec.data import synthetic
from fashionrec.data.dataset import Dataset
from fashionrec.data.ingest import ingest
from fashionrec.errors import ConfigError

from .conftest import shared, write_csv

SCALE = 0.001
TABLES = ("transactions_train", "articles", "customers")


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "a"
    synthetic.generate(out, scale=SCALE, seed=0)
    return out


@pytest.fixture(scope="module")
def frames(generated: Path) -> dict[str, pl.DataFrame]:
    tables = {t: pl.read_csv(generated / f"{t}.csv.gz", infer_schema=False) for t in TABLES}
    tx = tables["transactions_train"].with_columns(
        pl.col("t_dat").str.to_date(),
        pl.col("price").cast(pl.Float64),
        pl.col("sales_channel_id").cast(pl.Int8),
    )
    arts = tables["articles"]
    tables["tx"] = tx.join(arts, on="article_id", how="left").join(
        tables["customers"].with_columns(pl.col("age").cast(pl.Int32)),
        on="customer_id",
        how="left",
    )
    return tables


def test_same_seed_same_bytes_other_seed_other_data(generated: Path, tmp_path: Path) -> None:
    again = tmp_path / "b"
    synthetic.generate(again, scale=SCALE, seed=0)
    for table in TABLES:
        name = f"{table}.csv.gz"
        assert (generated / name).read_bytes() == (again / name).read_bytes(), table
    other = tmp_path / "c"
    synthetic.generate(other, scale=SCALE, seed=1)
    name = "transactions_train.csv.gz"
    assert (generated / name).read_bytes() != (other / name).read_bytes()


def test_parquet_is_deterministic_and_equals_the_csv(generated: Path, tmp_path: Path) -> None:
    for sub in ("p1", "p2"):
        synthetic.generate(tmp_path / sub, scale=SCALE, seed=0, fmt="parquet")
    for table in TABLES:
        one = pl.read_parquet(tmp_path / "p1" / f"{table}.parquet")
        assert one.equals(pl.read_parquet(tmp_path / "p2" / f"{table}.parquet")), table
        csv = pl.read_csv(generated / f"{table}.csv.gz", infer_schema=False)
        assert one.select(pl.all().cast(pl.String)).equals(csv), table
    assert not list((tmp_path / "p1").glob("*.csv.gz"))


def test_sizes_and_dates_at_scale_0_001(generated: Path, frames: dict[str, pl.DataFrame]) -> None:
    info = json.loads((generated / "generator.json").read_text())
    assert info["rows"]["customers"] == round(synthetic.HM_CUSTOMERS * SCALE) == 1372
    assert frames["customers"].height == 1372
    expected = synthetic.HM_TRANSACTIONS * SCALE
    assert abs(frames["transactions_train"].height - expected) < 0.1 * expected
    assert frames["articles"].height == round(synthetic.HM_ARTICLES * math.sqrt(SCALE))
    tx = frames["tx"]
    assert tx["t_dat"].min() >= date(2018, 9, 20)
    assert tx["t_dat"].max() == date(2020, 9, 22)
    assert tx["t_dat"].is_sorted()
    # Kaggle file order: by date, then customer_id
    assert tx.select("t_dat", "customer_id").equals(tx.select("t_dat", "customer_id").sort("*"))


def test_kaggle_formats(frames: dict[str, pl.DataFrame], generated: Path) -> None:
    with gzip.open(generated / "transactions_train.csv.gz", "rt") as fh:
        assert fh.readline().strip() == "t_dat,customer_id,article_id,price,sales_channel_id"
    assert frames["articles"].columns == list(synthetic.schema.HM_ARTICLE_COLUMNS)
    assert frames["customers"].columns == list(synthetic.schema.HM_CUSTOMER_COLUMNS)
    tx = frames["transactions_train"]
    assert tx["customer_id"].str.contains(r"^[0-9a-f]{64}$").all()
    assert tx["article_id"].str.contains(r"^0\d{9}$").all()
    arts = frames["articles"]
    assert (arts["article_id"].str.slice(0, 7) == arts["product_code"]).all()
    assert arts["article_id"].is_unique().all()
    assert set(tx["article_id"].unique()) <= set(arts["article_id"])


def test_customers_marginals(frames: dict[str, pl.DataFrame]) -> None:
    cust = frames["customers"]
    age = cust["age"].cast(pl.Float64).drop_nulls().to_numpy()
    young, middle, parents = [((age >= a) & (age <= b)).mean() for a, b in
                              ((21, 25), (33, 37), (45, 55))]  # fmt: skip
    assert young > 2 * middle and parents > middle  # the two peaks of the Kaggle table
    assert 0.25 < (cust["FN"] == "1.0").fill_null(False).mean() < 0.45
    assert cust["club_member_status"].value_counts().sort("count")["club_member_status"][-1] == (
        "ACTIVE"
    )
    sizes = cust["postal_code"].value_counts()["count"].sort(descending=True)
    assert sizes[0] > 0.05 * cust.height  # one very large postal code ...
    assert sizes.median() <= 3  # ... and many tiny ones


def test_structure_of_the_transactions(frames: dict[str, pl.DataFrame]) -> None:
    tx = frames["tx"]
    # repeat purchases on a later day
    first = pl.col("t_dat").min().over("customer_id", "article_id")
    assert tx.select((pl.col("t_dat") > first).mean()).item() > 0.02
    # 30/70 store/online
    assert 0.6 < (tx["sales_channel_id"] == 2).mean() < 0.8
    # baskets hold other colours of one product and several articles of one department
    baskets = tx.group_by("customer_id", "t_dat").agg(
        pl.col("article_id").n_unique().alias("a"),
        pl.col("product_code").n_unique().alias("p"),
        pl.col("department_no").n_unique().alias("d"),
    )
    multi = baskets.filter(pl.col("a") > 1)
    assert (multi["a"] > multi["p"]).mean() > 0.1
    assert (multi["a"] > multi["d"]).mean() > 0.3
    # heavy-tailed activity: the most active 10% of buyers make a third of the purchases
    per = tx.group_by("customer_id").len()["len"].sort(descending=True).to_numpy()
    assert per[: len(per) // 10].sum() > per.sum() / 3
    # prices: per article, markdowns and discounts give several prices
    assert (tx["price"] > 0).all()
    assert tx.group_by("article_id").agg(pl.col("price").n_unique())["price"].max() > 2


def test_life_cycles_and_seasons(frames: dict[str, pl.DataFrame]) -> None:
    tx = frames["tx"]
    # articles launch in product-code order: later codes sell later
    by_article = tx.group_by("product_code").agg(pl.col("t_dat").cast(pl.Int32).median())
    rho = by_article.select(pl.corr(pl.col("product_code").rank(), pl.col("t_dat").rank())).item()
    assert rho > 0.5
    # swimwear sells in summer, knitwear in winter
    month = tx["t_dat"].dt.month()
    summer, winter = month.is_in([6, 7]), month.is_in([12, 1])

    def share(group: str, when: pl.Series) -> float:
        return float((tx.filter(when)["garment_group_name"] == group).mean())

    assert share("Swimwear", summer) > 3 * share("Swimwear", winter)
    assert share("Knitwear", winter) > 1.5 * share("Knitwear", summer)


def test_age_dependent_preferences(frames: dict[str, pl.DataFrame]) -> None:
    tx = frames["tx"]

    def kids_share(lo: int, hi: int) -> float:
        rows = tx.filter(pl.col("age").is_between(lo, hi))
        return float((rows["index_group_name"] == "Baby/Children").mean())

    assert kids_share(27, 39) > 2 * kids_share(16, 24)
    men = tx.group_by("customer_id").agg((pl.col("index_name") == "Menswear").mean())
    # men are a segment: a group of customers buys mostly menswear, most customers almost none
    assert (men["index_name"] > 0.5).mean() > 0.05
    assert (men["index_name"] < 0.1).mean() > 0.5


def test_generated_tables_ingest_cleanly(generated: Path, tmp_path: Path) -> None:
    manifest = ingest(generated, tmp_path / "ds", strict=True)
    data = Dataset.load(tmp_path / "ds")
    assert manifest["rows"]["transactions"] == manifest["rows"]["transactions_in"]
    assert manifest["n_customers_without_row"] == 0
    assert manifest["id_format"] == "hm"
    assert data.n_users == 1372 and data.transactions.height == manifest["rows"]["transactions"]
    assert manifest["missing_columns"] == {"transactions_train": [], "articles": [],
                                           "customers": []}  # fmt: skip


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="format"):
        synthetic.generate(tmp_path, scale=SCALE, fmt="xlsx")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="scale"):
        synthetic.generate(tmp_path, scale=0)


def test_week_stats_known_answer(tmp_path: Path) -> None:
    """Two customers, last week only: every statistic can be counted by hand."""
    write_csv(
        tmp_path / "articles.csv",
        "article_id,product_code,department_no",
        ["0100000001,0100000,1", "0100000002,0100000,1", "0200000001,0200000,2"],
    )
    write_csv(
        tmp_path / "transactions_train.csv",
        "t_dat,customer_id,article_id,price,sales_channel_id",
        [
            "2020-09-01,a,0200000001,0.5,2",  # outside the week
            "2020-09-20,a,0100000001,0.01,2",
            "2020-09-20,a,0100000002,0.02,2",  # basket a/20: two colours of one product
            "2020-09-21,a,0100000001,0.01,1",  # a repeat of an earlier day
            "2020-09-22,b,0200000001,0.03,2",
            "2020-09-22,b,0200000001,0.03,2",  # quantity 2
        ],
    )
    s = synthetic.week_stats(tmp_path)
    assert s["transactions / scale"] == 5 and s["buyers / scale"] == 2
    assert s["articles sold"] == 3
    assert s["purchases per buyer: mean"] == 2.5
    assert s["rows per basket (customer-day)"] == 5 / 3
    assert s["repeat: duplicate (customer, article) rows"] == pytest.approx(1 - 3 / 5)
    assert s["repeat: later-day rows of an article bought earlier in the week"] == 1.0
    assert s["baskets (>1 article) with 2 colours of a product"] == 1.0
    assert s["online share (sales_channel_id 2)"] == 0.8
    assert s["price max"] == 0.03
    # the whole history: pairs (a, 0100000001) on 2 days, (a, 0100000002), (a, 0200000001) and
    # (b, 0200000001) on one (b's quantity 2 is one day); none on three days; the one re-buy
    # comes 1-5 days after the first purchase
    several, three, soon = synthetic.history_stats(tmp_path).values()
    assert (several, three, soon) == (1 / 4, 0.0, 1.0)


def test_history_stats_known_answer(tmp_path: Path) -> None:
    write_csv(
        tmp_path / "transactions_train.csv",
        "t_dat,customer_id,article_id,price,sales_channel_id",
        [
            "2020-09-01,a,0100000001,0.01,2",
            "2020-09-03,a,0100000001,0.01,2",  # a re-buy 2 days later
            "2020-09-20,a,0100000001,0.01,2",  # and 17 days later: the pair is on three days
            "2020-09-01,b,0100000002,0.01,2",
            "2020-09-01,b,0100000001,0.01,2",
            "2020-09-01,b,0100000001,0.01,2",  # quantity 2: one day
        ],
    )
    assert list(synthetic.history_stats(tmp_path).values()) == [1 / 3, 1 / 3, 1 / 2]


def test_bought_before_known_answer() -> None:
    u, pos, day = np.array([0, 0, 1, 0]), np.array([5, 5, 5, 7]), np.array([3, 1, 2, 2])
    # customer 0 bought 5 on day 1 (and 3), customer 1 on day 2 only, customer 0 bought 7 on 2
    got = synthetic._bought_before(
        np.array([0, 0, 0, 1, 1, 0, 2]), np.array([5, 5, 5, 5, 5, 7, 5]),
        np.array([1, 2, 9, 2, 3, 2, 9]), u, pos, day, width=10,
    )  # fmt: skip
    assert got.tolist() == [False, True, True, False, True, False, False]


def _rebuy_shares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **constants: object) -> dict:
    """Generate at SCALE with `constants` set; per gap to the customer's previous purchase day
    (1, 2, or more than SHORT_DAYS): the share of rows that re-buy an article of that day, and
    the share of (customer, article) pairs bought on more than one day."""
    for name, value in constants.items():
        monkeypatch.setattr(synthetic, name, value)
    synthetic.generate(tmp_path, scale=SCALE, seed=0)
    tx = pl.read_csv(tmp_path / "transactions_train.csv.gz", infer_schema=False).with_columns(
        pl.col("t_dat").str.to_date()
    )
    days = tx.select("customer_id", "t_dat").unique().sort("customer_id", "t_dat")
    days = days.with_columns(prev=pl.col("t_dat").shift().over("customer_id")).drop_nulls()
    before = tx.select("customer_id", pl.col("t_dat").alias("prev"), "article_id").unique()
    rows = tx.join(days, on=["customer_id", "t_dat"]).join(
        before.with_columns(hit=pl.lit(True)), on=["customer_id", "prev", "article_id"],
        how="left",
    ).with_columns(gap=(pl.col("t_dat") - pl.col("prev")).dt.total_days())  # fmt: skip
    share = {
        g: rows.filter(cond)["hit"].is_not_null().mean()
        for g, cond in [(1, pl.col("gap") == 1), (2, pl.col("gap") == 2),
                        ("long", pl.col("gap") > synthetic.SHORT_DAYS)]
    }  # fmt: skip
    pairs = tx.select("customer_id", "article_id", "t_dat").unique()
    share["several"] = (pairs.group_by("customer_id", "article_id").len()["len"] > 1).mean()
    return share


def test_rebuys_fall_off_with_the_gap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With certain re-buys the day after a visit, halving per day, and no long-term repeats:
    every row of a visit one day after the previous one re-buys from it, about half of them two
    days after, and (nearly) none after SHORT_DAYS."""
    s = _rebuy_shares(tmp_path, monkeypatch, P_SHORT=1.0, SHORT_DECAY=0.5,
                      REPEAT_BETA=(1e-9, 1e9))  # fmt: skip
    assert s[1] == 1.0
    assert 0.35 < s[2] < 0.65
    assert s["long"] < 0.02


def test_no_chance_rebuys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without re-buys, customers buy an article on two days only when the draw again (REDRAWS
    rounds) still finds one they own; without drawing again, by chance far more often. (At this
    scale the catalogue has 3,337 articles, so the draw again often finds another owned one; on
    the real catalogue the share falls from 0.041 to 0.009, docs/scale.md.)"""
    off = {"P_SHORT": 0.0, "REPEAT_BETA": (1e-9, 1e9)}
    redrawn = _rebuy_shares(tmp_path / "a", monkeypatch, **off)["several"]
    chance = _rebuy_shares(tmp_path / "b", monkeypatch, **off, REDRAWS=0)["several"]
    assert chance > 0.02
    assert redrawn < chance / 2


def test_calibrate_against_the_real_week(generated: Path) -> None:
    real = shared("hm")
    table = synthetic.calibrate(generated, real)
    row = dict(zip(table["statistic"], table["real"], strict=True))
    assert row["transactions / scale"] == 240_311
    assert row["online share (sales_channel_id 2)"] == pytest.approx(165_809 / 240_311)
    gen = dict(zip(table["statistic"], table["ratio"], strict=True))
    assert 0.75 < gen["online share (sales_channel_id 2)"] < 1.25  # ~240 rows at this scale
    assert "| statistic | real | generated | ratio |" in synthetic.calibration_markdown(table)


def test_real_articles_are_used_as_they_are(tmp_path: Path) -> None:
    real = shared("hm") / "articles.csv.gz"
    synthetic.generate(tmp_path, scale=0.0002, seed=0, articles=real)
    assert (tmp_path / "articles.csv.gz").read_bytes() == real.read_bytes()
    tx = pl.read_csv(tmp_path / "transactions_train.csv.gz", infer_schema=False)
    arts = pl.read_csv(real, infer_schema=False, columns=["article_id"])
    assert tx["article_id"].is_in(arts["article_id"].implode()).all()
    assert np.isclose(tx.height, synthetic.HM_TRANSACTIONS * 0.0002, rtol=0.25)


def test_rebuys_match_the_real_history(tmp_path: Path) -> None:
    """With the real catalogue, every customer behaves as at scale 1.0, so scale 0.01 (13,720
    customers) shows the calibration of docs/scale.md: how many pairs are bought again, on three
    days, and how soon, near H&M's published figures (0.97, 0.98 and 1.09 of them at scale 1.0)."""
    synthetic.generate(tmp_path, scale=0.01, seed=0, fmt="parquet",
                       articles=shared("hm") / "articles.csv.gz")  # fmt: skip
    got = synthetic.history_stats(tmp_path)
    ratios = {k: got[k] / real for k, real in synthetic.HM_HISTORY.items()}
    assert all(0.8 < r < 1.25 for r in ratios.values()), ratios


def _ceiling_module():
    """benchmarks/synthetic_ceiling.py (a script, not a package module)."""
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / "synthetic_ceiling.py"
    spec = importlib.util.spec_from_file_location("synthetic_ceiling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def world_and_data(
    generated: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[synthetic.World, Dataset]:
    """The generator's state at SCALE, seed 0, and its tables ingested."""
    out = tmp_path_factory.mktemp("ds") / "ds"
    ingest(generated, out, strict=True)
    return synthetic.world(SCALE, seed=0), Dataset.load(out)


def test_world_is_the_state_the_tables_are_drawn_from(world_and_data) -> None:
    """The ceiling benchmark reads the hidden state back with `world`: its customers and
    favourite departments are those of the written tables."""
    w, data = world_and_data
    assert (
        sorted(w.customers.table["customer_id"].to_list())
        == data.customers["customer_id"].sort().to_list()
    )
    # a customer's purchases fall in their favourite departments far more often than chance
    gen_of, _, pos_of = _ceiling_module().ids(w, data)
    tx = data.transactions
    dept = w.catalogue.dept[pos_of[tx["item"].to_numpy()]]
    favourite = w.customers.favourite[gen_of[tx["user"].to_numpy()]]
    assert (favourite == dept[:, None]).any(axis=1).mean() > 0.25


def test_ceiling_favourite_posterior_equals_enumeration(world_and_data) -> None:
    """The closed-form posterior of the two favourite departments (benchmarks/
    synthetic_ceiling.py) equals the sum over every ordered pair of departments."""
    sc = _ceiling_module()
    w, data = world_and_data
    cat = w.catalogue
    gen_of, _, pos_of = sc.ids(w, data)
    buyers = np.sort(data.transactions["user"].unique().to_numpy())[:40]
    users = pl.DataFrame({"user": buyers, "seg": w.customers.segment[gen_of[buyers]]})
    sbar = sc.mean_taste(cat)
    fav, kappa = sc.favourites(w, data.transactions, users, gen_of, pos_of, sbar, estimate=True)
    taste = sbar.sort("seg", "dept")["sbar"].to_numpy().reshape(-1, cat.n_dept)
    phi = sc.P_FAV_ANCHOR
    firsts = data.transactions.group_by("user", "t_dat", maintain_order=True).agg(
        pl.col("item").first()
    )
    for u in buyers[:10]:
        s = taste[w.customers.segment[gen_of[u]]]
        depts = cat.dept[pos_of[firsts.filter(pl.col("user") == u)["item"].to_numpy()]]
        # log P(first rows | favourites a, b) for every ordered pair, times the prior S(a) S(b)
        one = np.arange(cat.n_dept)
        hit = (depts[None, None, :] == one[:, None, None]).astype(float)
        n_ab = hit + hit.transpose(1, 0, 2)
        like = np.log(phi / 2 * n_ab + (1 - phi) * s[depts][None, None, :]).sum(axis=2)
        post = np.outer(s, s) * np.exp(like - like.max())
        post /= post.sum()
        expected = post.sum(axis=1) + post.sum(axis=0)  # E[number of favourite slots in d]
        got = np.asarray(kappa.filter(pl.col("user") == u)["kappa"][0] * s)
        named = fav.filter(pl.col("user") == u)
        got[named["dept"].to_numpy()] = named["fav"].to_numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)
        assert got.sum() == pytest.approx(2.0)
