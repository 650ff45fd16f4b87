"""Sequence models (issue 5): data preparation, known next-item answers, serving from a history,
validation with early stopping, the seqrec reader and the ablation tables. Tiny data, small dims."""

from __future__ import annotations

import gzip
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pytest

from fashionrec import artifacts, experiments
from fashionrec.data.dataset import Dataset
from fashionrec.data.ingest import ingest
from fashionrec.data.seqrec import (
    ORDERS,
    drop_repeats,
    owners,
    read_seqrec,
    reorder,
    repeats,
    without_repeats,
)
from fashionrec.errors import ConfigError, DataError
from fashionrec.models import registry, torchutil
from fashionrec.models.base import take_rows
from fashionrec.models.sequence import append_rows, keep_last, tails, valid_hit_rate
from fashionrec.models.torchutil import torch_session
from tests.conftest import shared, write_tables

SEQUENCE = ["ns-rnn", "ns-lstm", "ns-gru", "ns-attention", "ns-transformer", "sasrec"]
ARCH = {  # tiny architecture parameters per model
    "ns-rnn": {"hidden": 8},
    "ns-lstm": {"hidden": 8},
    "ns-gru": {"hidden": 8},
    "ns-attention": {"hidden": 8},
    "ns-transformer": {"heads": 2, "layers": 1, "ff": 16, "mlp": [8]},
    "sasrec": {"blocks": 1},
}
TRAIN = {"emb_dim": 8, "user_dim": 4, "batch_size": 16, "lr": 0.02, "dropout": 0.0}


def tiny(name: str, **params: object) -> object:
    return registry.create(name, **{**TRAIN, **ARCH[name], **params})


# ---- data preparation ---------------------------------------------------------------------


def test_drop_repeats_tails_and_row_helpers() -> None:
    indptr = np.array([0, 4, 6, 6])
    items = np.array([1, 1, 2, 1, 3, 3])
    ip, it = drop_repeats(indptr, items)
    assert ip.tolist() == [0, 3, 4, 4] and it.tolist() == [1, 2, 1, 3]  # 1,2,1 stays: not in a row
    _, _, days = drop_repeats(indptr, items, np.arange(6) * 10)  # aligned arrays follow
    assert days.tolist() == [0, 20, 30, 40]
    # a row's first item never repeats the previous row's last one
    assert not repeats(np.array([0, 1, 2]), np.array([5, 5])).any()
    # last 2 items as tokens (item + 1), right-padded; dropping each row's last item first
    assert tails(ip, it, 2).tolist() == [[3, 2], [4, 0], [0, 0]]
    assert tails(ip, it, 2, drop=np.array([1, 0, 0]), rows=np.array([0, 1])).tolist() == [
        [2, 3],
        [4, 0],
    ]
    last_ip, last_it = keep_last(ip, it, 2)
    assert last_ip.tolist() == [0, 2, 3, 3] and last_it.tolist() == [2, 1, 3]
    sub_ip, sub_it = take_rows(ip, it, np.array([1, -1, 0]))
    assert sub_ip.tolist() == [0, 1, 1, 4] and sub_it.tolist() == [3, 1, 2, 1]
    both = append_rows((sub_ip, sub_it), (np.array([0, 1, 2, 2]), np.array([7, 8])))
    assert both[0].tolist() == [0, 2, 3, 6] and both[1].tolist() == [3, 7, 8, 1, 2, 1]
    assert both[2].tolist() == [False, True, True, False, False, False]  # the items from b


def test_reorder_ablation_orders() -> None:
    indptr = np.array([0, 6, 10])
    items = np.arange(10)
    days = np.array([1, 1, 1, 2, 2, 2, 5, 6, 7, 8])
    assert reorder(indptr, items, days, "true", 0).tolist() == list(range(10))
    shuffled = reorder(indptr, items, days, "day-shuffle", 0)
    # same days stay in place as blocks: user 0's day 1 = items {0,1,2}, day 2 = {3,4,5}
    assert set(shuffled[:3]) == {0, 1, 2} and set(shuffled[3:6]) == {3, 4, 5}
    assert shuffled[6:].tolist() == [6, 7, 8, 9]  # one purchase per day: nothing to shuffle
    assert shuffled.tolist() != list(range(10))
    rand = reorder(indptr, items, days, "random", 0)
    assert sorted(rand[:6]) == list(range(6)) and sorted(rand[6:]) == [6, 7, 8, 9]
    assert rand[6:].tolist() != [6, 7, 8, 9]


def test_without_repeats_on_a_dataset(known_dataset: Dataset, random_dataset: Dataset) -> None:
    # u0 bought A4 three times in a row: one step; everything else is unchanged
    out = without_repeats(known_dataset)
    assert out.transactions.height == known_dataset.transactions.height - 2
    u0 = known_dataset.user_ids.to_index(["u0"])[0]
    items = out.transactions.filter(out.transactions["user"] == u0)["item"].to_list()
    assert known_dataset.item_ids.to_ids(np.array(items)).tolist() == ["A0", "A4"]
    # the Dataset rule is the sequence rule
    clean = without_repeats(random_dataset).sequences()
    want = drop_repeats(*random_dataset.sequences())
    for got, expected in zip(clean, want, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_every_order_trains_on_the_same_purchases(random_dataset: Dataset) -> None:
    """Repeats are dropped in true order before the reordering, so a shuffle that happens to put
    two units of an article next to each other does not lose a purchase."""
    indptr, items, _ = random_dataset.sequences()
    assert repeats(indptr, items).any()  # there are repeats to drop
    true_ip, true_items = tiny("ns-gru").sequences(random_dataset)
    bought = true_items[np.lexsort((true_items, owners(true_ip)))]  # each customer's, sorted
    n_targets = []
    for order in ORDERS:
        model = tiny("ns-gru", order=order)
        ip, it = model.sequences(random_dataset)
        np.testing.assert_array_equal(ip, true_ip)
        np.testing.assert_array_equal(it[np.lexsort((it, owners(ip)))], bought)
        n_targets.append(int((model._train_data(ip, it).seqs[:, 1:] > 0).sum()))
    assert len(set(n_targets)) == 1  # training target positions
    shuffled = tiny("ns-gru", order="random").sequences(random_dataset)[1]
    assert shuffled.tolist() != true_items.tolist()


# ---- known answers -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ab_store(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """40 customers buy A then B, 10 buy C then D; `a` bought only A, `c` only C (latest)."""
    day = lambda n: str(date(2024, 1, 1) + timedelta(days=n))  # noqa: E731
    rows = [(day(i % 5), f"x{i}", "A") for i in range(40)]
    rows += [(day(5 + i % 5), f"x{i}", "B") for i in range(40)]
    rows += [(day(i % 5), f"y{i}", "C") for i in range(10)]
    rows += [(day(5 + i % 5), f"y{i}", "D") for i in range(10)]
    rows += [(day(12), "a", "A"), (day(12), "c", "C")]
    root = tmp_path_factory.mktemp("ab")
    write_tables(root / "src", sorted(rows), ["A", "B", "C", "D", "E"])
    ingest(root / "src", root / "ds")
    return Dataset.load(root / "ds")


def top_ids(data: Dataset, items: np.ndarray) -> list[str | None]:
    return data.item_ids.to_ids(items).tolist()


@pytest.mark.parametrize("name", SEQUENCE)
def test_after_a_comes_b(name: str, ab_store: Dataset) -> None:
    # no user vectors: with them, tiny models memorise each y-customer's D instead of "C -> D"
    params = {"epochs": 20, "batch_size": 8, "emb_dim": 16, "user_dim": 0, "validate": False}
    model = tiny(name, **params).fit(ab_store)
    users = ab_store.user_ids.to_index(["a", "c"])
    # c bought C: the next article is D although A and B are four times as popular
    assert top_ids(ab_store, model.recommend(users, 2).items[:, 0]) == ["B", "D"]
    a, b, c, d = ab_store.item_ids.to_index(["A", "B", "C", "D"])
    # served from a history alone (a customer the model has never seen)
    recs = model.recommend_history([np.array([a]), np.array([c]), np.array([], dtype=int)], 3)
    assert recs.items[0, 0] == b and recs.items[1, 0] == d
    np.testing.assert_array_equal(recs.items[2], model.recommend(np.array([-1]), 3).items[0])
    # unknown customer with purchases after the fit, the serving layer's call
    assert model.recommend_with(np.array([-1]), [np.array([c])], 1).items[0, 0] == d
    # the history's own articles are excluded on request
    excl = model.recommend_history([np.array([c, d])], 5, exclude_seen=True).items[0]
    assert c not in excl and d not in excl and (excl[:3] >= 0).all()


@pytest.mark.parametrize("name", ["ns-gru", "sasrec"])
def test_sequence_beats_popularity_on_the_known_store(name: str, known_dataset: Dataset) -> None:
    # u3 bought A0, A1, A5; everybody else after A0 went to A1 (the most bought article). u5's
    # history (A0, A1) is u3's prefix, so a pure sequence model (no user vector) says A5.
    model = tiny(name, user_dim=0, emb_dim=16, batch_size=4, epochs=30, validate=False)
    user = known_dataset.user_ids.to_index(["u5"])
    top = model.fit(known_dataset).recommend(user, 1).items[0, 0]
    assert top_ids(known_dataset, np.array([top])) == ["A5"]


def test_sampled_softmax_learns_the_sequence(ab_store: Dataset) -> None:
    params = {"epochs": 20, "batch_size": 8, "user_dim": 0, "validate": False}
    model = tiny("ns-gru", loss="sampled", negatives=2, **params).fit(ab_store)
    users = ab_store.user_ids.to_index(["a", "c"])
    assert top_ids(ab_store, model.recommend(users, 1).items[:, 0]) == ["B", "D"]


def test_known_customers_get_their_user_vector(random_dataset: Dataset) -> None:
    model = tiny("ns-gru", epochs=2, validate=False).fit(random_dataset)
    users = random_dataset.buyers()[:5]
    ip, items = model.hist_indptr_, model.hist_items_
    histories = [items[ip[u] : ip[u + 1]] for u in users]
    own = model.recommend(users, 5)
    same = model.recommend_history(histories, 5, users=users)
    anonymous = model.recommend_history(histories, 5)
    np.testing.assert_array_equal(own.scores, same.scores)
    assert not np.allclose(own.scores, anonymous.scores)


def test_feature_embeddings_share_what_variants_have_in_common(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Product P comes in colours P1 (bought after A by 30 customers) and P2 (sold only once, at
    the start). With product embeddings, a customer who bought A gets P2 before the unrelated
    articles; without them, P2's vector is untrained noise."""
    day = lambda n: str(date(2024, 1, 1) + timedelta(days=n))  # noqa: E731
    rows = [(day(0), f"x{i}", "A") for i in range(30)] + [
        (day(1), f"x{i}", "P1") for i in range(30)
    ]
    rows += [(day(0), f"z{i}", f"Q{i}") for i in range(8)] + [
        (day(2), "w", "P2"),
        (day(3), "a", "A"),
    ]
    root = tmp_path_factory.mktemp("variants")
    write_tables(root / "src", sorted(rows), ["A", "P1", "P2", *[f"Q{i}" for i in range(8)]])
    (root / "src" / "articles.csv").write_text(
        "article_id,product_code\nA,a\nP1,p\nP2,p\n" + "".join(f"Q{i},q{i}\n" for i in range(8))
    )
    ingest(root / "src", root / "ds")
    data = Dataset.load(root / "ds")
    params = {"epochs": 20, "batch_size": 8, "user_dim": 0, "validate": False, "emb_dim": 16}
    user = data.user_ids.to_index(["a"])
    ranks = {}
    for features in ((), ("product_code",)):
        model = tiny("ns-gru", features=features, **params).fit(data)
        ranking = top_ids(data, model.recommend(user, 11, exclude_seen=True).items[0])
        ranks[features] = ranking.index("P2")
    assert ranks[("product_code",)] == 1  # right after P1
    assert ranks[()] > 1  # seeded: P2's untrained vector ranks it among the unrelated Qs
    artifacts.save(model, root / "model")
    again = artifacts.load(root / "model").recommend(user, 11)
    np.testing.assert_array_equal(again.scores, model.recommend(user, 11).scores)


# ---- training ------------------------------------------------------------------------------


def test_validation_keeps_the_best_epoch(random_dataset: Dataset) -> None:
    model = tiny("ns-gru", epochs=12, lr=0.05, patience=2, valid_k=5).fit(random_dataset)
    hrs = [row["valid_hr@5"] for row in model.train_log_]
    best = hrs.index(max(hrs))
    assert len(hrs) == best + 1 + 2 < 12  # stops 2 epochs after the best, before the last
    indptr, items, _ = random_dataset.sequences()
    prepared = model._train_data(*drop_repeats(indptr, items))
    # the held-out last purchase is never a training target
    last = items[indptr[1:] - 1][np.diff(indptr) >= 2]
    assert len(prepared.valid_targets) == len(last)
    # the restored weights are those of the best epoch
    with torch_session(1, 0):
        assert valid_hit_rate(model.net(), prepared, 5) == pytest.approx(hrs[best])


def test_only_the_validation_sample_is_held_out(random_dataset: Dataset) -> None:
    indptr, items = drop_repeats(*random_dataset.sequences()[:2])
    prepared = tiny("ns-gru", valid_users=5)._train_data(indptr, items)
    held = set((prepared.valid_users - 1).tolist())
    assert len(held) == 5
    last = prepared.seqs[np.arange(len(prepared.seqs)), (prepared.seqs > 0).sum(axis=1) - 1] - 1
    for user, trained_last in zip(prepared.users - 1, last, strict=True):
        # a held-out customer's last purchase is never a training target; everybody else's is
        assert (trained_last == items[indptr[user + 1] - 1]) == (user not in held)


@pytest.mark.parametrize("loss", ["full", "sampled"])
def test_micro_batches_give_the_same_model(
    loss: str, random_dataset: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The softmax in small logit blocks (gradient accumulation) = one big block."""
    params = {"epochs": 2, "validate": False, "loss": loss, "negatives": 5}
    big = tiny("ns-gru", **params).fit(random_dataset).weights_
    monkeypatch.setattr(torchutil, "LOGITS_BUDGET", 40)  # one position per block
    small = tiny("ns-gru", **params).fit(random_dataset).weights_
    for key in big:
        np.testing.assert_allclose(big[key], small[key], atol=1e-5)


def test_bad_parameters_are_config_errors(random_dataset: Dataset) -> None:
    with pytest.raises(ConfigError, match="order"):
        tiny("ns-gru", order="backwards").fit(random_dataset)
    with pytest.raises(ConfigError, match="loss"):
        tiny("ns-gru", loss="bpr").fit(random_dataset)
    with pytest.raises(ConfigError, match="heads"):
        tiny("sasrec", emb_dim=10, heads=4).fit(random_dataset)
    with pytest.raises(ConfigError, match="threads"):
        tiny("ns-gru", threads=0).fit(random_dataset)


def test_features_given_as_a_string_are_column_names() -> None:
    # `--param features=product_code` arrives as a string, not as a list
    assert tiny("ns-gru", features="product_code").feature_names() == ("product_code",)
    assert tiny("ns-gru", features="product_code, colour").feature_names() == (
        "product_code",
        "colour",
    )
    assert tiny("ns-gru", features=["product_code"]).feature_names() == ("product_code",)
    assert tiny("ns-gru").feature_names() == ()


# ---- seqrec reader -------------------------------------------------------------------------


def test_read_seqrec(tmp_path: Path) -> None:
    path = tmp_path / "tiny.txt.gz"
    path.write_bytes(gzip.compress(b"7 30 10 20\n8 10 30\n\n"))
    data = read_seqrec(path)
    assert (data.n_users, data.n_items) == (2, 3)
    assert data.articles["article_id"].to_list() == ["10", "20", "30"]
    indptr, items, _ = data.sequences()
    assert indptr.tolist() == [0, 3, 5]
    assert data.item_ids.to_ids(items).tolist() == ["30", "10", "20", "10", "30"]  # file order
    # tabs and repeated spaces separate tokens too
    (tmp_path / "tabs.txt").write_text("7\t30  10 20 \r\n  \n8 10\t\t30\n")
    tabs = read_seqrec(tmp_path / "tabs.txt")
    np.testing.assert_array_equal(tabs.sequences()[0], indptr)
    np.testing.assert_array_equal(tabs.sequences()[1], items)
    (tmp_path / "bad.txt").write_text("1 2 3\n2 x 4\n")
    with pytest.raises(DataError, match="row 2"):
        read_seqrec(tmp_path / "bad.txt")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "dup.txt",
            b"u1 1 2\nu2 3\nu1 5 6\n",
            "row 3: user 'u1' has more than one line .first at line 1",
        ),
        ("latin.txt", b"u1 1 2\nu2 \xff3\n", "row 2: not UTF-8 text"),
        ("fake.txt.gz", b"not gzip", "not a gzip file"),
        ("empty.txt", b"\n  \n", "the file has no lines"),
    ],
)
def test_read_seqrec_mistakes(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_seqrec(tmp_path / name)


def test_read_beauty() -> None:
    data = read_seqrec(shared("seqrec") / "Beauty.txt.gz")
    assert (data.n_users, data.n_items, data.transactions.height) == (22_363, 12_101, 198_502)


# ---- experiments ---------------------------------------------------------------------------


def test_holdout_gives_validation_back_to_fit(random_dataset: Dataset) -> None:
    fit, test = experiments.holdout(random_dataset)
    clean = without_repeats(random_dataset)
    assert fit.transactions.height + test.transactions.height == clean.transactions.height
    # every test purchase is its customer's last one
    indptr, items, _ = clean.sequences()
    users = test.transactions["user"].to_numpy()
    np.testing.assert_array_equal(
        test.transactions["item"].to_numpy(), items[indptr[users + 1] - 1]
    )


def test_ablation_tables(random_dataset: Dataset) -> None:
    params = {**TRAIN, **ARCH["ns-gru"], "epochs": 1}
    tables = experiments.ablation(random_dataset, ("order", "history"), params=params)
    assert [r["order"] for r in tables["order"]] == ["true", "day-shuffle", "random"]
    assert [r["max_history"] for r in tables["history"]] == [5, 10, 20, 50]
    for row in tables["order"] + tables["history"]:
        assert row["epochs"] == 1 and row["model"] == "ns-gru" and "hr@14" in row
    emb = experiments.ablation_embedding(random_dataset, params=params, sizes=(1, 4))
    assert [r["embedding"] for r in emb] == [1, 4]
    with pytest.raises(ConfigError):
        experiments.ablation(random_dataset, ("colour",))
