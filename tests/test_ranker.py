"""The two-stage ranker: features, candidate sources and recall on hand-made stores, and a ranker
that learns the rule of a store where customers buy their own articles again."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from polars.testing import assert_frame_equal

from fashionrec import artifacts
from fashionrec.data.dataset import Dataset
from fashionrec.errors import ConfigError
from fashionrec.models import registry
from fashionrec.models.base import extra_matrix
from fashionrec.models.ranker import (
    calibrate,
    candidate_recall,
    context,
    csr_values,
    feature_importance,
    fit_stage,
    parse_sources,
    segment_departments,
)
from tests.conftest import MADE_END, make_dataset

# Products: items 0-2 are colours of product "P0", 3-4 of "P1", 5 is "P2"; departments 1 (items
# 0-2) and 2 (3-5). User 0 bought item 0 on days 10 and 2 (days before MADE_END) and item 3 on
# day 2; user 1 item 5 on day 30; user 2 item 0 on day 1, the last day (so day d has age d: the
# day after the last one is the cutoff). Item 0 sold for 10, then 8 and 8.
PRODUCTS = {"product_code": ["P0", "P0", "P0", "P1", "P1", "P2"]}
PRODUCTS["department_no"] = [1, 1, 1, 2, 2, 2]
SMALL_ROWS = [(10, 0, 0), (2, 0, 0), (2, 0, 3), (30, 1, 5), (1, 2, 0)]
SMALL = make_dataset(SMALL_ROWS, 6, n_users=4, prices=[10.0, 8.0, 4.0, 6.0, 8.0], articles=PRODUCTS)


def test_csr_values() -> None:
    mat = sp.csr_matrix(np.array([[0, 2.0, 0], [3.0, 0, 4.0]]))
    got = csr_values(mat, np.array([0, 1, 1, 0]), np.array([1, 2, 1, 0]))
    assert got.tolist() == [2.0, 4.0, 0.0, 0.0]


def test_context_features_by_hand() -> None:
    ctx = context(SMALL)
    assert ctx["u_last"][:3].tolist() == [2, 30, 1]
    assert ctx["u_first"][0] == 10 and ctx["u_n_tx"][0] == 3 and ctx["u_n_days"][0] == 2
    assert np.isnan(ctx["u_last"][3])  # user 3 never bought
    assert ctx["u_spend"][0] == pytest.approx(22.0) and ctx["u_repeat"][0] == pytest.approx(1 / 3)
    # item 0: sold on days 10, 2 and 1
    assert ctx["i_sales_1"][0] == 1 and ctx["i_sales_7"][0] == 2 and ctx["i_sales_28"][0] == 3
    assert ctx["i_buyers"][0] == 2 and ctx["i_age"][0] == 10 and ctx["i_since_sale"][0] == 1
    assert ctx["i_price_mean"][0] == pytest.approx(26 / 3) and ctx["i_price_last"][0] == 8.0
    assert ctx["i_sales_7"][1] == 0 and np.isnan(ctx["i_price_mean"][1])  # never sold
    # customer x article, product and department features of user 0's candidates
    stage = fit_stage(SMALL, parse_sources("repurchase:5,variants:5,decay:5"), {})
    cand, cache = stage.candidates(np.array([0]), parse_sources("repurchase:5,variants:5"))
    assert sorted(cand["item"].to_list()) == [0, 1, 2, 3, 4]
    feats = {r["item"]: r for r in stage.features(np.array([0]), cand, cache).to_dicts()}
    item0 = feats[0]  # bought on days 10 and 2: the last of user 0's two visits
    assert (item0["p_count"], item0["p_days"], item0["p_last"], item0["p_first"]) == (2, 2, 2, 10)
    assert (item0["p_vlast"], item0["p_v5"], item0["p_visit_share"]) == (1, 2, 1.0)
    assert item0["p_gap_ratio"] == pytest.approx(2 / 8)  # 2 days since, once every 8 days
    item1 = feats[1]  # another colour of P0, never bought
    assert item1["p_count"] == 0 and np.isnan(item1["p_last"])
    assert (item1["pc_count"], item1["pc_last"], item1["dep_count"]) == (2, 2, 2)
    assert item1["dep_share"] == pytest.approx(2 / 3)
    assert (feats[4]["pc_count"], feats[4]["dep_count"]) == (1, 1)  # P1 / D2: item 3 once
    assert feats[3]["repurchase_rank"] == 1 and feats[3]["variants_rank"] is None


def test_department_affinity_by_hand() -> None:
    """The segment's share of each department (last 28 days), the customer's purchase days in
    it smoothed towards that share, and the article's share of its department's sales."""
    dep_of = context(SMALL)["dep_of"]  # items 0-2: department 0, items 3-5: department 1
    # in the last 28 days user 0 bought items 0, 0, 3 and user 2 item 0 (user 1's day 30 is older)
    shares = segment_departments(SMALL, lambda u: np.where(u == 0, 0, 1), dep_of)
    np.testing.assert_allclose(shares, [[2 / 3, 1 / 3], [1.0, 0.0], [0.75, 0.25]], rtol=1e-6)
    stage = fit_stage(SMALL, parse_sources("repurchase:5,variants:5,segments:5"), {})
    seg = stage.parts["segments"].segment_of(np.arange(4))  # by purchases: one each
    assert len(set(seg[:3].tolist())) == 3 and seg[3] == -1
    np.testing.assert_allclose(stage.ctx["seg_dep"][seg[0]], [2 / 3, 1 / 3], rtol=1e-6)
    np.testing.assert_allclose(stage.ctx["seg_dep"][-1], [0.75, 0.25], rtol=1e-6)
    decay = stage.ctx["i_decay"]
    cand, cache = stage.candidates(np.array([0]), parse_sources("repurchase:5,variants:5"))
    feats = {r["item"]: r for r in stage.features(np.array([0]), cand, cache).to_dicts()}
    # user 0: 2 purchase days, both with department 0 (item 0), one with department 1 (item 3)
    assert (feats[0]["dep_days"], feats[3]["dep_days"]) == (2, 1)
    assert feats[1]["dep_affinity"] == pytest.approx((2 + 2 * 2 / 3) / (2 + 2))
    assert feats[3]["dep_affinity"] == pytest.approx((1 + 2 * 1 / 3) / (2 + 2))
    assert feats[0]["i_dep_share"] == pytest.approx(1.0) and feats[1]["i_dep_share"] == 0.0
    share3 = decay[3] / (decay[3] + decay[5])  # department 1 sold items 3 and 5
    assert feats[3]["i_dep_share"] == pytest.approx(share3)
    assert feats[3]["dep_draw"] == pytest.approx(5 / 12 * share3)
    assert feats[0]["dep_draw"] == pytest.approx(5 / 6)


def test_sources_by_hand() -> None:
    stage = fit_stage(SMALL, parse_sources("repurchase:5,variants:5,decay:5"), {})
    users = np.array([0, 1, 3])
    own = stage.source("repurchase", users, 3, {})
    assert own.items[0].tolist() == [0, 3, -1]  # bought twice beats once
    assert own.items[1].tolist() == [5, -1, -1] and own.items[2].tolist() == [-1, -1, -1]
    variants = stage.source("variants", users, 4, {})
    # user 0: the other colours of P0 (weight of two purchases) before the other one of P1
    assert variants.items[0].tolist()[:3] == [1, 2, 4]
    assert variants.items[1].tolist() == [-1] * 4  # P2 has one article only


def test_departments_source_by_hand() -> None:
    stage = fit_stage(SMALL, parse_sources("repurchase:5,departments:5"), {})
    assert stage.ctx["i_dep_rank"].tolist()[:6] == [0, 1, 2, 0, 2, 1]  # by decayed sales
    got = stage.source("departments", np.array([0, 1, 3]), 3, {})
    # user 0: department 1 (item 0 twice) before 2; item 0 sold most, then 3 (day 2), 5 (day 30)
    assert got.items[0].tolist() == [0, 3, 5]
    assert got.items[1].tolist() == [3, 5, -1]  # user 1 bought in department 2 only
    assert got.items[2].tolist() == [-1, -1, -1]  # no purchases, no favourite department
    assert got.scores[0, 0] > got.scores[0, 1] > got.scores[0, 2] > 0


def test_candidate_recall_exact() -> None:
    # train: user 0 bought items 0 and 3, user 1 item 5; test week: user 0 buys 0 (own) and
    # 1 (a colour of P0); user 1 buys 2 (nothing proposes it): 3 purchases
    model = registry.create(
        "ranker", sources="repurchase:5,variants:1", content=False, train_weeks=0
    ).fit(SMALL)
    test = make_dataset(
        [(0, 0, 0), (0, 0, 1), (0, 0, 1), (0, 1, 2)], 6, n_users=4, articles=PRODUCTS
    )
    table = {r["source"]: r for r in candidate_recall(model, test).to_dicts()}
    assert table["repurchase"]["found"] == 1 and table["variants"]["found"] == 1
    assert table["union"]["recall"] == pytest.approx(2 / 3)
    assert table["union"]["purchases"] == 3
    assert table["repurchase"]["candidates_per_user"] == pytest.approx(3 / 2)  # (2 + 1) / 2


def repeat_store(weeks: int = 6, n_users: int = 40, seed: int = 0) -> Dataset:
    """Every week each customer buys their favourite article again (item 10 + u % 20) and one
    popular article (0-5) they have not bought before: popularity says 0-5, the rule says the
    favourite."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        popular = rng.permutation(6)
        for w in range(weeks):
            rows.append((7 * w + int(rng.integers(0, 7)), u, 10 + u % 20))
            rows.append((7 * w + int(rng.integers(0, 7)), u, int(popular[w % 6])))
    return make_dataset(rows, 30, n_users=n_users + 2)


RANKER_FAST = {
    "sources": "repurchase:10,itemcf:10,decay:10",
    "content": False,
    "n_estimators": 30,
    "train_weeks": 2,
}


def test_ranker_learns_repurchase_rule() -> None:
    data = repeat_store()
    train = data.window(end=MADE_END - timedelta(days=6))  # the last week is the test
    model = registry.create("ranker", **RANKER_FAST).fit(train)
    assert model.booster_ and model.info_["weeks"][0]["positives"] > 0
    users = np.arange(40)
    favourite = 10 + users % 20
    assert (model.recommend(users, 3).items[:, 0] == favourite).all()
    decay = registry.create("decay").fit(train)
    assert not (decay.recommend(users, 1).items[:, 0] == favourite).any()  # popularity: none
    # cold (user 40) and unknown (-1) customers get the decay list
    cold = model.recommend(np.array([40, -1]), 5).items
    np.testing.assert_array_equal(cold[0], cold[1])
    np.testing.assert_array_equal(cold[0], decay.recommend(np.array([40]), 5).items[0])
    # exclude_seen: the favourite (bought) never comes back
    assert not (model.recommend(users, 3, exclude_seen=True).items == favourite[:, None]).any()


def test_train_rows_samples_negatives_only() -> None:
    # 40 customers x about 17 candidates per period; a budget of 150 rows in 3 periods keeps
    # every positive (80 per period) and about 50 rows besides, and the rule is still learnt
    data = repeat_store(seed=2).window(end=MADE_END - timedelta(days=6))
    full = registry.create("ranker", **RANKER_FAST).fit(data)
    small = registry.create("ranker", train_rows=150, **RANKER_FAST).fit(data)
    for every, few in zip(full.info_["weeks"], small.info_["weeks"], strict=True):
        assert every["negatives_kept"] == 1.0 and few["negatives_kept"] < 0.1
        assert few["positives"] == every["positives"] > 0
        assert few["recall"] == every["recall"]
        assert every["rows"] > 400 and few["rows"] < every["positives"] + 60
    users = np.arange(40)
    assert (small.recommend(users, 1).items[:, 0] == 10 + users % 20).all()


def test_xendcg_objective_learns_the_rule() -> None:
    data = repeat_store(seed=3).window(end=MADE_END - timedelta(days=6))
    model = registry.create("ranker", objective="rank_xendcg", **RANKER_FAST).fit(data)
    assert model.info_["boosters"][0]["objective"] == "rank_xendcg"
    users = np.arange(40)
    assert (model.recommend(users, 1).items[:, 0] == 10 + users % 20).all()


def test_binary_objective_and_importance(tmp_path: Path) -> None:
    data = repeat_store(weeks=5, n_users=30, seed=1)
    model = registry.create("ranker", objective="binary", **RANKER_FAST).fit(data)
    table = feature_importance(model, tmp_path / "imp.png", top=10)
    assert (tmp_path / "imp.png").stat().st_size > 1000
    assert set(table["feature"]) == set(model.features_)
    assert table["gain"].to_list() == sorted(table["gain"].to_list(), reverse=True)
    own = table.filter(pl.col("feature").str.contains("^(p_|repurchase_)"))
    assert own["gain_share"].sum() > 0.5  # the customer's own purchases explain the labels
    artifacts.save(model, tmp_path / "m")
    loaded = artifacts.load(tmp_path / "m")
    users = np.arange(-1, 32)
    np.testing.assert_array_equal(
        model.recommend(users, 6).scores, loaded.recommend(users, 6).scores
    )


def test_untrained_ranker_serves_own_items_then_popularity(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # all purchases in the last week: no history to learn from, so no booster (and a warning
    # that says so); the fallback order puts the customer's own articles first (item 0, bought
    # twice, before item 3)
    data = make_dataset([(3, 0, 0), (2, 0, 0), (1, 0, 3), (1, 1, 5), (2, 2, 5)], 6, n_users=3)
    model = registry.create("ranker", sources="repurchase:5,decay:5", content=False).fit(data)
    assert not model.booster_
    assert "no booster is trained" in caplog.text and "label_days=7" in caplog.text
    assert model.recommend(np.array([0]), 3).items[0].tolist() == [0, 3, 5]


def test_bad_parameters() -> None:
    with pytest.raises(ConfigError, match="unknown sources"):
        registry.create("ranker", sources="repurchase:5,nonsense:3")
    with pytest.raises(ConfigError, match="objective"):
        registry.create("ranker", objective="huber")
    with pytest.raises(ConfigError, match="train_rows"):
        registry.create("ranker", train_rows=0)
    with pytest.raises(ConfigError, match="at least 1"):
        registry.create("ranker", sources="repurchase:0")


def test_sources_are_the_documented_ones() -> None:
    assert parse_sources("repurchase:5,sasrec,ns-gru:10") == {
        "repurchase": 5,
        "sasrec": 30,
        "ns-gru": 10,
    }
    for other in ("ranker:30", "lightgcn:10", "weighted"):  # registered, but not a source
        with pytest.raises(ConfigError, match=r"known: repurchase, itemcf.*sasrec"):
            parse_sources(f"repurchase:5,{other}")


def test_live_stage_equals_the_context_with_the_new_purchases() -> None:
    """Purchases posted after the fit, counted on the last day: the live stage's customer side
    is exactly what fitting on the data with those purchases added gives."""
    sources = parse_sources("repurchase:6,variants:6")
    stage = fit_stage(SMALL, sources, {}, rows=True)
    # user 0 buys item 4 (never sold: no price) and item 0 again (last price 8.0); user 3, who
    # never bought, buys item 5 (last price 6.0)
    live = stage.live_stage(np.array([0, 3]), [np.array([4, 0]), np.array([5])])
    added = make_dataset(
        [*SMALL_ROWS, (1, 0, 4), (1, 0, 0), (1, 3, 5)],
        6,
        n_users=4,
        prices=[10.0, 8.0, 4.0, 6.0, 8.0, None, 8.0, 6.0],
        articles=PRODUCTS,
    )
    refit = fit_stage(added, sources, {})
    got = live.frame(np.array([0, 1]), sources).sort("row", "item")
    want = refit.frame(np.array([0, 3]), sources).sort("row", "item")
    assert got["item"].to_list() == want["item"].to_list()
    customer = [  # p_due_item divides by the article's rebuy cycle: an article feature
        c for c in want.columns if c.split("_")[0] in ("u", "p", "pc", "dep") and c != "p_due_item"
    ]
    assert {"u_n_tx", "u_spend", "p_vlast", "p_v5", "p_weight", "pc_days"} <= set(customer)
    assert_frame_equal(got.select(customer), want.select(customer))
    for col in ("repurchase_score", "repurchase_rank", "variants_score"):
        np.testing.assert_allclose(got[col].to_numpy(), want[col].to_numpy(), rtol=1e-6)
    assert live.warm(np.array([0, 1])).all() and not stage.warm(np.array([3]))[0]


def test_live_stage_folds_the_als_vectors_in() -> None:
    """`pair_als` and the `als` source of the live stage use the customer vectors folded in
    with the posted purchases, so an unknown customer gets scores too."""
    sources = parse_sources("repurchase:6,als:3")
    stage = fit_stage(SMALL, sources, {"als": {"factors": 4, "regularization": 0.1}}, rows=True)
    als, users, extra = stage.parts["als"], np.array([0, -1]), [np.array([4]), np.array([5])]
    live = stage.live_stage(users, extra)
    got = live.frame(np.array([0, 1]), sources)
    vectors = als.user_vectors(users, extra_matrix(extra, 6))
    assert not np.isnan(vectors).any()
    want = np.einsum("ij,ij->i", vectors[got["row"]], als.item_factors_[got["item"]])
    np.testing.assert_allclose(got["pair_als"].to_numpy(), want, rtol=1e-5, atol=1e-7)
    fitted = stage.frame(np.array([0]), sources).sort("item")
    own = got.filter(pl.col("row") == 0).join(fitted.select("item"), on="item").sort("item")
    assert not np.allclose(own["pair_als"].to_numpy(), fitted["pair_als"].to_numpy())
    for row in (0, 1):  # the als source's candidates are those of ALS.recommend_with
        recs = als.recommend_with(users[row : row + 1], extra[row : row + 1], 3)
        mine = got.filter(pl.col("row") == row).drop_nulls("als_rank").sort("als_rank")
        assert mine["item"].to_list() == [i for i in recs.items[0].tolist() if i >= 0]


def switch_rows(weeks: int = 8, n_users: int = 40, seed: int = 0) -> list[tuple[int, int, int]]:
    """(days before the end, customer, article): every two weeks each customer picks a new
    article of 10-29, buys it in both weeks, and buys one popular article (0-5) every week; so
    an article of 10-29 bought once, in the last visit, is bought again next week."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for w in range(weeks):
            rows.append((7 * w + int(rng.integers(0, 7)), u, 10 + (u + 7 * (w // 2)) % 20))
            rows.append((7 * w + int(rng.integers(0, 7)), u, int(rng.integers(0, 6))))
    return rows


def test_recommend_with_counts_new_purchases(tmp_path: Path) -> None:
    model = registry.create("ranker", **RANKER_FAST).fit(
        make_dataset(switch_rows(), 30, n_users=42)
    )
    users = np.arange(40)
    fitted = model.recommend(users, 3)
    none = model.recommend_with(users, [np.array([], np.int64)] * 40, 3)
    np.testing.assert_array_equal(none.items, fitted.items)
    np.testing.assert_allclose(none.scores, fitted.scores, rtol=1e-6)
    # each customer now buys an article of 10-29 they never had: it comes first at once
    posted = (users + 3) % 20 + 10
    assert (fitted.items[:, 0] != posted).all()
    live = model.recommend_with(users, [np.array([i]) for i in posted], 3)
    np.testing.assert_array_equal(live.items[:, 0], posted)
    # customers without purchases (a cold one, an unknown one) are ranked from the posted ones
    cold = model.recommend_with(np.array([40, -1]), [np.array([12]), np.array([17])], 3)
    assert cold.items[:, 0].tolist() == [12, 17]
    # and the same from the saved artifact (the customers' purchases are part of it)
    artifacts.save(model, tmp_path / "m")
    loaded = artifacts.load(tmp_path / "m")
    again = loaded.recommend_with(users, [np.array([i]) for i in posted], 3)
    np.testing.assert_array_equal(again.items, live.items)
    # the API score is 1 + the calibrated purchase probability
    assert ((live.scores[:, 0] > 1.5) & (live.scores[:, 0] < 2.0)).all()
    assert model.calibration_[0] > 0  # a higher ensemble score, a likelier purchase
    # exclude_seen: neither the fitted nor the new purchases come back
    unseen = model.recommend_with(users, [np.array([i]) for i in posted], 3, exclude_seen=True)
    assert not (unseen.items == posted[:, None]).any()


def test_recommend_with_on_a_model_saved_without_purchases(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = make_dataset(switch_rows(n_users=20), 30, n_users=20)
    model = registry.create("ranker", **RANKER_FAST).fit(data)
    for key in [k for k in model.stage().ctx if k.startswith("rows_")]:
        del model.stage().ctx[key]  # as an artifact from before live updates
    users = np.arange(20)
    got = model.recommend_with(users, [np.array([12])] * 20, 3)
    np.testing.assert_array_equal(got.items, model.recommend(users, 3).items)
    assert "count only after a refit" in caplog.text
    with pytest.raises(ConfigError, match="refit it"):
        model.stage().live_stage(users, [np.array([12])] * 20)


def test_calibrate_recovers_a_known_probability_under_negative_sampling() -> None:
    # labels drawn with P(buy) = sigmoid(2 s - 3); three in four negatives dropped, as
    # train_rows would: weighting the rest by 4 gives back the slope and intercept
    rng = np.random.default_rng(0)
    score = rng.normal(size=200_000)
    label = (rng.random(len(score)) < 1 / (1 + np.exp(-(2 * score - 3)))).astype(float)
    keep = (label > 0) | (rng.random(len(score)) < 0.25)
    a, b = calibrate(score[keep], label[keep], np.full(keep.sum(), 0.25))
    assert a == pytest.approx(2.0, abs=0.05) and b == pytest.approx(-3.0, abs=0.05)
    unweighted = calibrate(score[keep], label[keep], np.ones(keep.sum()))
    assert unweighted[1] > -2.0  # without the weights the intercept is ln 4 too high
