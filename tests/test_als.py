"""ALS and BPR beyond the contract: collaborative known answers, the pruned and ANN paths
against exact search, unsold articles, the re-buy rule, `similar`, and the shared top-k
helpers."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from fashionrec import artifacts
from fashionrec.data.dataset import Dataset
from fashionrec.data.ingest import ingest
from fashionrec.errors import ConfigError
from fashionrec.models.als import (
    ALS,
    BPR,
    PRUNE_FIRST,
    ann_top_k,
    exact_top_k,
    hnsw_index,
    norm_scan,
    pruned_top_k,
    repeat_share,
)
from fashionrec.models.base import Recs, extra_matrix, top_k_dense

from .conftest import write_tables

SMALL = {"factors": 8, "regularization": 0.1, "iterations": 15}


@pytest.fixture(scope="module")
def tastes(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """Two taste groups of 20 customers: x* buy X0, X1, X2 and y* buy Y0, Y1, Y2 (each article
    once, so no re-buys). t bought X0 and X1 only; Z was never sold."""
    start = date(2024, 1, 1)
    rows = []
    for g in "xy":
        for i in range(20):
            rows += [
                (str(start + timedelta(days=i + j)), f"{g}{i}", f"{g.upper()}{j}")
                for j in (0, 1, 2)
            ]
    rows += [
        (str(start + timedelta(days=30)), "t", "X0"),
        (str(start + timedelta(days=31)), "t", "X1"),
    ]
    root = tmp_path_factory.mktemp("tastes")
    write_tables(root / "src", rows, ["X0", "X1", "X2", "Y0", "Y1", "Y2", "Z"])
    ingest(root / "src", root / "ds")
    return Dataset.load(root / "ds")


def names(data: Dataset, items: np.ndarray) -> list[str]:
    return [a for a in data.item_ids.to_ids(items) if a is not None]


@pytest.mark.parametrize("model", [ALS(**SMALL), ALS(**SMALL, search="ann"), BPR(factors=8)])
def test_collaborative_known_answer(tastes: Dataset, model: ALS | BPR) -> None:
    model.fit(tastes)
    t = tastes.user_ids.to_index(["t"])
    # the one article of t's taste group that t has not bought, then the other group
    recs = model.recommend(t, 4, exclude_seen=True)
    assert names(tastes, recs.items[0])[0] == "X2"
    assert set(names(tastes, recs.items[0])[1:]) <= {"Y0", "Y1", "Y2"}


def test_no_rebuys_in_the_data_means_bought_articles_are_not_offered(tastes: Dataset) -> None:
    assert repeat_share(tastes) == 0.0
    model = ALS(**SMALL).fit(tastes)
    assert model.rebuy_ is False
    t = tastes.user_ids.to_index(["t"])
    top = names(tastes, model.recommend(t, 6).items[0])  # exclude_seen=False
    assert top[0] == "X2" and not {"X0", "X1"} & set(top)
    # forced on, t's own articles (confidence 1 + alpha) come first again
    forced = ALS(**SMALL, rebuy=True).fit(tastes)
    assert set(names(tastes, forced.recommend(t, 2).items[0])) == {"X0", "X1"}


def test_rebuys_in_the_data_keep_bought_articles(known_dataset: Dataset) -> None:
    assert repeat_share(known_dataset) > 0.01  # u0 bought A4 three times
    model = ALS(**SMALL).fit(known_dataset)
    assert model.rebuy_ is True
    assert names(
        known_dataset, model.recommend(known_dataset.user_ids.to_index(["u0"]), 1).items[0]
    ) == ["A4"]


@pytest.mark.parametrize("search", ["exact", "pruned", "ann"])
def test_unsold_articles_are_never_recommended(tastes: Dataset, search: str) -> None:
    model = ALS(**SMALL, search=search, rebuy=True).fit(tastes)
    warm = tastes.buyers()
    recs = model.recommend(warm, 7)  # 7 articles in the catalogue, 6 of them sold
    z = tastes.item_ids.to_index(["Z"])[0]
    assert not (recs.items == z).any()
    assert ((recs.items >= 0).sum(axis=1) == 6).all() and (recs.items[:, 6] == -1).all()


def test_confidence_is_one_plus_alpha_times_decayed_counts(known_dataset: Dataset) -> None:
    model = ALS(alpha=2.0, half_life=7.0)
    model.seen_ = model._weights(known_dataset)
    confidence = model._matrix()
    u0, a4 = known_dataset.user_ids.to_index(["u0"])[0], known_dataset.item_ids.to_index(["A4"])[0]
    # u0 bought A4 1, 2 and 4 days before the newest date
    expected = 1 + 2.0 * sum(0.5 ** (d / 7.0) for d in (1, 2, 4))
    assert confidence[u0, a4] == pytest.approx(expected, rel=1e-5)
    assert confidence.nnz == known_dataset.user_items().nnz


def test_fold_in_solves_the_normal_equations(tastes: Dataset) -> None:
    """A customer's vector with a new purchase is the least-squares solution given the article
    vectors (Hu, Koren & Volinsky, eq. 4), on the purchases weighted as in the fit."""
    model = ALS(**SMALL, alpha=4.0).fit(tastes)
    y0, x0 = tastes.user_ids.to_index(["y0"])[0], tastes.item_ids.to_index(["X0"])[0]
    new = extra_matrix([np.array([x0])], tastes.n_items)
    got = model.user_vectors(np.array([y0]), new)[0]
    row = (model.seen_[y0] + new).toarray().ravel()  # the fit's weights, plus 1 for X0
    assert row[x0] == 1.0 and (row > 0).sum() == 4  # Y0, Y1, Y2 and X0
    factors = model.item_factors_.astype(np.float64)
    c = 1.0 + 4.0 * row
    a = factors.T @ (factors * c[:, None]) + 0.1 * np.eye(8)
    want = np.linalg.solve(a, factors.T @ (c * (row > 0)))
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)
    # without new purchases, or for a customer without new ones, the fitted vectors
    fitted = model.user_vectors(np.array([y0, -1]))
    np.testing.assert_array_equal(fitted[0], model.user_factors_[y0])
    assert np.isnan(fitted[1]).all()


def test_bpr_folds_in_by_sgd_on_the_customer(tastes: Dataset, retail: Dataset) -> None:
    """BPR's fold-in: SGD on the customer's vector against the fitted articles."""
    model = BPR(factors=8).fit(tastes)
    x0, y0 = tastes.item_ids.to_index(["X0", "Y0"])
    unknown = model.recommend_with(np.array([-1, -1]), [np.array([x0]), np.array([y0])], 2)
    assert sorted(names(tastes, unknown.items[0])) == ["X1", "X2"]
    assert sorted(names(tastes, unknown.items[1])) == ["Y1", "Y2"]
    # on real data, a customer's own purchases lead back to (most of) the fitted list
    model = BPR().fit(retail)
    users = np.random.default_rng(0).choice(retail.buyers(), 100, replace=False)
    fitted = model.user_vectors(users)
    folded = model._fold_in(model.seen_[users], fitted)
    same = [
        len(set(a) & set(b))
        for a, b in zip(
            model._top(fitted, 12, None).items, model._top(folded, 12, None).items, strict=True
        )
    ]
    assert np.mean(same) / 12 > 0.7  # 0.77 measured on 200 customers


def test_fold_in_of_own_purchases_gives_back_the_fitted_vectors(retail: Dataset) -> None:
    """Solved exactly from a customer's own purchases, the vector is the conjugate-gradient
    one of the fit, to within its tolerance (the fold-in of a new purchase starts from there)."""
    model = ALS().fit(retail)
    users = np.random.default_rng(0).choice(retail.buyers(), 300, replace=False)
    fitted = model.user_vectors(users)
    folded = model._fold_in(model.seen_[users], fitted)
    cos = (fitted * folded).sum(1) / np.linalg.norm(fitted, axis=1) / np.linalg.norm(folded, axis=1)
    assert np.median(cos) > 0.999 and cos.min() > 0.99
    same = [
        len(set(a) & set(b))
        for a, b in zip(
            model._top(fitted, 12, None).items, model._top(folded, 12, None).items, strict=True
        )
    ]
    assert np.mean(same) / 12 > 0.98


def test_recommend_with_folds_in_new_purchases(
    tastes: Dataset, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = ALS(**SMALL).fit(tastes)
    users = tastes.user_ids.to_index(["x0", "t", "y0"])
    x0, y0 = tastes.item_ids.to_index(["X0", "Y0"])
    # nothing new: the fitted lists, to the bit
    fitted = model.recommend(users, 4)
    none = model.recommend_with(users, [np.array([], np.int64)] * 3, 4)
    np.testing.assert_array_equal(none.items, fitted.items)
    np.testing.assert_array_equal(none.scores, fitted.scores)
    # an unknown customer who buys X0 gets the rest of the X group, not popularity
    unknown = model.recommend_with(np.array([-1, -1]), [np.array([x0]), np.array([y0])], 2)
    assert sorted(names(tastes, unknown.items[0])) == ["X1", "X2"]
    assert sorted(names(tastes, unknown.items[1])) == ["Y1", "Y2"]
    assert (model.recommend(np.array([-1]), 2).items[0] != unknown.items[0]).any()
    # t (X0, X1) buys Y0: Y1 and Y2 now score higher for t, and Y0 is not offered (no re-buys)
    t = users[1:2]
    before = model.recommend(t, 6)
    after = model.recommend_with(t, [np.array([y0])], 6)
    assert "Y0" not in names(tastes, after.items[0])

    def score(recs: Recs, name: str) -> float:
        return float(recs.scores[0][names(tastes, recs.items[0]).index(name)])

    for name in ("Y1", "Y2"):
        assert score(after, name) > score(before, name) + 0.1
    # the saved artifact serves the same; one saved before the weights were kept (binary
    # purchases, no `weighted_`) serves the fitted list and says so
    artifacts.save(model, tmp_path / "als")
    loaded = artifacts.load(tmp_path / "als")
    np.testing.assert_array_equal(loaded.recommend_with(t, [np.array([y0])], 6).items, after.items)
    loaded.weighted_ = None
    old = loaded.recommend_with(t, [np.array([y0])], 6)
    np.testing.assert_array_equal(old.items, before.items)
    assert "new purchases count after a refit" in caplog.text


def test_ann_matches_exact_on_real_data(retail: Dataset, tmp_path: Path) -> None:
    model = ALS(factors=32, iterations=5, search="ann").fit(retail)
    exact = ALS(factors=32, iterations=5).fit(retail)
    np.testing.assert_array_equal(model.user_factors_, exact.user_factors_)
    users = retail.buyers()[:1000]
    for exclude_seen in (False, True):
        a = model.recommend(users, 12, exclude_seen=exclude_seen).items
        b = exact.recommend(users, 12, exclude_seen=exclude_seen).items
        recall = (a[:, :, None] == b[:, None, :]).any(axis=2).sum() / (b >= 0).sum()
        assert recall >= 0.95, (exclude_seen, recall)
        if exclude_seen:
            seen = retail.user_items(binary=True)[users]
            assert not seen[np.arange(len(users))[:, None], np.maximum(a, 0)][a >= 0].any()
    # a second fit builds the same graph, and so does a loaded artifact (the index is not saved)
    again = ALS(factors=32, iterations=5, search="ann").fit(retail)
    np.testing.assert_array_equal(
        again.recommend(users, 12).items, model.recommend(users, 12).items
    )
    artifacts.save(model, tmp_path / "als")
    loaded = artifacts.load(tmp_path / "als")
    assert getattr(loaded, "_index", None) is None
    np.testing.assert_array_equal(
        loaded.recommend(users, 12).items, model.recommend(users, 12).items
    )


def test_pruned_is_exact_on_real_data(retail: Dataset, tmp_path: Path) -> None:
    model = ALS(factors=32, iterations=5, search="pruned").fit(retail)
    exact = ALS(factors=32, iterations=5).fit(retail)
    assert len(model.trained_) > 2 * PRUNE_FIRST  # 3,999 articles: the pruning is used
    users = retail.buyers()
    for exclude_seen in (False, True):
        a = model.recommend(users, 12, exclude_seen=exclude_seen)
        b = exact.recommend(users, 12, exclude_seen=exclude_seen)
        # the same scores; lists differ at most where scores tie (or nearly: float rounding)
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=1e-6)
        assert (a.items == b.items).all(axis=1).mean() > 0.999
        if exclude_seen:
            seen = retail.user_items(binary=True)[users]
            hits = seen[np.arange(len(users))[:, None], np.maximum(a.items, 0)].toarray()
            assert not hits[a.items >= 0].any()
    # a second fit gives the same lists, and so does a loaded artifact (the scan is not saved)
    lists = model.recommend(users, 12).items
    again = ALS(factors=32, iterations=5, search="pruned").fit(retail)
    np.testing.assert_array_equal(again.recommend(users, 12).items, lists)
    artifacts.save(model, tmp_path / "als")
    loaded = artifacts.load(tmp_path / "als")
    assert "scan" not in getattr(loaded, "_cache", {})
    np.testing.assert_array_equal(loaded.recommend(users, 12).items, lists)


def test_pruned_top_k_equals_exact_top_k() -> None:
    rng = np.random.default_rng(5)
    # skewed norms (as ALS's), integer directions for exact ties, a zero item and a zero query
    n = 5000
    norms = rng.pareto(2.0, (n, 1)).astype(np.float32)
    items = rng.integers(-3, 4, (n, 8)).astype(np.float32) * norms
    items[7] = 0
    queries = rng.integers(-3, 4, (300, 8)).astype(np.float32)
    queries[0] = 0
    exclude = sp.random(300, n, density=0.01, format="lil", random_state=5)
    exclude[1, np.argsort(-norms[:, 0])[:3000]] = 1  # the largest norms bought: a long scan
    exclude[2, :] = 1  # everything bought: an empty list
    exclude[3, : n - 5] = 1  # five left: -1 padding
    exclude = sp.csr_matrix(exclude)
    scan = norm_scan(items)
    full = queries @ items.T
    for k, ex in ((12, None), (12, exclude), (30, exclude), (200, None)):  # 200: exact search
        got, truth = pruned_top_k(queries, scan, k, ex), exact_top_k(queries, items, k, ex)
        np.testing.assert_allclose(got.scores, truth.scores, rtol=1e-5, atol=1e-5)
        valid = got.items >= 0
        assert (valid == (truth.items >= 0)).all()
        picked = np.take_along_axis(full, np.maximum(got.items, 0), axis=1)
        np.testing.assert_allclose(picked[valid], got.scores[valid], rtol=1e-5, atol=1e-5)
        assert all(len(set(r[r >= 0])) == (r >= 0).sum() for r in got.items)  # no duplicates
        if ex is not None:
            assert not ex[np.arange(300)[:, None], np.maximum(got.items, 0)].toarray()[valid].any()
            assert valid[2].sum() == 0 and valid[3].sum() == 5 and valid[1].all()


def test_ann_top_k_filters_and_hands_deep_queries_to_exact_search() -> None:
    rng = np.random.default_rng(0)
    items = rng.standard_normal((50, 4)).astype(np.float32)
    queries = rng.standard_normal((3, 4)).astype(np.float32)
    # query 0 excludes nothing, query 1 excludes 5 items, query 2 excludes 45 of the 50
    exclude = sp.csr_matrix(
        (np.ones(50, np.float32), (np.r_[[1] * 5, [2] * 45], np.r_[0:5, 0:45])), shape=(3, 50)
    )
    recs, redo = ann_top_k(hnsw_index(items), queries, 10, exclude, ef_search=64)
    truth = exact_top_k(queries, items, 10, exclude)
    # 50 items: the graph search is exact; query 1 asked for 16 candidates and kept 10
    np.testing.assert_array_equal(recs.items[:2], truth.items[:2])
    np.testing.assert_allclose(recs.scores[:2], truth.scores[:2], rtol=1e-5)
    assert not set(recs.items[1].tolist()) & set(range(5))
    # query 2 would need 55 candidates out of 50: left to exact search
    assert redo.tolist() == [False, False, True] and (recs.items[2] == -1).all()
    assert (truth.items[2, :5] >= 45).all() and (truth.items[2, 5:] == -1).all()


def test_exact_top_k() -> None:
    items = np.array([[1.0], [2.0], [3.0], [0.5]], np.float32)
    recs = exact_top_k(np.array([[1.0], [-1.0]], np.float32), items, 2, None)
    assert recs.items.tolist() == [[2, 1], [3, 0]] and recs.scores.tolist() == [[3, 2], [-0.5, -1]]
    # 3,000 items: the block pre-selection path; integer factors make many ties
    rng = np.random.default_rng(3)
    items = rng.integers(-3, 4, (3000, 6)).astype(np.float32)
    queries = rng.integers(-3, 4, (40, 6)).astype(np.float32)
    exclude = sp.random(40, 3000, density=0.2, format="csr", random_state=3)
    recs = exact_top_k(queries, items, 12, exclude)
    truth = top_k_dense(queries @ items.T, 12, exclude)
    np.testing.assert_array_equal(recs.scores, truth.scores)
    scores = queries @ items.T
    np.testing.assert_array_equal(np.take_along_axis(scores, recs.items, axis=1), recs.scores)
    assert not exclude[np.arange(40)[:, None], recs.items].toarray().any()


def test_similar(tastes: Dataset) -> None:
    model = ALS(**SMALL).fit(tastes)
    idx = tastes.item_ids.to_index(["X0", "Y2", "Z"])
    recs = model.similar(np.r_[idx, -1], 8)
    assert set(names(tastes, recs.items[0, :2])) == {"X1", "X2"}  # its own group first
    assert set(names(tastes, recs.items[1, :2])) == {"Y0", "Y1"}
    assert (recs.items[0] != idx[0]).all() and (recs.items[0, 5:] == -1).all()  # 5 others
    assert np.all(np.diff(recs.scores[0, :5]) <= 1e-6)
    # never sold (Z) and unknown (-1): popular articles, not the article itself
    assert (recs.items[2:, 0] >= 0).all() and not (recs.items[2] == idx[2]).any()


def test_bad_search_is_a_config_error(tastes: Dataset) -> None:
    with pytest.raises(ConfigError, match="search"):
        ALS(search="annoy").fit(tastes)  # type: ignore[arg-type]
