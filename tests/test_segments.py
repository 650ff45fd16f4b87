"""Segments: k-modes clusters of customers served their segment's trending articles."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fashionrec import artifacts
from fashionrec.data.dataset import Dataset
from fashionrec.errors import ConfigError
from fashionrec.models.segments import (
    Segments,
    cao_init,
    cluster,
    dissimilarity,
    elbow,
    knee,
    kprototypes,
    purchase_profile,
)
from tests.conftest import make_dataset


@pytest.fixture(scope="module")
def two_groups() -> Dataset:
    """20 young ACTIVE club members who buy A1 and 20 older PRE-CREATE ones who buy A2.

    Customers 0-14 and 20-31 bought (in the last week); 15-19 and 32-39 never did. A1 has more
    buyers (15 vs 12), so it tops global popularity; A0 was bought long ago by a few of each.
    """
    young, old = range(20), range(20, 40)
    customers = {
        "age": [20.0 + u % 5 for u in young] + [60.0 + u % 5 for u in old],
        "club_member_status": ["ACTIVE"] * 20 + ["PRE-CREATE"] * 20,
        "fashion_news_frequency": ["Regularly"] * 20 + ["None"] * 20,  # H&M has "None" too
    }
    rows = [(u % 7, u, 1) for u in range(15)] + [(u % 7, u, 2) for u in range(20, 32)]
    rows += [(100, u, 0) for u in (0, 1, 20, 21)]
    return make_dataset(rows, 5, customers)


def top_items(model: Segments, users: list[int], k: int = 3) -> list[list[int]]:
    return model.recommend(np.array(users), k).items.tolist()


# ---- segments from the customers table ------------------------------------------------------


def test_two_clear_groups_get_their_own_trending(two_groups: Dataset) -> None:
    model = Segments(n_segments=2, prior=0.0).fit(two_groups)
    assert model.source_ == "customers"
    assert model.features_ == ["age_band", "club_member_status", "fashion_news_frequency"]
    labels = model.labels_
    assert len(set(labels[:20])) == 1 and len(set(labels[20:])) == 1 and labels[0] != labels[20]
    assert sorted(map(tuple, model.modes_.tolist())) == [
        ("16-24", "ACTIVE", "Regularly"),
        ("55-64", "PRE-CREATE", "None"),
    ]
    # customers without purchases (15: young, 35: old) get their segment's list; -1 the global
    young_cold, old_cold, old_buyer, unknown = top_items(model, [15, 35, 20, -1])
    assert young_cold[:2] == [1, 0] and old_cold[:2] == [2, 0] and old_buyer[:2] == [2, 0]
    assert unknown[0] == 1  # global time-decayed popularity: A1 (15 buyers) before A2 (12)


def test_prior_shrinks_small_segments_to_the_global_list(two_groups: Dataset) -> None:
    # old segment: ~9 decayed purchases of A2; a prior of 1e6 pseudo-purchases drowns them
    assert top_items(Segments(n_segments=2, prior=1.0).fit(two_groups), [35])[0][0] == 2
    assert top_items(Segments(n_segments=2, prior=1e6).fit(two_groups), [35])[0][0] == 1


def test_exclude_seen_keeps_the_segment_order(two_groups: Dataset) -> None:
    model = Segments(n_segments=2, prior=0.0).fit(two_groups)
    recs = model.recommend(np.array([22, 20]), 3, exclude_seen=True).items.tolist()
    assert recs[0][:2] == [0, 1]  # 22 bought A2: the segment's next is A0, then the global A1
    assert recs[1][0] == 1 and not {0, 2} & set(recs[1])  # 20 bought A2 and A0: the fill


def test_assign_matches_the_given_attributes_only(two_groups: Dataset) -> None:
    model = Segments(n_segments=2, prior=0.0).fit(two_groups)
    young, old = int(model.labels_[0]), int(model.labels_[20])
    assert model.assign({"age": 22}) == young  # the missing news frequency is not "None"
    assert model.assign({"age": 63}) == old
    assert model.assign({"club_member_status": "PRE-CREATE"}) == old
    # two attributes for old, one for young: the nearest mode wins
    both = {"age": 21, "club_member_status": "PRE-CREATE", "fashion_news_frequency": "None"}
    assert model.assign(both) == old
    assert model.assign({}) == -1 and model.assign({"age": None}) == -1
    assert model.recommend_attributes({"age_band": "55-64"}, 2).items.tolist() == [[2, 0]]
    assert model.recommend_attributes({}, 2).items.tolist() == [[1, 2]]  # the global list
    with pytest.raises(ConfigError, match="unknown attributes colour"):
        model.assign({"colour": "red"})
    with pytest.raises(ConfigError, match="must be numbers"):
        model.assign({"age": "old"})
    assert model.options()["club_member_status"] == ["ACTIVE", "PRE-CREATE"]
    with pytest.raises(ConfigError, match="club_member_status must be one of ACTIVE, PRE-CREATE"):
        model.assign({"club_member_status": "Atlantis"})


def test_numeric_age_uses_k_prototypes(two_groups: Dataset) -> None:
    model = Segments(n_segments=2, numeric_age=True, prior=0.0).fit(two_groups)
    assert model.numeric_ == ["age"] and "age_band" not in model.features_
    np.testing.assert_allclose(sorted(model.centres_[:, 0]), [22.0, 62.0])
    assert model.assign({"age": 58}) == model.labels_[20]
    assert model.assign({"age": 30}) == model.labels_[0]
    assert model.options()["age"] == "number"


def test_sampled_fit_assigns_everyone_deterministically(two_groups: Dataset) -> None:
    a = Segments(n_segments=2, max_customers=10, seed=3).fit(two_groups)
    b = Segments(n_segments=2, max_customers=10, seed=3).fit(two_groups)
    assert (a.labels_ >= 0).all() and len(a.labels_) == two_groups.n_users
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.segment_customers(two_groups), a.labels_)
    # fitted on 10 sampled customers, it still finds the two groups (customers 0-19, 20-39)
    assert len(set(a.labels_[:20])) == len(set(a.labels_[20:])) == 1
    assert a.labels_[0] != a.labels_[20]


def test_save_load_keeps_segments_and_assign(two_groups: Dataset, tmp_path: Path) -> None:
    model = Segments(n_segments=2, numeric_age=True).fit(two_groups)
    loaded = artifacts.load(artifacts.save(model, tmp_path / "seg"))
    np.testing.assert_array_equal(loaded.labels_, model.labels_)
    np.testing.assert_array_equal(loaded.modes_, model.modes_)
    for attributes in ({"age": 61}, {"club_member_status": "ACTIVE"}, {"age": 40}):
        assert loaded.assign(attributes) == model.assign(attributes)
    np.testing.assert_array_equal(loaded.segment_customers(two_groups), model.labels_)


def test_a_constant_customers_table_falls_back_on_the_profile() -> None:
    data = make_dataset([(1, 0, 0), (1, 0, 1), (2, 1, 2)], 3, {"country": ["UK", "UK", "UK"]})
    model = Segments().fit(data)
    assert model.source_ == "profile"
    assert model.labels_[2] == -1  # no purchases, no profile: the global list
    with pytest.raises(ConfigError, match="source must be"):
        Segments(source="census").fit(data)
    with pytest.raises(ConfigError, match="at least 1"):
        Segments(n_segments=0).fit(data)


# ---- segments from the purchase profile -------------------------------------------------------


def test_known_store_profile_segment(known_dataset: Dataset) -> None:
    # no customers table: u0 (3 visits, 1 article each) joins u1 and u2 (3 visits); their
    # decayed purchases favour u0's three recent A4 (2.40) over u1/u2's A1 (1.73)
    model = Segments(prior=0.0).fit(known_dataset)
    assert model.source_ == "profile" and model.features_ == ["basket_band", "visit_band"]
    u = known_dataset.user_ids.to_index(["u0", "u1", "u2", "u5"])
    assert model.labels_[u[0]] == model.labels_[u[1]] == model.labels_[u[2]] != model.labels_[u[3]]
    top = known_dataset.item_ids.to_ids(model.recommend(u, 1).items[:, 0])
    assert top.tolist() == ["A4", "A4", "A4", "A1"]


def test_purchase_profile_dominant_group_and_bands() -> None:
    rows = [(1, 0, 0), (1, 0, 1), (3, 0, 2), (2, 1, 2), (2, 1, 3), (5, 2, 3)]
    data = make_dataset(
        rows,
        4,
        n_users=4,
        articles={"index_group_name": ["Ladieswear", "Ladieswear", "Menswear", "Baby"]},
        prices=[0.05, 0.09, 0.01, 0.03, 0.05, 0.01],  # per row
    )
    attrs, edges = purchase_profile(data, n_bands=2)
    assert attrs.cat_names == ["index_group_name", "price_band", "basket_band", "visit_band"]
    # rows are sorted by date, so prices belong to rows as sorted: (5,2,3) .09 first ...
    frame = dict(zip(attrs.cat_names, attrs.cat.T, strict=True))
    assert frame["index_group_name"].tolist()[:3] == ["Ladieswear", "Baby", "Baby"]
    assert frame["visit_band"].tolist() == ["2", "1", "1", "unknown"]
    assert attrs.has.tolist() == [True, True, True, False]
    assert set(edges) == {"price_band", "basket_band", "visit_band"}
    # the same edges give the same bands on other data (the new-customer path)
    again, _ = purchase_profile(data, edges, n_bands=2)
    np.testing.assert_array_equal(again.cat, attrs.cat)


def test_profile_preferences_assign_with_aliases() -> None:
    groups = ["Ladieswear"] * 3 + ["Menswear"] * 3
    rows = [(u % 3, u, u // 3) for u in range(30)]  # users 0-14 buy items 0-4, 15-29 items 5-9
    data = make_dataset(rows, 10, n_users=30, articles={"index_group_name": groups + groups[:4]})
    model = Segments(n_segments=2, prior=0.0).fit(data)
    assert model.source_ == "profile"
    ladies = model.assign({"index_group": "Ladieswear"})
    assert ladies == model.assign({"index_group_name": "Ladieswear"}) == model.labels_[0]
    assert model.assign({"index_group": "Menswear"}) == model.labels_[12]


def test_new_customer_joins_the_segment_of_their_purchases(tmp_path: Path) -> None:
    """Profile segments: a customer unknown at the fit who posts purchases (recommend_with) gets
    the list of the segment nearest to their purchases' profile (dominant group, price band)."""
    groups = ["Ladieswear"] * 3 + ["Menswear"] * 3
    groups += groups[:4]  # items 0-9: L L L M M M L L L M
    rows = [(u % 3, u, u // 3) for u in range(30)]  # users 0-14 buy items 0-4, 15-29 items 5-9
    prices = [0.05 if groups[u // 3] == "Menswear" else 0.01 for u in range(30)]
    data = make_dataset(rows, 10, n_users=30, articles={"index_group_name": groups}, prices=prices)
    model = Segments(n_segments=2, prior=0.0).fit(data)
    assert model.source_ == "profile"
    assert model.features_ == ["index_group_name", "price_band"]
    ladies, mens = model.labels_[0], model.labels_[12]  # user 0 bought item 0, user 12 item 4
    assert ladies != mens
    unknown = np.array([-1, -1, -1])
    posted = [np.array([3, 4]), np.array([0, 7]), np.array([], np.int64)]
    live = model.recommend_with(unknown, posted, 4)
    np.testing.assert_array_equal(live.items[0], model.recommend(np.array([12]), 4).items[0])
    np.testing.assert_array_equal(live.items[1], model.recommend(np.array([0]), 4).items[0])
    # no purchases: the global list, as for any unknown customer
    np.testing.assert_array_equal(live.items[2], model.recommend(np.array([-1]), 4).items[0])
    assert model.recommend(np.array([-1]), 4).items[0].tolist() != live.items[0].tolist()
    # a customer with a segment keeps it; exclude_seen leaves out the new purchases
    keep = model.recommend_with(np.array([0]), [np.array([3, 4, 9])], 4, exclude_seen=True)
    seen0 = model.recommend(np.array([0]), 6, exclude_seen=True).items[0]
    assert keep.items[0].tolist() == [i for i in seen0 if i not in (3, 4, 9)][:4]
    # and it survives saving (the articles' groups and prices are state)
    loaded = artifacts.load(artifacts.save(model, tmp_path / "seg"))
    np.testing.assert_array_equal(loaded.recommend_with(unknown, posted, 4).items, live.items)
    # an article with no group and no price says nothing: the global list, as with no purchase
    loaded.item_groups_[9, 0], loaded.item_price_[9] = "unknown", np.nan
    blank = loaded.recommend_with(unknown[:1], [np.array([9])], 4)
    np.testing.assert_array_equal(blank.items[0], live.items[2])


# ---- the clustering pieces ---------------------------------------------------------------------


def test_nearest_mode_equals_kmodes_predict() -> None:
    from kmodes.kmodes import KModes

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, (500, 5))
    km = KModes(n_clusters=6, init="Cao").fit(codes)
    modes = km.cluster_centroids_.astype(np.int64)
    ours = np.argmin(dissimilarity(codes, np.empty((500, 0)), modes, np.empty((6, 0)), 0.5), 1)
    np.testing.assert_array_equal(ours, km.predict(codes))


def test_dissimilarity_counts_the_given_attributes_only() -> None:
    modes, centres = np.array([[0, 0], [1, 1]]), np.array([[0.0], [2.0]])
    codes, given = np.array([[0, 1]]), np.array([[True, False]])  # the 2nd value is a stand-in
    no_num = np.empty((1, 0))
    assert dissimilarity(codes, no_num, modes, centres[:, :0], 0.5).tolist() == [[1, 1]]
    assert dissimilarity(codes, no_num, modes, centres[:, :0], 0.5, given).tolist() == [[0, 1]]
    # k-prototypes: squared distance + gamma x mismatches; an unknown number (NaN) adds nothing
    assert dissimilarity(codes, np.array([[1.5]]), modes, centres, 0.5).tolist() == [[2.75, 0.75]]
    assert dissimilarity(codes, np.array([[np.nan]]), modes, centres, 0.5).tolist() == [[0.5, 0.5]]


def test_weighted_cao_init_starts_from_the_dense_rows() -> None:
    # one attribute (a country): UK x100, DE x10, FR x8, BH x1, BR x1 as weighted distinct rows
    codes, weights = np.array([[0], [1], [2], [3], [4]]), np.array([100.0, 10, 8, 1, 1])
    modes, _ = cao_init(codes, np.empty((5, 0)), weights, 3, 0.5)
    assert modes[:, 0].tolist() == [0, 1, 2]
    # the full clustering on the expanded rows: the three largest countries, cost = 2 customers
    rows = np.repeat(codes, weights.astype(int), axis=0)
    modes, _, cost = cluster(rows, np.empty((len(rows), 0)), 3, init="Cao")
    assert sorted(modes[:, 0].tolist()) == [0, 1, 2] and cost == 2.0


def test_kprototypes_matches_the_library_on_separated_data() -> None:
    from kmodes.kprototypes import KPrototypes

    rng = np.random.default_rng(1)
    n = 60
    group = np.repeat([0, 1, 2], n // 3)
    codes = np.stack([group, (group + rng.integers(0, 2, n)) % 3], axis=1)
    num = (group * 3.0 + rng.normal(0, 0.3, n))[:, None]
    modes, centres, cost = kprototypes(codes, num, np.ones(n), 3, 0.5)
    lib = KPrototypes(n_clusters=3, init="Cao", gamma=0.5, random_state=0)
    lib.fit(np.concatenate([num, codes], axis=1), categorical=[1, 2])
    assert cost <= lib.cost_ + 1e-9
    assert sorted(modes[:, 0].tolist()) == [0, 1, 2]  # one prototype per group
    np.testing.assert_allclose(
        sorted(centres[:, 0]), sorted(num[group == g].mean() for g in range(3))
    )
    # weights are counts: two copies of a row weigh like the row twice
    dup = kprototypes(np.repeat(codes, 2, 0), np.repeat(num, 2, 0), np.ones(2 * n), 3, 0.5)
    np.testing.assert_allclose(dup[2], 2 * kprototypes(codes, num, np.full(n, 1.0), 3, 0.5)[2])
    np.testing.assert_allclose(kprototypes(codes, num, np.full(n, 2.0), 3, 0.5)[2], dup[2])


def test_fewer_distinct_rows_than_k_gives_one_mode_each() -> None:
    codes = np.array([[0, 1]] * 5 + [[1, 0]] * 2)
    modes, _, cost = cluster(codes, np.empty((7, 0)), 8)
    assert modes.tolist() == [[0, 1], [1, 0]] and cost == 0.0


def test_unknown_init_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="init must be"):
        cluster(np.array([[0], [1], [2]]), np.empty((3, 0)), 2, init="kmeans++")


# ---- elbow ---------------------------------------------------------------------------------


def test_knee_is_the_bend() -> None:
    assert knee([1, 2, 3, 4, 5], [10.0, 4.0, 3.0, 2.5, 2.2]) == 2
    assert knee([2, 4, 6, 8], [8.0, 7.0, 2.0, 1.5]) == 6
    assert knee([3], [1.0]) == 3


def test_elbow_writes_json_and_png(two_groups: Dataset, tmp_path: Path) -> None:
    # two distinct attribute rows (age band, club status, news): k = 3 and 4 repeat k = 2
    result = elbow(two_groups, [1, 2, 3, 4], tmp_path / "out", seed=0)
    assert result["k"] == [1, 2, 3, 4] and result["source"] == "customers"
    assert result["cost"][0] > result["cost"][1] == result["cost"][-1] == 0.0
    assert result["suggested_k"] == 2  # two groups: the cost drops to 0 at k = 2
    with pytest.raises(ConfigError, match="2 distinct attribute rows, fewer than any k"):
        elbow(two_groups, [3, 4], tmp_path / "none", seed=0)
    assert not (tmp_path / "none").exists()
    saved = json.loads((tmp_path / "out" / "elbow.json").read_text())
    assert saved == result
    assert (tmp_path / "out" / "elbow.png").read_bytes()[:4] == b"\x89PNG"
