"""itemcf: co-purchase counts, the three similarities, windows, decay and customer scores, on tiny
stores where every number can be worked out by hand, and against brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest

from fashionrec.data.dataset import Dataset
from fashionrec.data.split import week
from fashionrec.errors import ConfigError
from fashionrec.evaluate import score_recs, truth_of
from fashionrec.models import neighbours as nb
from fashionrec.models.itemcf import ItemCF
from fashionrec.models.popular import Popular
from tests.conftest import make_dataset

A, B, C, D, E, F = range(6)


# baskets: c0 {A, B}, c1 {A, B}, c2 {A, C} (same day each); c3 E then F five days later
BASKETS = [(1, 0, A), (1, 0, B), (2, 1, A), (2, 1, B), (3, 2, A), (3, 2, C), (9, 3, E), (4, 3, F)]


def similar(model: ItemCF, item: int, k: int = 5) -> tuple[list[int], list[float]]:
    recs = model.similar(np.array([item]), k)
    valid = recs.items[0] >= 0
    return recs.items[0][valid].tolist(), recs.scores[0][valid].tolist()


def test_cosine_of_basket_counts() -> None:
    model = ItemCF(window_days=0).fit(make_dataset(BASKETS, 6, n_users=8))
    # n_A = 3, n_B = 2, n_C = 1; A and B share 2 baskets, A and C one
    items, scores = similar(model, A)
    assert items == [B, C]
    np.testing.assert_allclose(scores, [2 / np.sqrt(6), 1 / np.sqrt(3)], rtol=1e-6)
    assert similar(model, B)[0] == [A]
    assert similar(model, D)[0] == []  # never sold: no co-purchases
    assert similar(model, E)[0] == []  # E and F were bought 5 days apart


def test_conditional_probability_and_damping() -> None:
    data = make_dataset(BASKETS, 6, n_users=8)
    model = ItemCF(similarity="conditional", window_days=0, alpha=0.0).fit(data)
    np.testing.assert_allclose(similar(model, A)[1], [2 / 3, 1 / 3], rtol=1e-6)  # P(B|A), P(C|A)
    np.testing.assert_allclose(similar(model, C)[1], [1.0])  # P(A|C)
    damped = ItemCF(similarity="conditional", window_days=0, alpha=1.0).fit(data)
    # damping by n_j: P(B|A)/n_B = 1/3 equals P(C|A)/n_C = 1/3, tie broken by index
    items, scores = similar(damped, A)
    assert items == [B, C]
    np.testing.assert_allclose(scores, [1 / 3, 1 / 3], rtol=1e-6)


def test_window_days_pairs_purchases_of_one_customer() -> None:
    data = make_dataset(BASKETS, 6, n_users=8)
    assert similar(ItemCF(window_days=4).fit(data), E)[0] == []  # 5 days apart
    assert similar(ItemCF(window_days=5).fit(data), E)[0] == [F]
    assert similar(ItemCF(window_days=None).fit(data), F)[0] == [E]  # whole history


def test_half_life_prefers_recent_co_purchases() -> None:
    # A+B bought together by two customers 60 days ago, A+C by one customer yesterday
    rows = [(60, 0, A), (60, 0, B), (60, 1, A), (60, 1, B), (1, 2, A), (1, 2, C)]
    data = make_dataset(rows, 6, n_users=8)
    assert similar(ItemCF(window_days=0).fit(data), A)[0] == [B, C]
    assert similar(ItemCF(window_days=0, half_life=7.0).fit(data), A)[0] == [C, B]


def brute_force_counts(data: Dataset, window_days: int) -> np.ndarray:
    """c_ij = #baskets (customer, day) with i where the customer bought j within the window."""
    tx = data.transactions.select("user", "item", pl.col("t_dat").cast(pl.Int32).alias("day"))
    baskets = tx.group_by("user", "day").agg(pl.col("item").unique()).rows()
    bought = tx.rows()
    counts = np.zeros((data.n_items, data.n_items))
    for user, day, items in baskets:
        near = {j for u, j, d in bought if u == user and abs(d - day) <= window_days}
        for i, j in itertools.product(items, near):
            counts[i, j] += 1
    return counts


def test_blocked_counts_equal_brute_force(random_dataset: Dataset, monkeypatch) -> None:
    monkeypatch.setattr(nb, "BLOCK_BUDGET", 50)  # many small blocks
    counts = brute_force_counts(random_dataset, 7)
    n = np.diag(counts)
    expected = counts / np.sqrt(np.outer(n, n).clip(min=1))
    np.fill_diagonal(expected, 0)
    model = ItemCF(window_days=7, neighbours=1000).fit(random_dataset)
    np.testing.assert_allclose(model.neighbours_.toarray(), expected, rtol=1e-5, atol=1e-7)
    # top-N keeps each row's N best, ties by lower index
    top3 = ItemCF(window_days=7, neighbours=3).fit(random_dataset).neighbours_
    for i in range(random_dataset.n_items):
        order = np.lexsort((np.arange(len(expected)), -expected[i]))
        best = [j for j in order[:3] if expected[i, j] > 0]
        assert sorted(top3[i].indices.tolist()) == sorted(best)


def test_pearson_matches_numpy_on_the_active_customers(random_dataset: Dataset) -> None:
    model = ItemCF(similarity="pearson", n_active=20, neighbours=1000).fit(random_dataset)
    counts = random_dataset.user_items().toarray()
    active = np.lexsort((np.arange(len(counts)), -counts.sum(axis=1)))[:20]
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.nan_to_num(np.corrcoef(counts[active].T))
    np.fill_diagonal(expected, 0)
    got = model.neighbours_.toarray()
    # kept: every positive correlation of items bought together by an active customer
    together = (counts[active].T @ counts[active]) > 0
    np.testing.assert_allclose(got, np.where(together & (expected > 0), expected, 0), atol=1e-5)
    assert (got > 0).sum() > 20


def test_customer_scores_neighbours_and_own_articles() -> None:
    data = make_dataset([*BASKETS, (1, 4, A)], 6, n_users=8)  # c4 bought A only
    c4 = np.array([4])
    explore = ItemCF(window_days=0, repeat=0.0).fit(data)
    assert explore.recommend(c4, 3).items[0].tolist()[:2] == [B, C]
    repeat = ItemCF(window_days=0, repeat=1.0).fit(data)
    assert repeat.recommend(c4, 3).items[0, 0] == A  # the own article first
    mixed = ItemCF(window_days=0, repeat=0.5).fit(data).recommend(c4, 3)
    # own A gets 0.5; B gets 0.5 * cos(A,B) / (cos(A,B) + cos(A,C)) < 0.5
    assert mixed.items[0].tolist() == [A, B, C]
    # without own articles only the explore part is left, whatever the repeat share
    excluded = repeat.recommend(c4, 3, exclude_seen=True)
    assert excluded.items[0].tolist()[:2] == [B, C]


def test_purchases_after_the_fit_count_at_once() -> None:
    """recommend_with: a posted purchase enters the history with the weight of the last day."""
    data = make_dataset([*BASKETS, (1, 4, A)], 6, n_users=8)  # c4 bought A only
    model = ItemCF(window_days=None, repeat=0.5).fit(data)  # c3's E and F are neighbours
    users = np.array([4, 7, -1])  # c4, c7 (no purchases), an unknown customer
    fitted = model.recommend(users, 3)
    none = model.recommend_with(users, [np.array([], np.int64)] * 3, 3)
    np.testing.assert_array_equal(none.items, fitted.items)
    np.testing.assert_array_equal(none.scores, fitted.scores)
    # c4 now buys E: its neighbour F enters the list; c7 and the unknown customer buy B, and get
    # B (own) and its neighbour A instead of the popularity list
    live = model.recommend_with(users, [np.array([E]), np.array([B]), np.array([B])], 3)
    assert F in live.items[0].tolist() and F not in fitted.items[0].tolist()
    assert live.items[1].tolist()[:2] == [B, A] == live.items[2].tolist()[:2]
    assert fitted.items[1, 0] == A  # popularity before
    # exclude_seen leaves out the posted articles too
    unseen = model.recommend_with(
        users, [np.array([E]), np.array([B]), np.array([B])], 3, exclude_seen=True
    )
    assert E not in unseen.items[0].tolist() and B not in unseen.items[1].tolist()
    assert unseen.items[1, 0] == A


def test_repeat_share_is_measured_on_the_data() -> None:
    # after their first day, c0 buys A again (a repeat) and C (new): share 1/2
    rows = [(5, 0, A), (5, 0, B), (2, 0, A), (2, 0, C), (1, 1, D)]
    data = make_dataset(rows, 6, n_users=8)
    assert nb.repeat_share(data) == pytest.approx(0.5)
    assert ItemCF().fit(data).repeat_ == pytest.approx(0.5)
    same_day = make_dataset([(1, 0, A), (1, 0, A)], 6, n_users=8)
    assert nb.repeat_share(same_day) == 0.0  # same day is one basket


def test_unknown_and_cold_customers_get_popularity() -> None:
    model = ItemCF().fit(make_dataset(BASKETS, 6, n_users=8))
    recs = model.recommend(np.array([-1, 7]), 3)  # c7 has no purchases
    assert recs.items[0].tolist() == recs.items[1].tolist()
    assert recs.items[0, 0] == A  # bought most, lately


def test_bad_parameters_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="similarity"):
        ItemCF(similarity="jaccard")
    with pytest.raises(ConfigError, match="window_days"):
        ItemCF(window_days=-1)


def test_retail_also_bought_and_beats_popular(retail: Dataset) -> None:
    split = week(retail)
    users, _ = truth_of(split.test)
    model = ItemCF().fit(split.train)
    ours = score_recs(model.recommend(users, 12).items, split, 12)
    popular = score_recs(Popular().fit(split.train).recommend(users, 12).items, split, 12)
    assert ours["map@12"] > popular["map@12"] and ours["hr@12"] > popular["hr@12"]
    names = split.train.articles["prod_name"].to_list()
    jumbo = names.index("JUMBO BAG RED RETROSPOT")
    also = [names[i] for i in similar(model, jumbo, 10)[0]]
    assert sum("JUMBO" in n for n in also) >= 3  # other jumbo bags are bought with it
