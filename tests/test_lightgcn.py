"""lightgcn: propagation over the normalised bipartite graph, BPR training, early stopping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from fashionrec import artifacts
from fashionrec.data.dataset import Dataset
from fashionrec.models.lightgcn import LightGCN, LightGCNNet, negatives, normalised
from fashionrec.models.torchutil import spmm, train_epochs
from tests.conftest import make_dataset

QUICK = {"factors": 8, "epochs": 30, "batch_size": 16, "validate": False}


def test_one_layer_is_the_mean_of_ego_and_normalised_neighbours() -> None:
    """Customer 0 bought articles 0 and 1, customer 1 articles 1 and 2: degrees 2, 2 and 1, 2, 1."""
    r = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    du, di = r.sum(1), r.sum(0)
    want = r / np.sqrt(du[:, None] * di[None, :])
    a, at = normalised(sp.csr_matrix(r))
    np.testing.assert_allclose(a.to_dense().numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(at.to_dense().numpy(), want.T, rtol=1e-6)
    net = LightGCNNet(2, 3, 4)
    eu, ei = net.users.weight.detach().numpy(), net.items.weight.detach().numpy()
    with torch.no_grad():
        u, i = net((a, at), layers=1)
    np.testing.assert_allclose(u.numpy(), (eu + want @ ei) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(i.numpy(), (ei + want.T @ eu) / 2, rtol=1e-5, atol=1e-6)


def test_sparse_matmul_gradient_equals_the_dense_one() -> None:
    a = sp.random(6, 5, density=0.4, random_state=1, format="csr", dtype=np.float32)
    a_t, at_t = normalised(a)  # any sparse pair (the matrix and its transpose) will do
    dense = torch.from_numpy(a_t.to_dense().numpy())
    x = torch.randn(5, 3, requires_grad=True)
    (spmm(a_t, at_t, x) ** 2).sum().backward()
    got = x.grad.clone()
    x.grad = None
    ((dense @ x) ** 2).sum().backward()
    torch.testing.assert_close(got, x.grad)


def test_negatives_are_never_bought_when_possible() -> None:
    users = np.repeat(np.arange(3), 200)
    bought = {0: [0, 1, 2], 1: [3], 2: []}
    keys = np.sort([u * 5 + i for u, items in bought.items() for i in items])
    neg = negatives(users, keys, 5, np.random.default_rng(0), tries=50)
    for u, items in bought.items():
        drawn = set(neg[users == u].tolist())
        assert not drawn & set(items) and drawn == set(range(5)) - set(items)


def test_early_stopping_restores_the_best_epoch() -> None:
    module = nn.Linear(1, 1, bias=False)
    scores = iter([0.1, 0.3, 0.2, 0.25, 0.9])

    def epoch(i: int) -> float:
        module.weight.data.fill_(i + 1.0)  # the weights remember their epoch
        return 0.0

    rows = train_epochs(module, epoch, lambda: next(scores), epochs=5, patience=2, name="t")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]  # two epochs without a new best
    assert module.weight.item() == 2.0


@pytest.fixture(scope="module")
def communities() -> Dataset:
    """Customers 0-9 buy articles 0-2, customers 10-19 articles 3-5 (two each); customer 20
    bought article 0 only, 21 article 3 only; 22 never bought; article 6 was never sold."""
    rows = [(1, u, i) for u in range(10) for i in (u % 3, (u + 1) % 3)]
    rows += [(1, u, i) for u in range(10, 20) for i in (3 + u % 3, 3 + (u + 1) % 3)]
    rows += [(1, 20, 0), (1, 21, 3)]
    return make_dataset(rows, 7, n_users=23)


def test_the_graph_recommends_the_community(communities: Dataset) -> None:
    model = LightGCN(**QUICK).fit(communities)
    top = model.recommend(np.array([20, 21]), 2, exclude_seen=True).items
    assert set(top[0].tolist()) == {1, 2} and set(top[1].tolist()) == {4, 5}


def test_only_seen_customers_and_articles_have_embeddings(communities: Dataset) -> None:
    model = LightGCN(**QUICK).fit(communities)
    assert model.items_.tolist() == [0, 1, 2, 3, 4, 5]
    assert model.weights_["users"].shape == (22, 8) and model.weights_["items"].shape == (6, 8)
    assert model.user_row_[22] == -1
    recs = model.recommend(np.array([22, -1]), 7)
    np.testing.assert_array_equal(recs.items[0], recs.items[1])  # both get popularity


def test_fold_in_propagates_a_customer_from_the_fitted_articles(
    communities: Dataset, tmp_path: Path
) -> None:
    model = LightGCN(**(QUICK | {"layers": 1})).fit(communities)
    ego_items = model.weights_["item_layers"][0]  # layer 0 of articles 0-5
    degree = np.array([8, 7, 6, 7, 7, 7])  # buyers of 0-5, customers 20 and 21 included
    # an unknown customer who bought 0 and 1: zero ego, layer 1 = sum e_i / sqrt(2 d_i)
    bought = sp.csr_matrix(([1.0, 1.0], ([0, 0], [0, 1])), shape=(1, 7))
    want = (ego_items[0] / np.sqrt(2 * 8) + ego_items[1] / np.sqrt(2 * 7)) / 2
    np.testing.assert_allclose(model.fold_in(bought, np.array([-1]))[0], want, rtol=1e-5, atol=1e-7)
    assert np.diff(model.seen_[:, :6].tocsc().indptr).tolist() == degree.tolist()
    # a fitted customer's own purchases give back the fitted embedding
    rows = model.user_row_[:22]
    again = model.fold_in(model.seen_[:22], rows)
    np.testing.assert_allclose(again, model.weights_["users"][rows], rtol=1e-4, atol=1e-5)


def test_purchases_after_the_fit_join_the_graph(communities: Dataset, tmp_path: Path) -> None:
    model = LightGCN(**QUICK).fit(communities)
    users = np.array([22, 21, -1])  # never bought; bought 3; unknown
    posted = [np.array([0]), np.array([0, 1]), np.array([4])]
    live = model.recommend_with(users, posted, 2, exclude_seen=True).items
    assert set(live[0].tolist()) == {1, 2}  # the community of article 0
    # customer 21 now has two of 0-2 besides 3: their score of article 2 (of 0-2) rises
    row = model.user_row_[21]
    bought = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 0, 0], [0, 1, 3])), shape=(1, 7))
    before, after = model.weights_["users"][row], model.fold_in(bought, np.array([row]))[0]
    item2 = model.weights_["items"][2]
    assert after @ item2 > before @ item2 + 0.1
    assert set(live[2].tolist()) == {3, 5}
    fitted = model.recommend(users, 2, exclude_seen=True).items
    np.testing.assert_array_equal(fitted[0], fitted[2])  # before: both popularity
    artifacts.save(model, tmp_path / "lightgcn")
    loaded = artifacts.load(tmp_path / "lightgcn")
    np.testing.assert_array_equal(
        loaded.recommend_with(users, posted, 2, exclude_seen=True).items, live
    )
    del loaded.weights_["item_layers"]  # an artifact from before: the fitted lists
    old = loaded.recommend_with(users, posted, 2).items
    np.testing.assert_array_equal(old[0], model.recommend(users[:1], 2).items[0])


def test_validation_holds_out_each_last_purchase(communities: Dataset) -> None:
    model = LightGCN(**(QUICK | {"validate": True, "epochs": 3}))
    seen = communities.user_items(binary=True)
    model.fit(communities)  # sets items_ and user_row_
    users = np.flatnonzero(np.diff(seen.indptr))
    train, valid, targets = model._holdout(communities, seen[users][:, model.items_], users)
    assert len(valid) == 2  # a tenth of 22 customers, among the 20 with two articles
    assert train.nnz == 42 - 2 and all(train[valid, targets].A1 == 0)
    assert len(model.train_log_) == 3 and "valid" in model.train_log_[0]
