"""content: TF-IDF text neighbours (exact and ANN), cold-start articles, customer scores."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from fashionrec.data.dataset import Dataset
from fashionrec.data.split import week
from fashionrec.errors import ConfigError
from fashionrec.evaluate import score_recs, truth_of
from fashionrec.models import content
from fashionrec.models.content import Content, article_text, tfidf_matrix
from fashionrec.models.popular import Popular
from tests.conftest import make_dataset

TEXTS = [
    ("Summer dress", "Dress", "striped cotton dress with short sleeves"),  # 0
    ("Summer dress", "Dress", "striped cotton dress with long sleeves"),  # 1: a variant of 0
    ("Wool scarf", "Scarf", "chunky knitted wool scarf with fringes"),  # 2
    ("Leather boots", "Boots", "ankle boots in leather with a block heel"),  # 3
    ("Knitted scarf", "Scarf", "soft knitted scarf in a wool blend"),  # 4: like 2, never sold
    (None, None, None),  # 5: no text at all
]


def text_columns(texts: list[tuple]) -> dict[str, pl.Series]:
    """The articles' (prod_name, product_type_name, detail_desc) columns, as strings even when
    all null."""
    names = ("prod_name", "product_type_name", "detail_desc")
    return {
        name: pl.Series(column, dtype=pl.String)
        for name, column in zip(names, zip(*texts, strict=True), strict=True)
    }


SALES = [(3, 0, 0), (2, 1, 2), (2, 2, 3), (1, 3, 3), (1, 4, 0)]  # article 4 is never sold


def similar(model: Content, item: int, k: int = 5) -> list[int]:
    row = model.similar(np.array([item]), k).items[0]
    return row[row >= 0].tolist()


def test_article_text_joins_the_columns_it_has() -> None:
    articles = pl.DataFrame(
        {"item": [0, 1], "prod_name": ["Tee", None], "detail_desc": ["soft", "warm"], "x": [1, 2]}
    )
    assert article_text(articles) == ["Tee soft", " warm"]
    assert article_text(pl.DataFrame({"item": [0]})) == [""]


@pytest.mark.parametrize("method", ["exact", "ann", "ivf"])
def test_similar_articles_share_words(method: str, monkeypatch) -> None:
    if method == "ivf":  # the inverted-file index of large catalogues
        monkeypatch.setattr(content, "FLAT_MAX", 0)
        method = "ann"
    data = make_dataset(SALES, 6, n_users=6, articles=text_columns(TEXTS))
    model = Content(method=method, dim=4).fit(data)
    assert similar(model, 0)[0] == 1  # the other colourway of the same dress
    assert similar(model, 2)[0] == 4  # scarf -> the other scarf, which nobody bought yet
    assert similar(model, 4)[0] == 2  # and similar() works for the never-sold article
    assert 0 not in similar(model, 0)  # never the article itself
    assert similar(model, 3) == []  # the boots share no word with anything
    assert similar(model, 5) == []  # no text: no neighbours
    assert similar(model, -1) == []  # unknown article


def test_exact_neighbours_are_the_tfidf_cosine(random_dataset: Dataset, monkeypatch) -> None:
    words = np.array(["red", "blue", "cotton", "wool", "dress", "scarf", "slim", "wide", "soft"])
    rng = np.random.default_rng(3)
    texts = [" ".join(rng.choice(words, 4)) for _ in range(random_dataset.n_items)]
    articles = random_dataset.articles.with_columns(pl.Series("detail_desc", texts))
    data = replace(random_dataset, articles=articles)
    monkeypatch.setattr(content.nb, "BLOCK_BUDGET", 30)  # many small blocks
    model = Content(method="exact", neighbours=1000).fit(data)
    tfidf = tfidf_matrix(data.articles).toarray()
    expected = tfidf @ tfidf.T
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(model.neighbours_.toarray(), expected, atol=1e-6)


def test_rescore_is_the_exact_cosine_of_each_pair() -> None:
    rng = np.random.default_rng(0)
    dense = rng.random((50, 30)) * (rng.random((50, 30)) < 0.2)
    dense[[7, 49]] = 0  # articles without text, the last one too
    tfidf = sp.csr_matrix(dense.astype(np.float32))
    cand = rng.integers(-1, 50, size=(50, 20))
    cand[:, -1] = 49
    expected = np.where(cand >= 0, (dense @ dense.T)[np.arange(50)[:, None], cand], 0)
    np.testing.assert_allclose(content._rescore(tfidf, 0, cand), expected, rtol=1e-5)
    np.testing.assert_allclose(content._rescore(tfidf, 10, cand[10:]), expected[10:], rtol=1e-5)


def test_never_sold_article_reaches_customers() -> None:
    data = make_dataset(SALES, 6, n_users=6, articles=text_columns(TEXTS))
    model = Content(repeat=0.0).fit(data)
    # c1 bought the wool scarf: the knitted scarf nobody bought yet comes first
    recs = model.recommend(np.array([1]), 3)
    assert recs.items[0, 0] == 4
    # unknown and cold customers get the popularity ranking (the boots sold twice lately)
    cold = model.recommend(np.array([-1, 5]), 3)
    assert cold.items[0].tolist() == cold.items[1].tolist() and cold.items[0, 0] == 3


def test_popularity_prior_prefers_what_sells() -> None:
    # c0 bought the wool scarf (2); scarf 4 is nearly the same text but never sold, scarf 5 is
    # less alike and sold four times
    texts = [
        *TEXTS[:4],
        ("Chunky wool scarf", "Scarf", "chunky knitted wool scarf with long fringes"),
        ("Knitted scarf", "Scarf", "soft knitted scarf in a wool blend"),
    ]
    rows = [(1, 0, 2), *[(1, u, 5) for u in range(1, 5)]]
    data = make_dataset(rows, 6, n_users=6, articles=text_columns(texts))
    neutral = Content(repeat=0.0, popularity=0.0).fit(data).recommend(np.array([0]), 2)
    assert neutral.items[0].tolist() == [4, 5]  # text similarity alone
    boosted = Content(repeat=0.0, popularity=2.0).fit(data).recommend(np.array([0]), 2)
    assert boosted.items[0].tolist() == [5, 4]  # (1 + sales) ** 2 lifts the selling scarf


def test_no_text_at_all_still_recommends() -> None:
    empty = [(None, None, None)] * 6
    data = make_dataset(SALES, 6, n_users=6, articles=text_columns(empty))
    model = Content().fit(data)
    assert model.neighbours_.nnz == 0
    # no neighbours: everybody gets decayed popularity, 3 (days 2 and 1), 0 (3 and 1), 2 (2)
    assert model.recommend(np.arange(6), 3).items.tolist() == [[3, 0, 2]] * 6


def test_bad_method_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="method"):
        Content(method="dense")


def test_retail_ann_agrees_with_exact_and_beats_popular(retail: Dataset) -> None:
    split = week(retail)
    exact = Content(method="exact", neighbours=10).fit(split.train)
    ann = Content(method="ann", neighbours=10).fit(split.train)
    same = [
        len(set(exact.neighbours_[i].indices) & set(ann.neighbours_[i].indices))
        / max(len(exact.neighbours_[i].indices), 1)
        for i in range(0, retail.n_items, 7)
    ]
    assert np.mean(same) > 0.9  # ANN candidates re-scored exactly: nearly the same top 10
    users, _ = truth_of(split.test)
    ours = score_recs(exact.recommend(users, 12).items, split, 12)
    popular = score_recs(Popular().fit(split.train).recommend(users, 12).items, split, 12)
    assert ours["map@12"] > popular["map@12"] and ours["hr@12"] > popular["hr@12"]
