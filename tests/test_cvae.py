"""cvae: conditional Mult-VAE, conditioned on k-modes segments, with attribute cold start."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashionrec import artifacts
from fashionrec.data.dataset import Dataset
from fashionrec.errors import ConfigError
from fashionrec.models.cvae import CVAE
from tests.conftest import make_dataset

QUICK = {"hidden": 16, "latent": 4, "epochs": 30, "lr": 0.01, "validate": False}


@pytest.fixture(scope="module")
def genders() -> Dataset:
    """Women (0-29) buy two of the articles 0-2, men (30-59) two of 3-5, in the last 20 days;
    men buy more, so the global list starts with men's articles. Customers 25-29 and 55-59 have
    never bought; customer 24 bought article 0 only."""
    rows = []
    for u in range(60):
        base, n = (0, 24) if u < 30 else (3, 55)
        if u < n:
            rows += [(u % 20, u, base + u % 3), (u % 20, u, base + (u + 1) % 3)]
    rows += [(1, u, 3 + u % 3) for u in range(30, 55)]  # a third article per man
    rows.append((2, 24, 0))
    return make_dataset(rows, 7, {"gender": ["F"] * 30 + ["M"] * 30})


def fit(data: Dataset, **params: object) -> CVAE:
    return CVAE(**(QUICK | params)).fit(data)


def test_cold_customers_get_their_segments_prior(genders: Dataset) -> None:
    model = fit(genders)
    assert model.n_cond_ == 2 and model.segment_of(np.array([27, 57, -1])).tolist()[2] == -1
    top = model.recommend(np.array([27, 57]), 3).items
    assert set(top[0].tolist()) == {0, 1, 2}  # a woman without purchases: women's articles
    assert set(top[1].tolist()) == {3, 4, 5}
    attrs = model.recommend_attributes({"gender": "F"}, 3).items[0]
    np.testing.assert_array_equal(attrs, top[0])
    assert model.assign({"gender": "M"}) == model.segment_of(np.array([57]))[0]
    assert model.options() == {"gender": ["F", "M"]}


def test_without_the_condition_cold_customers_get_popularity(genders: Dataset) -> None:
    model = fit(genders, conditional=False)
    top = model.recommend(np.array([27, 57, -1]), 3).items
    assert set(top[0].tolist()) == {3, 4, 5}  # the global list: men bought more
    np.testing.assert_array_equal(top[0], top[2])
    assert model.assign({"gender": "F"}) == -1
    with pytest.raises(ConfigError):
        model.options()


@pytest.mark.parametrize("conditional", [True, False])
def test_history_is_decoded_into_co_purchases(genders: Dataset, conditional: bool) -> None:
    model = fit(genders, conditional=conditional)
    top = model.recommend(np.array([24]), 2, exclude_seen=True).items[0]
    assert set(top.tolist()) == {1, 2}  # bought 0 only: the other women's articles


def test_purchases_after_the_fit_are_encoded_at_once(genders: Dataset, tmp_path: Path) -> None:
    """recommend_with: the posted articles join the bag the encoder reads."""
    model = fit(genders, conditional=False)
    users = np.array([24, 57, -1])  # bought 0 only; a man without purchases; unknown
    fitted = model.recommend(users, 2, exclude_seen=True)
    none = model.recommend_with(users, [np.array([], np.int64)] * 3, 2, exclude_seen=True)
    np.testing.assert_array_equal(none.items, fitted.items)
    np.testing.assert_allclose(none.scores, fitted.scores, rtol=1e-6)
    posted = [np.array([1]), np.array([0, 1]), np.array([0])]
    live = model.recommend_with(users, posted, 2, exclude_seen=True)
    assert live.items[0, 0] == 2  # 0 and 1 bought: the third women's article
    assert live.items[1, 0] == 2  # a man who buys women's articles is served as a woman
    assert set(live.items[2].tolist()) == {1, 2}  # unknown, bought 0: as customer 24 was
    assert set(fitted.items[1].tolist()) == {3, 4}  # before: popularity (men bought more)
    artifacts.save(model, tmp_path / "cvae")
    again = artifacts.load(tmp_path / "cvae").recommend_with(users, posted, 2, exclude_seen=True)
    np.testing.assert_array_equal(again.items, live.items)


def test_columns_are_the_most_bought_articles(genders: Dataset) -> None:
    model = fit(genders, n_items=2)
    counts = genders.item_popularity()
    assert sorted(model.columns_.tolist()) == sorted(np.argsort(-counts)[:2].tolist())
    recs = model.recommend(np.arange(60), 6)
    assert (recs.items >= 0).all()  # lists are filled beyond the modelled articles
    full = fit(genders, n_items=None)
    assert full.columns_.tolist() == [0, 1, 2, 3, 4, 5]  # every sold article, not 6


def test_recency_weighted_targets_prefer_recent_articles(known_dataset: Dataset) -> None:
    user = known_dataset.user_ids.to_index(["u5"])
    names = {
        hl: known_dataset.item_ids.to_ids(fit(known_dataset, half_life=hl).recommend(user, 1).items)
        for hl in (30.0, None)
    }
    assert names[30.0][0, 0] == "A1"  # bought by 11 customers last week
    assert names[None][0, 0] == "A0"  # binary: bought by all 12 customers, 90 days ago


def test_save_load_keeps_the_segments(genders: Dataset, tmp_path: Path) -> None:
    model = fit(genders)
    artifacts.save(model, tmp_path / "cvae")
    loaded = artifacts.load(tmp_path / "cvae")
    assert (tmp_path / "cvae" / "weights_.safetensors").exists()
    for attrs in ({"gender": "F"}, {"gender": "M"}, {}):
        assert loaded.assign(attrs) == model.assign(attrs)
        a, b = model.recommend_attributes(attrs, 4), loaded.recommend_attributes(attrs, 4)
        np.testing.assert_array_equal(a.items, b.items)
    assert loaded.options() == model.options()


def test_bad_parameters_are_config_errors(genders: Dataset) -> None:
    with pytest.raises(ConfigError):
        CVAE(dropout=1.0).fit(genders)
    with pytest.raises(ConfigError):
        CVAE(latent=0).fit(genders)
