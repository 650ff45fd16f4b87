"""The contract every registered model must pass (ARCHITECTURE.md, 'The model contract')."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashionrec import artifacts
from fashionrec.data.dataset import Dataset
from fashionrec.models import registry
from fashionrec.models.base import HistoryAware, Recommender

# For each model: (customer, the article that must be its top recommendation) on the known-answer
# store of conftest.known_answer_rows. A new model must add its entry here.
KNOWN_TOP = {
    "popular": ("u5", "A1"),
    "decay": ("u5", "A1"),
    "repurchase": ("u0", "A4"),
    "segments": ("u5", "A1"),  # tiny segments shrink to decay; u0 -> A4 in test_segments.py
    "itemcf": ("u0", "A4"),  # no co-purchase within 7 days: u0's own articles, A4 most recent
    "content": ("u0", "A4"),  # texts "name Ai" share no word ("name" is a stop word): own A4
    "als": ("u0", "A4"),  # u0 bought A4 three times lately: the strongest confidence
    "bpr": ("u9", "A0"),  # binary, no recency: A0, bought by all 12 customers, ranks first
    "ns-rnn": ("u0", "A1"),  # after A0, 9 of 12 customers bought A1 next; u0 (A0, A4) has not
    "ns-lstm": ("u0", "A1"),
    "ns-gru": ("u0", "A1"),
    "ns-attention": ("u0", "A1"),
    "ns-transformer": ("u0", "A1"),
    "sasrec": ("u0", "A1"),
    "cvae": ("u5", "A1"),  # recency-weighted reconstruction: A1, 11 buyers last week
    "lightgcn": ("u9", "A0"),  # binary graph, no recency: A0 has the most edges (12)
    "usercf": ("u5", "A1"),  # u5's neighbours (recency-weighted) all bought A1 last week
    "ranker": ("u0", "A4"),  # label_days=2: u0 bought A4 again within 2 days, twice
    "weighted": ("u0", "A4"),  # repurchase and itemcf both put u0's A4 first
    "switching": ("u0", "A4"),  # u0 bought a day before the end: repurchase, own A4 first
    "cascade": ("u0", "A4"),  # own articles first: A4, bought three times lately
}
# Parameters that make a model quick on the tiny fixtures (defaults otherwise).
FAST: dict[str, dict] = {}
FAST["als"] = {"factors": 8, "regularization": 1.0, "search": "ann"}  # bpr covers "exact"
_SEQ = {"emb_dim": 8, "user_dim": 4, "epochs": 8, "batch_size": 128, "lr": 0.02, "validate": False}
FAST |= {m: {**_SEQ, "hidden": 8} for m in ("ns-rnn", "ns-lstm", "ns-gru", "ns-attention")}
FAST["ns-transformer"] = {**_SEQ, "heads": 2, "layers": 1, "ff": 16, "mlp": [8]}
FAST["sasrec"] = {**_SEQ, "blocks": 1, "max_history": 10}
FAST["ranker"] = {"label_days": 2, "content": False, "min_data_in_leaf": 2, "n_estimators": 20}
FAST["ranker"] |= {"params": "als.factors=8;als.regularization=1.0;als.iterations=3"}
FAST["cvae"] = {"hidden": 16, "latent": 4, "epochs": 20, "lr": 0.01, "validate": False}
FAST["lightgcn"] = {"factors": 8, "epochs": 10, "batch_size": 512, "validate": False}
MODELS = sorted(registry.MODELS)


def fitted(name: str, data: Dataset) -> Recommender:
    return registry.create(name, **FAST.get(name, {})).fit(data)


def test_every_model_has_a_known_answer() -> None:
    assert set(KNOWN_TOP) == set(registry.MODELS)


# The models that count purchases made after the fit (`recommend_with`): every personalised one,
# and segments (from the purchase profile, a new customer's purchases place them); popularity
# does not read a customer's purchases. A new model must be placed in one group or the other.
HISTORY_AWARE = {"repurchase", "itemcf", "content", "usercf", "als", "bpr", "cvae", "lightgcn"}
HISTORY_AWARE.add("segments")
HISTORY_AWARE.add("ranker")
HISTORY_AWARE |= {"ns-rnn", "ns-lstm", "ns-gru", "ns-attention", "ns-transformer", "sasrec"}
HISTORY_AWARE |= {"weighted", "switching", "cascade"}


@pytest.mark.parametrize("name", MODELS)
def test_purchases_after_the_fit(name: str, random_dataset: Dataset) -> None:
    """recommend_with: no new purchases is `recommend`; posted ones give valid lists, also to an
    unknown customer, and exclude_seen leaves them out."""
    model = registry.create(name, **FAST.get(name, {}))
    assert isinstance(model, HistoryAware) == (name in HISTORY_AWARE)
    if name not in HISTORY_AWARE:
        return
    model.fit(random_dataset)
    users = np.array([0, 1, 2, -1])
    fitted_recs = model.recommend(users, 12)
    for none in (None, [np.array([], np.int64)] * 4):
        same = model.recommend_with(users, none, 12)
        np.testing.assert_array_equal(same.items, fitted_recs.items)
        np.testing.assert_allclose(same.scores, fitted_recs.scores, rtol=1e-5)
    posted = [np.array([3, 7]), np.array([5]), np.array([], np.int64), np.array([7])]
    live = model.recommend_with(users, posted, 12, exclude_seen=True)
    assert live.items.shape == live.scores.shape == (4, 12) and live.items.dtype == np.int32
    for row, bought in zip(live.items, posted, strict=True):
        valid = row[row >= 0]
        assert len(set(valid.tolist())) == len(valid) and len(valid) > 0
        assert not np.isin(valid, bought).any(), "exclude_seen must leave out the new purchases"
    np.testing.assert_array_equal(
        live.items[2], model.recommend(users[2:3], 12, exclude_seen=True).items[0]
    )


@pytest.mark.parametrize("name", MODELS)
def test_shapes_dtypes_and_no_duplicates(name: str, random_dataset: Dataset) -> None:
    model = fitted(name, random_dataset)
    assert isinstance(model, Recommender)
    users = np.arange(random_dataset.n_users)
    for k in (1, 12, 50):  # 50 > 40 articles: rows must pad with -1
        recs = model.recommend(users, k)
        assert recs.items.shape == recs.scores.shape == (len(users), k)
        assert recs.items.dtype == np.int32 and recs.scores.dtype == np.float32
        assert recs.items.min() >= -1 and recs.items.max() < random_dataset.n_items
        for row, scores in zip(recs.items, recs.scores, strict=True):
            valid = row[row >= 0]
            assert len(set(valid.tolist())) == len(valid), "duplicate item in a row"
            assert (row[: len(valid)] >= 0).all(), "-1 padding only at the end"
            assert np.all(np.diff(scores[: len(valid)]) <= 1e-6), "scores must descend"
        assert (recs.items[:, 0] >= 0).all(), "every user gets at least one item"


@pytest.mark.parametrize("name", MODELS)
def test_exclude_seen(name: str, random_dataset: Dataset) -> None:
    model = fitted(name, random_dataset)
    users = np.arange(random_dataset.n_users)
    recs = model.recommend(users, 10, exclude_seen=True)
    seen = random_dataset.user_items(binary=True)
    n_sold = len(np.unique(random_dataset.transactions["item"]))
    for u, row in zip(users, recs.items, strict=True):
        bought = set(seen[u].indices.tolist())
        assert not bought & set(row[row >= 0].tolist()), f"user {u} got a bought article"
        # at least every sold article that the user has not bought is a candidate
        assert (row >= 0).sum() >= min(10, n_sold - len(bought))


@pytest.mark.parametrize("name", MODELS)
def test_unknown_and_cold_users_get_the_fallback(name: str, random_dataset: Dataset) -> None:
    model = fitted(name, random_dataset)
    cold = [
        u for u in range(random_dataset.n_users) if u not in set(random_dataset.buyers().tolist())
    ]
    assert cold, "the fixture has customers without purchases"
    recs = model.recommend(np.array([-1, cold[0]]), 12)
    assert (recs.items >= 0).all()
    if getattr(model, "cold_start_by_attributes", False):
        return  # cold customers are served by their attributes (tested in the model's tests)
    np.testing.assert_array_equal(recs.items[0], recs.items[1])


@pytest.mark.parametrize("name", MODELS)
def test_deterministic(name: str, random_dataset: Dataset) -> None:
    users = np.arange(random_dataset.n_users)
    a = fitted(name, random_dataset).recommend(users, 12)
    b = fitted(name, random_dataset).recommend(users, 12)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.scores, b.scores)


@pytest.mark.parametrize("name", MODELS)
def test_save_load_round_trip(name: str, random_dataset: Dataset, tmp_path: Path) -> None:
    model = fitted(name, random_dataset)
    artifacts.save(model, tmp_path / name, dataset_hash=random_dataset.hash)
    loaded = artifacts.load(tmp_path / name)
    assert type(loaded) is type(model)
    users = np.arange(-1, random_dataset.n_users)
    for exclude_seen in (False, True):
        a = model.recommend(users, 12, exclude_seen=exclude_seen)
        b = loaded.recommend(users, 12, exclude_seen=exclude_seen)
        np.testing.assert_array_equal(a.items, b.items)
        np.testing.assert_array_equal(a.scores, b.scores)
    assert not list((tmp_path / name).glob("*.pkl"))


@pytest.mark.parametrize("name", MODELS)
def test_known_answer(name: str, known_dataset: Dataset) -> None:
    customer, article = KNOWN_TOP[name]
    model = fitted(name, known_dataset)
    user = known_dataset.user_ids.to_index([customer])
    top = model.recommend(user, 3).items[0, 0]
    assert known_dataset.item_ids.to_ids(np.array([top]))[0] == article
