"""Known answers of the baselines beyond the contract: exact rankings on the known-answer store."""

from __future__ import annotations

import numpy as np

from fashionrec.data.dataset import Dataset
from fashionrec.models import registry


def top(data: Dataset, name: str, customer: str, k: int, **params) -> list[str]:
    model = registry.create(name, **params).fit(data)
    recs = model.recommend(data.user_ids.to_index([customer]), k)
    return [a for a in data.item_ids.to_ids(recs.items[0]) if a is not None]


def test_popular_window(known_dataset: Dataset) -> None:
    # last 7 days: A1 x11, A4 x3, A5 x1; then the all-time tier: A0 x12, A2 x1 (ties by index)
    assert top(known_dataset, "popular", "u9", 5, days=7) == ["A1", "A4", "A5", "A0", "A2"]
    # over 365 days A0 (12 buys) beats A1 (11)
    assert top(known_dataset, "popular", "u9", 2, days=365) == ["A0", "A1"]


def test_decay_prefers_recent(known_dataset: Dataset) -> None:
    # A0's 12 purchases are ~90 days old: with a 7-day half-life they weigh ~12/2**13
    ranking = top(known_dataset, "decay", "u9", 7, half_life=7.0)
    assert ranking[:2] == ["A1", "A4"] and ranking.index("A0") > ranking.index("A3")
    # with a very long half-life counts dominate again
    assert top(known_dataset, "decay", "u9", 1, half_life=10_000.0) == ["A0"]


def test_repurchase_own_items_then_popular(known_dataset: Dataset) -> None:
    # u1 bought A0 (~90 days ago), A1 (1 day ago), A2 (20 days ago): own items by decayed weight
    assert top(known_dataset, "repurchase", "u1", 3, half_life=30.0) == ["A1", "A2", "A0"]
    # u0's own A4 (3 recent buys) and A0 (~90 days ago) first, then the decay fill without A4/A0
    ranking = top(known_dataset, "repurchase", "u0", 4)
    assert ranking == ["A4", "A0", "A1", "A5"]


def test_repurchase_window(known_dataset: Dataset) -> None:
    # only the last 10 days count as own history: u1 keeps A1, then the decay fill (A4, A5 ...)
    ranking = top(known_dataset, "repurchase", "u1", 3, window_days=10)
    assert ranking == ["A1", "A4", "A5"]


def test_recommend_scores_are_tiered(known_dataset: Dataset) -> None:
    model = registry.create("repurchase").fit(known_dataset)
    recs = model.recommend(known_dataset.user_ids.to_index(["u0"]), 3)
    assert recs.scores[0, 1] >= 1.0 > recs.scores[0, 2]  # own items' tier above the fill tier
    assert np.all(np.diff(recs.scores[0]) <= 0)


def test_repurchase_reads_new_purchases_at_request_time(known_dataset: Dataset) -> None:
    model = registry.create("repurchase").fit(known_dataset)
    user = known_dataset.user_ids.to_index(["u9"])  # u9 bought only A0, long ago
    a3 = int(known_dataset.item_ids.to_index(["A3"])[0])
    before = model.recommend(user, 2).items[0].tolist()
    after = model.recommend_with(user, [np.array([a3, a3])], 2).items[0].tolist()
    assert a3 not in before and after[0] == a3  # bought twice "today": now the top own article
    # an unknown customer with purchases in this session is served from them too
    unknown = model.recommend_with(np.array([-1]), [np.array([a3])], 1).items[0].tolist()
    assert unknown == [a3]
    # exclude_seen removes the new purchase as well
    excl = model.recommend_with(user, [np.array([a3])], 12, exclude_seen=True).items[0]
    assert a3 not in excl.tolist()
