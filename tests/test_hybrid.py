"""Hybrids (weighted, switching, cascade): known answers on hand-made stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fashionrec import artifacts
from fashionrec.errors import ConfigError
from fashionrec.models import registry
from fashionrec.models.base import Recs
from fashionrec.models.hybrid import normalised
from tests.conftest import make_dataset

# Items 0-1 are everybody's recent best sellers; user 0 bought item 5 yesterday and item 6 long
# ago; user 1 last bought (item 7) 200 days ago; user 2 bought nothing.
ROWS = [(d, u, i) for u in range(3, 13) for d, i in ((1, 0), (2, 0), (3, 1))]
ROWS += [(1, 0, 5), (120, 0, 6), (200, 1, 7)]
DATA = make_dataset(ROWS, 10, n_users=14)


def top(name: str, user: int, k: int = 4, **params) -> list[int]:
    model = registry.create(name, **params).fit(DATA)
    return model.recommend(np.array([user]), k).items[0].tolist()


def test_normalised_scales_rows_into_unit_interval() -> None:
    recs = Recs(np.array([[3, 1, -1], [2, 0, 4]]), np.array([[5.0, 1.0, -np.inf], [2.0, 2.0, 2.0]]))
    out = normalised(recs)
    np.testing.assert_allclose(out.scores[0, :2], [1.0, 1e-3], rtol=1e-6)
    assert out.scores[0, 2] == -np.inf
    np.testing.assert_allclose(out.scores[1], [1.0, 1.0, 1.0])


def test_cascade_puts_own_items_first() -> None:
    # own items of user 0 (5 recent, then 6) come before the best sellers 0 and 1
    assert top("cascade", 0, models="decay") == [5, 6, 0, 1]
    assert top("cascade", 0, models="decay", own_items=1) == [5, 0, 1, 6]
    # with exclude_seen nothing bought comes back: only the decay list
    model = registry.create("cascade", models="decay").fit(DATA)
    assert model.recommend(np.array([0]), 2, exclude_seen=True).items[0].tolist() == [0, 1]


def test_switching_by_recency() -> None:
    params = {"models": "repurchase,decay", "recent_days": 30}
    assert top("switching", 0, **params)[:2] == [5, 6]  # recent: repurchase, own items first
    assert top("switching", 1, **params)[:2] == [0, 1]  # 200 days ago: decay
    assert top("switching", 1, **{**params, "recent_days": 365})[0] == 7
    assert top("switching", 2, **params)[:2] == [0, 1]  # cold
    with pytest.raises(ConfigError, match="exactly two"):
        registry.create("switching", models="repurchase").fit(DATA)


def test_weighted_weights_decide() -> None:
    # repurchase puts 5 first, decay puts 0 first; the heavier weight wins
    assert top("weighted", 0, models="repurchase,decay", weights="0.9,0.1")[0] == 5
    assert top("weighted", 0, models="repurchase,decay", weights="0.1,0.9")[0] == 0
    with pytest.raises(ConfigError, match="weight"):
        registry.create("weighted", models="repurchase,decay", weights="1").fit(DATA)


def test_purchases_after_the_fit_reach_the_components() -> None:
    """recommend_with: user 1 (last bought 200 days ago) and user 2 (never) buy now."""
    hybrids = {
        "switching": {"models": "repurchase,decay", "recent_days": 30},
        "cascade": {"models": "decay"},
        "weighted": {"models": "repurchase,decay", "weights": "0.9,0.1"},
    }
    users, posted = np.array([0, 1, 2]), [np.array([], np.int64), np.array([8]), np.array([9])]
    for name, params in hybrids.items():
        model = registry.create(name, **params).fit(DATA)
        fitted = model.recommend(users, 4)
        none = model.recommend_with(users, [np.array([], np.int64)] * 3, 4)
        np.testing.assert_array_equal(none.items, fitted.items)
        live = model.recommend_with(users, posted, 4)
        np.testing.assert_array_equal(live.items[0], fitted.items[0])  # nothing new for user 0
        assert fitted.items[1, 0] != 8 and fitted.items[2, 0] != 9, name
        assert (live.items[1, 0], live.items[2, 0]) == (8, 9), name
    # switching: user 1 is recent again (repurchase: 8, then 7); cascade: 9 is an own article
    switching = registry.create("switching", **hybrids["switching"]).fit(DATA)
    assert switching.recommend_with(users[1:2], posted[1:2], 2).items[0].tolist() == [8, 7]
    cascade = registry.create("cascade", **hybrids["cascade"]).fit(DATA)
    assert cascade.recommend_with(users[2:], posted[2:], 3).items[0].tolist() == [9, 0, 1]


def test_component_params_and_round_trip(tmp_path: Path) -> None:
    model = registry.create(
        "weighted",
        models="repurchase,als",
        weights="0.5,0.5",
        params="als.factors=4;als.iterations=2",
    ).fit(DATA)
    assert model.components()["als"].user_factors_.shape[1] == 4
    artifacts.save(model, tmp_path / "w")
    loaded = artifacts.load(tmp_path / "w")
    users = np.arange(-1, DATA.n_users)
    a, b = model.recommend(users, 5), loaded.recommend(users, 5)
    np.testing.assert_array_equal(a.items, b.items)
    np.testing.assert_array_equal(a.scores, b.scores)
    with pytest.raises(ConfigError, match="not one of"):
        registry.create("weighted", models="repurchase,decay", params="als.factors=4").fit(DATA)
