"""usercf: customer neighbours by cosine (implicit) and mean-centred kNN ratings (explicit)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from fashionrec.errors import ConfigError
from fashionrec.models import usercf
from fashionrec.models.usercf import RatingUserCF, UserCF, user_neighbours
from tests.conftest import make_dataset


def dense_top_n(x: np.ndarray, n: int) -> np.ndarray:
    """The obvious computation: full cosine matrix, no self, the n largest positive per row."""
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sims = unit @ unit.T
    np.fill_diagonal(sims, 0)
    out = np.zeros_like(sims)
    for row in range(len(sims)):
        top = np.lexsort((np.arange(len(sims)), -sims[row]))[:n]
        top = top[sims[row, top] > 0]
        out[row, top] = sims[row, top]
    return out


@pytest.mark.parametrize("budget", [usercf.BLOCK_BUDGET, 5])  # one block, many blocks
def test_neighbours_equal_the_dense_cosine(budget: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usercf, "BLOCK_BUDGET", budget)
    rng = np.random.default_rng(3)
    x = (rng.random((30, 12)) < 0.2) * rng.integers(1, 4, (30, 12)).astype(np.float32)
    got = user_neighbours(sp.csr_matrix(x), 4).toarray()
    np.testing.assert_allclose(got, dense_top_n(x, 4), rtol=1e-5, atol=1e-6)


def test_customers_like_you() -> None:
    """Customers 0-3 bought articles 0 and 1, customer 4 only 0, customers 5-7 articles 2 and 3."""
    rows = [(1, u, i) for u in range(4) for i in (0, 1)] + [(1, 4, 0)]
    rows += [(1, u, i) for u in range(5, 8) for i in (2, 3)] + [(1, 5, 4)]
    data = make_dataset(rows, 6, n_users=9)
    model = UserCF(neighbours=3, half_life=None).fit(data)
    near = model.similar_customers(np.array([4, 5]), 4).items
    assert near[0].tolist() == [0, 1, 2, -1]  # the three best of four ties: lowest indices
    assert set(near[1, :2].tolist()) == {6, 7}
    top = model.recommend(np.array([4, 6]), 2, exclude_seen=True).items
    assert top[0, 0] == 1  # what the neighbours bought besides article 0
    assert top[1, 0] == 4  # customer 5 is 6's neighbour and bought article 4
    own = model.recommend(np.array([4]), 2).items[0]
    assert own.tolist() == [0, 1]  # a tie (4 x 1/sqrt(2) each): the lower index first
    cold = model.recommend(np.array([8, -1]), 3).items
    np.testing.assert_array_equal(cold[0], cold[1])  # both get popularity


def test_purchases_after_the_fit_find_the_neighbours_again() -> None:
    """recommend_with: with counts (no half-life) a posted purchase adds 1, exactly as a refit on
    the data with it added would, so the customer's neighbours and list equal the refit's."""
    rows = [(1, u, i) for u in range(4) for i in (0, 1)] + [(1, 4, 0)]
    rows += [(1, u, i) for u in range(5, 8) for i in (2, 3)] + [(1, 5, 4)]
    model = UserCF(neighbours=3, half_life=None).fit(make_dataset(rows, 6, n_users=9))
    users = np.array([4, 8, -1])  # 4 bought article 0; 8 never bought; an unknown customer
    fitted = model.recommend(users, 3)
    none = model.recommend_with(users, [np.array([], np.int64)] * 3, 3)
    np.testing.assert_array_equal(none.items, fitted.items)
    np.testing.assert_array_equal(none.scores, fitted.scores)
    posted = [np.array([2, 3]), np.array([2]), np.array([2])]  # the taste of customers 5-7
    live = model.recommend_with(users, posted, 3, exclude_seen=True)
    for row, user in enumerate(users[:2]):  # each against a refit with only its purchases
        added = [(1, int(user), int(i)) for i in posted[row]]
        refit = UserCF(neighbours=3, half_life=None).fit(make_dataset(rows + added, 6, n_users=9))
        want = refit.recommend(users[row : row + 1], 3, exclude_seen=True)
        np.testing.assert_array_equal(live.items[row], want.items[0])
        np.testing.assert_allclose(live.scores[row], want.scores[0], rtol=1e-6)
    assert live.items[1, :2].tolist() == [3, 4]  # what 5-7 bought besides 2: 3 (all), 4 (one)
    np.testing.assert_array_equal(live.items[2], live.items[1])  # unknown: as customer 8
    assert fitted.items[1, 0] != 3  # before: popularity


def test_recency_weights_the_neighbours_purchases() -> None:
    """Customer 2 shares article 0 with customers 0 and 1; 0 bought article 1 today, 1 bought
    article 2 sixty days ago: with a half-life the recent purchase wins, without it a tie."""
    rows = [(0, 0, 0), (0, 1, 0), (0, 2, 0), (0, 0, 1), (60, 1, 2)]
    data = make_dataset(rows, 3, n_users=3)
    recent = UserCF(half_life=30.0).fit(data).recommend(np.array([2]), 1, exclude_seen=True)
    flat = UserCF(half_life=None).fit(data).recommend(np.array([2]), 2, exclude_seen=True)
    assert recent.items[0, 0] == 1
    assert flat.scores[0, 0] == flat.scores[0, 1]


def test_bad_neighbours_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        UserCF(neighbours=0).fit(make_dataset([(0, 0, 0)], 1, n_users=1))


# ---- explicit ratings -------------------------------------------------------------------------

# a: 5 1 . .   b: 4 2 5 1   c: 2 4 1 5   d: 4 2 3 3   (every mean is 3)
RATINGS = sp.csr_matrix(np.array([[5, 1, 0, 0], [4, 2, 5, 1], [2, 4, 1, 5], [4, 2, 3, 3.0]]))


def test_ratings_by_hand() -> None:
    """Centred: a (2, -2), b (1, -1, 2, -2), c = -b, d (1, -1, 0, 0); cosines with a: b 1/sqrt 5,
    c negative (never used), d 1."""
    s = 1 / math.sqrt(5)
    model = RatingUserCF(k=2).fit(RATINGS)
    pred = model.predict(np.array([0, 0]), np.array([2, 3]))
    np.testing.assert_allclose(pred, [3 + 2 * s / (s + 1), 3 - 2 * s / (s + 1)])
    nearest = RatingUserCF(k=1).fit(RATINGS).predict(np.array([0]), np.array([2]))
    np.testing.assert_allclose(nearest, [3.0])  # only d, who rated article 2 at their mean
    shrunk = RatingUserCF(k=2, shrinkage=10).fit(RATINGS).predict(np.array([0]), np.array([2]))
    np.testing.assert_allclose(shrunk, pred[:1])  # both share 2 co-ratings: the same factor


def test_ratings_fallbacks_and_clipping() -> None:
    # customer means 4.5 and 2, global mean 3: an unknown customer gets 3, an unknown article 4.5
    model = RatingUserCF().fit(sp.csr_matrix(np.array([[5, 4, 0], [1, 2, 3.0]])))
    pred = model.predict(np.array([-1, 0, 7]), np.array([0, 9, 0]))
    np.testing.assert_allclose(pred, [3.0, 4.5, 3.0])  # unknown customer, article, customer
    # customer 0 (mean 4.5) is like 1 and 2, who rated article 2 above their means (+4/3, +1):
    # 4.5 + their weighted deviation is 5.67, clipped to the highest rating seen, 5
    high = sp.csr_matrix(np.array([[5, 4, 0], [5, 1, 5], [5, 2, 5.0]]))
    assert RatingUserCF().fit(high).predict(np.array([0]), np.array([2]))[0] == 5.0


def test_rating_blocks_bound_the_dense_similarities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usercf, "SIMS_BUDGET", 2 * RATINGS.shape[0])  # 2 customers' rows
    model = RatingUserCF().fit(RATINGS)
    sizes: list[int] = []
    block = model._predict_block

    def spy(users: np.ndarray, items: np.ndarray, base: np.ndarray) -> np.ndarray:
        sizes.append(len(np.unique(users)))
        return block(users, items, base)

    monkeypatch.setattr(model, "_predict_block", spy)
    users, items = np.nonzero(np.ones(RATINGS.shape))  # 4 customers x 4 articles
    model.predict(users[::-1], items[::-1])
    assert sizes == [2, 2]


@pytest.mark.parametrize(
    ("triples", "sims"),
    [(usercf.TRIPLES_BUDGET, usercf.SIMS_BUDGET), (7, usercf.SIMS_BUDGET), (10**6, 60), (7, 1)],
)  # one block; blocks by candidates; 2 customers a block; both (1 customer a block)
def test_ratings_equal_a_plain_loop(
    triples: int, sims: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usercf, "TRIPLES_BUDGET", triples)
    monkeypatch.setattr(usercf, "SIMS_BUDGET", sims)
    rng = np.random.default_rng(5)
    dense = np.where(rng.random((25, 15)) < 0.4, rng.integers(1, 6, (25, 15)), 0).astype(float)
    users, items = np.nonzero(dense == 0)
    got = RatingUserCF(k=3, shrinkage=2).fit(sp.csr_matrix(dense)).predict(users, items)
    rated = dense > 0
    means = dense.sum(1) / rated.sum(1)
    centred = np.where(rated, dense - means[:, None], 0)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    unit = centred / np.where(norms > 0, norms, 1)
    common = rated @ rated.T.astype(float)
    sims = unit @ unit.T * common / (common + 2)
    for u, i, value in zip(users, items, got, strict=True):
        raters = np.flatnonzero(rated[:, i])
        s = sims[u, raters]
        top = np.argsort(-s, kind="stable")[:3]
        top = top[s[top] > 1e-9]
        want = means[u]
        if len(top):
            want += (s[top] * centred[raters[top], i]).sum() / s[top].sum()
        assert value == pytest.approx(np.clip(want, 1, 5))
