"""Tests for fashionrec.metrics: hand-computed answers and brute-force references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp

from fashionrec import metrics as m

# --------------------------------------------------------------------------------------------
# The shared 3-user, 5-item case (k = 3), computed by hand:
#   user 0: recs [0, 1, 2]   truth {1, 2}  -> hits [0, 1, 1]
#   user 1: recs [3, 1, -1]  truth {0}     -> hits [0, 0, 0]   (one padded slot)
#   user 2: recs [2, 0, 1]   truth {2, 4}  -> hits [1, 0, 0]
# --------------------------------------------------------------------------------------------
K = 3
N_ITEMS = 5
RECS = np.array([[0, 1, 2], [3, 1, -1], [2, 0, 1]], dtype=np.int32)
TRUTH = sp.csr_matrix(
    np.array(
        [
            [0, 1, 1, 0, 0],
            [1, 0, 0, 0, 0],
            [0, 0, 1, 0, 1],
        ]
    )
)
N_REL = np.diff(TRUTH.indptr)  # [2, 1, 2]
HITS = np.array([[False, True, True], [False, False, False], [True, False, False]])
LOG3 = 1.0 / math.log2(3)  # discount at rank 2
IDEAL_2 = 1.0 + LOG3  # ideal DCG with 2 relevant items


def apk(actual: list[int], predicted: list[int], k: int = 10) -> float:
    """Kaggle H&M starter apk, verbatim logic (reference for average_precision)."""
    if len(predicted) > k:
        predicted = predicted[:k]
    score = 0.0
    num_hits = 0.0
    for i, p in enumerate(predicted):
        if p in actual and p not in predicted[:i]:
            num_hits += 1.0
            score += num_hits / (i + 1.0)
    if not actual:
        return 0.0
    return score / min(len(actual), k)


def random_case(
    seed: int, n_users: int, n_items: int, k: int, max_truth: int = 6
) -> tuple[np.ndarray, sp.csr_matrix]:
    """Random recs with padding and random truth (some users with nothing relevant)."""
    rng = np.random.default_rng(seed)
    recs = np.full((n_users, k), -1, dtype=np.int32)
    rows, cols = [], []
    for u in range(n_users):
        length = rng.integers(0, k + 1)
        recs[u, :length] = rng.choice(n_items, size=length, replace=False)
        bought = rng.choice(n_items, size=rng.integers(0, max_truth + 1), replace=False)
        rows += [u] * bought.size
        cols += bought.tolist()
    truth = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, n_items))
    return recs, truth


# --------------------------------------------------------------------------------------------
# hit_matrix
# --------------------------------------------------------------------------------------------


def test_hit_matrix_known_case() -> None:
    np.testing.assert_array_equal(m.hit_matrix(RECS, TRUTH), HITS)


def test_hit_matrix_padding_never_aliases_neighbouring_rows() -> None:
    # With keys row * 5 + item, user 1's padding (1*5 - 1 = 4) would alias (user 0, item 4);
    # padding mapped to item 5 with the same stride (1*5 + 5 = 10) would alias (user 2, item 0).
    recs = np.array([[4, -1], [-1, -1], [0, -1]])
    truth = sp.csr_matrix(np.array([[0, 0, 0, 0, 1], [1, 0, 0, 0, 1], [1, 0, 0, 0, 0]]))
    expected = [[True, False], [False, False], [True, False]]
    np.testing.assert_array_equal(m.hit_matrix(recs, truth), expected)


def test_hit_matrix_non_canonical_truth_is_not_mutated() -> None:
    # Row 0 stores items 3, 1, 0 unsorted, item 1 as an explicit zero, and item 3 twice.
    data = np.array([1.0, 0.0, 1.0, 1.0, 1.0])
    indices = np.array([3, 1, 0, 3, 2])
    indptr = np.array([0, 4, 5])
    truth = sp.csr_matrix((data, indices, indptr), shape=(2, 4))
    before = (truth.data.copy(), truth.indices.copy())
    recs = np.array([[1, 0, 3], [2, 1, -1]])
    # relevant: user 0 {0, 3} (1 is an explicit zero), user 1 {2}
    np.testing.assert_array_equal(
        m.hit_matrix(recs, truth), [[False, True, True], [True, False, False]]
    )
    np.testing.assert_array_equal(truth.data, before[0])
    np.testing.assert_array_equal(truth.indices, before[1])


def test_hit_matrix_matches_python_membership() -> None:
    recs, truth = random_case(seed=1, n_users=300, n_items=40, k=8)
    lil = truth.tolil()
    expected = np.array(
        [[item >= 0 and item in set(lil.rows[u]) for item in row] for u, row in enumerate(recs)]
    )
    np.testing.assert_array_equal(m.hit_matrix(recs, truth), expected)


def test_hit_matrix_validates_input() -> None:
    with pytest.raises(ValueError, match="only 5 items"):
        m.hit_matrix(np.array([[5, 0], [0, 1], [1, 2]]), TRUTH)
    with pytest.raises(ValueError, match="padding"):
        m.hit_matrix(np.array([[-2, 0], [0, 1], [1, 2]]), TRUTH)
    with pytest.raises(ValueError, match="rows"):
        m.hit_matrix(RECS[:2], TRUTH)
    with pytest.raises(TypeError):
        m.hit_matrix(RECS.astype(float), TRUTH)


# --------------------------------------------------------------------------------------------
# Per-user metrics on the shared case
# --------------------------------------------------------------------------------------------


def test_average_precision_known_case() -> None:
    # user 0: hits at ranks 2, 3 -> (1/2 + 2/3) / min(2, 3) = 7/12
    # user 1: no hit -> 0;  user 2: hit at rank 1 -> (1/1) / min(2, 3) = 1/2
    np.testing.assert_allclose(m.average_precision(HITS, N_REL, K), [7 / 12, 0.0, 0.5])


def test_average_precision_kaggle_example() -> None:
    # predictions [1, 2, 3], truth {1, 3}: hits at ranks 1 and 3 -> (1/1 + 2/3) / 2
    recs = np.array([[1, 2, 3]])
    truth = sp.csr_matrix(np.array([[0, 1, 0, 1]]))
    hits = m.hit_matrix(recs, truth)
    ap = m.average_precision(hits, np.diff(truth.indptr), k=3)
    assert ap[0] == pytest.approx((1 / 1 + 2 / 3) / 2, abs=1e-15)
    assert ap[0] == pytest.approx(apk([1, 3], [1, 2, 3], k=3), abs=1e-15)


def test_average_precision_denominator_is_capped_at_k() -> None:
    # 5 relevant items but k = 2: both slots hit -> (1/1 + 2/2) / min(5, 2) = 1.0
    assert m.average_precision(np.array([[True, True]]), np.array([5]), k=2)[0] == 1.0
    # the only hit is at rank 3, beyond k = 2 -> 0
    hits = np.array([[False, False, True]])
    assert m.average_precision(hits, np.array([1]), k=2)[0] == 0.0


def test_average_precision_matches_kaggle_apk_on_random_data() -> None:
    k = 12
    recs, truth = random_case(seed=2, n_users=400, n_items=30, k=k)
    hits = m.hit_matrix(recs, truth)
    ours = m.average_precision(hits, np.diff(truth.indptr), k)
    lil = truth.tolil()
    ref = [apk(list(lil.rows[u]), [i for i in row if i >= 0], k) for u, row in enumerate(recs)]
    assert (ours > 0).sum() > 50  # the random case really has hits
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_hit_rate_and_recall_1_known_case() -> None:
    # users 0 and 2 have at least one hit, user 1 none
    np.testing.assert_array_equal(m.hit_rate(HITS, N_REL, K), [1.0, 0.0, 1.0])
    np.testing.assert_array_equal(m.recall_1(HITS, N_REL, K), [1.0, 0.0, 1.0])
    # with k = 1 only user 2 (hit at rank 1) counts
    np.testing.assert_array_equal(m.hit_rate(HITS, N_REL, 1), [0.0, 0.0, 1.0])


def test_precision_known_case() -> None:
    # 2/3, 0/3, 1/3 -- the padded slot of user 1 still counts in the denominator
    np.testing.assert_allclose(m.precision(HITS, N_REL, K), [2 / 3, 0.0, 1 / 3])


def test_precision_with_fewer_columns_than_k() -> None:
    # only 2 recommendation columns, k = 4: 1 hit / 4
    assert m.precision(np.array([[True, False]]), np.array([3]), k=4)[0] == 0.25


def test_recall_known_case() -> None:
    # 2/2, 0/1, 1/2
    np.testing.assert_allclose(m.recall(HITS, N_REL, K), [1.0, 0.0, 0.5])
    # nothing relevant -> 0, not NaN
    assert m.recall(np.array([[False, False]]), np.array([0]), k=2)[0] == 0.0


def test_ndcg_known_case() -> None:
    # user 0: DCG = 1/log2(3) + 1/log2(4), ideal with 2 relevant = 1 + 1/log2(3)
    # user 2: DCG = 1/log2(2) = 1, same ideal
    expected = [(LOG3 + 0.5) / IDEAL_2, 0.0, 1.0 / IDEAL_2]
    np.testing.assert_allclose(m.ndcg(HITS, N_REL, K), expected, rtol=1e-14)


def test_ndcg_ideal_capped_at_k_and_brute_force() -> None:
    # 10 relevant, k = 2, hits at both ranks: DCG = ideal = 1 + 1/log2(3) -> 1.0
    assert m.ndcg(np.array([[True, True]]), np.array([10]), k=2)[0] == pytest.approx(1.0)
    k = 6
    recs, truth = random_case(seed=3, n_users=200, n_items=15, k=k)
    hits = m.hit_matrix(recs, truth)
    n_rel = np.diff(truth.indptr)
    ref = []
    for row, n in zip(hits, n_rel, strict=True):
        dcg = sum(1 / math.log2(j + 2) for j in range(k) if row[j])
        idcg = sum(1 / math.log2(j + 2) for j in range(min(n, k)))
        ref.append(dcg / idcg if n else 0.0)
    np.testing.assert_allclose(m.ndcg(hits, n_rel, k), ref, rtol=0, atol=1e-12)


def test_recall_30_known_case_and_threshold() -> None:
    # 2/3 >= 0.3, 0/3 < 0.3, 1/3 >= 0.3
    np.testing.assert_array_equal(m.recall_30(HITS, N_REL, K), [1.0, 0.0, 1.0])
    # exactly 3 hits out of k = 10 is 30% and must pass
    hits = np.zeros((2, 10), dtype=bool)
    hits[0, [0, 4, 9]] = True
    hits[1, [0, 4]] = True
    np.testing.assert_array_equal(m.recall_30(hits, np.array([5, 5]), 10), [1.0, 0.0])
    np.testing.assert_array_equal(m.recall_30(hits, np.array([5, 5]), 10, share=0.2), [1.0, 1.0])
    np.testing.assert_array_equal(m.recall_30(hits, np.array([5, 5]), 10, share=0.4), [0.0, 0.0])
    # 7 hits of k = 25 is exactly 28%, but 0.28 * 25 == 7.000000000000001 in floating point
    hits = np.zeros((1, 25), dtype=bool)
    hits[0, :7] = True
    np.testing.assert_array_equal(m.recall_30(hits, np.array([9]), 25, share=0.28), [1.0])


def test_per_user_metrics_validate_input() -> None:
    with pytest.raises(ValueError, match="n_relevant"):
        m.precision(HITS, N_REL[:2], K)
    with pytest.raises(ValueError, match="k must be"):
        m.recall(HITS, N_REL, 0)
    with pytest.raises(ValueError, match="2-D"):
        m.ndcg(HITS[0], N_REL, K)


# --------------------------------------------------------------------------------------------
# List-level metrics
# --------------------------------------------------------------------------------------------


def test_coverage_known_case() -> None:
    # items {0, 1, 2, 3} are recommended, item 4 never -> 4/5
    assert m.coverage(RECS, N_ITEMS) == pytest.approx(0.8)
    assert m.coverage(np.full((3, 2), -1), N_ITEMS) == 0.0


def test_overlap_known_case() -> None:
    # sets {0,1,2}, {1,3}, {0,1,2} (row 2 is row 0 reordered) -> 2 distinct of 3 -> 1 - 2/3
    assert m.overlap(RECS) == pytest.approx(1 / 3)
    # all distinct -> 0
    assert m.overlap(np.array([[0, 1], [1, 2], [0, 2]])) == 0.0
    # same items but different length ({0,1} vs {0}) are different sets
    assert m.overlap(np.array([[0, 1], [0, -1]])) == 0.0


def test_identical_lists() -> None:
    n = 7
    recs = np.tile(np.array([4, 2, 9, -1]), (n, 1))
    assert m.overlap(recs) == pytest.approx(1 - 1 / n)
    assert m.personalization(recs, n_items=10) == pytest.approx(0.0, abs=1e-12)


def test_disjoint_lists() -> None:
    recs = np.arange(12).reshape(4, 3)
    recs[3, 1:] = -1  # different lengths do not matter when nothing is shared
    assert m.personalization(recs, n_items=12) == pytest.approx(1.0, abs=1e-12)
    assert m.overlap(recs) == 0.0


def test_personalization_known_case() -> None:
    # lengths 3, 2, 3. cos(0,1) = |{1}|/sqrt(3*2), cos(0,2) = 3/sqrt(3*3) = 1, cos(1,2) = 1/sqrt(6)
    expected = 1 - (1 / math.sqrt(6) + 1.0 + 1 / math.sqrt(6)) / 3
    assert m.personalization(RECS, N_ITEMS) == pytest.approx(expected, abs=1e-14)


def test_personalization_ignores_empty_lists_and_small_inputs() -> None:
    with_empty = np.vstack([RECS, [[-1, -1, -1]]])
    assert m.personalization(with_empty, N_ITEMS) == pytest.approx(
        m.personalization(RECS, N_ITEMS), abs=1e-14
    )
    assert m.personalization(np.array([[0, 1, 2]]), N_ITEMS) == 0.0
    assert m.personalization(np.array([[0, 1, 2], [-1, -1, -1]]), N_ITEMS) == 0.0


def test_personalization_matches_pairwise_brute_force() -> None:
    rng = np.random.default_rng(42)
    n_users, n_items, k = 30, 20, 8
    recs = np.full((n_users, k), -1, dtype=np.int64)
    for u in range(n_users):
        length = rng.integers(0, k + 1)  # includes empty lists and full lists
        recs[u, :length] = rng.choice(n_items, size=length, replace=False)
    sets = [set(row[row >= 0].tolist()) for row in recs]
    sets = [s for s in sets if s]
    sims = [len(a & b) / math.sqrt(len(a) * len(b)) for a, b in itertools.combinations(sets, 2)]
    expected = 1 - sum(sims) / len(sims)
    assert len(sets) < n_users  # the seed really produces empty lists
    assert m.personalization(recs, n_items) == pytest.approx(expected, abs=1e-12)


def test_novelty_known_case_and_floor() -> None:
    pop = np.array([0.5, 0.25, 0.125, 1.0, 0.0625])
    # entries 0,1,2 | 3,1 | 2,0,1 -> bits 1,2,3 | 0,2 | 3,1,2 = 14 over 8 entries
    assert m.novelty(RECS, pop) == pytest.approx(14 / 8)
    # an item nobody bought is clipped at the default floor 1e-6
    assert m.novelty(np.array([[0, -1]]), np.array([0.0])) == pytest.approx(-math.log2(1e-6))
    assert m.novelty(np.array([[0, -1]]), np.array([0.0]), floor=0.25) == pytest.approx(2.0)
    assert math.isnan(m.novelty(np.array([[-1, -1]]), pop))


def test_by_group_string_and_int_labels() -> None:
    values = np.array([1.0, 0.0, 0.5, 0.25, 1.0])
    # "a": users 0, 3 -> (1 + 0.25)/2; "b": users 1, 2, 4 -> (0 + 0.5 + 1)/3
    out = m.by_group(values, np.array(["a", "b", "b", "a", "b"]))
    assert out == pytest.approx({"a": 0.625, "b": 0.5})
    assert all(type(key) is str for key in out)
    out = m.by_group(values, np.array([3, 3, 1, 1, 1]))
    assert out == pytest.approx({1: (0.5 + 0.25 + 1) / 3, 3: 0.5})
    with pytest.raises(ValueError):
        m.by_group(values, np.array(["a", "b"]))


# --------------------------------------------------------------------------------------------
# evaluate_recs
# --------------------------------------------------------------------------------------------


EXPECTED_3 = {
    "map@3": (7 / 12 + 0 + 1 / 2) / 3,
    "hr@3": 2 / 3,
    "precision@3": (2 / 3 + 0 + 1 / 3) / 3,
    "recall@3": (1 + 0 + 1 / 2) / 3,
    "ndcg@3": ((LOG3 + 0.5) / IDEAL_2 + 0 + 1 / IDEAL_2) / 3,
    "recall_1@3": 2 / 3,
    "recall_30@3": 2 / 3,
    "coverage@3": 4 / 5,
    "overlap@3": 1 / 3,
    "personalization@3": 1 - (2 / math.sqrt(6) + 1) / 3,
    "novelty@3": 14 / 8,
}


def test_evaluate_recs_known_case() -> None:
    pop = np.array([0.5, 0.25, 0.125, 1.0, 0.0625])
    out = m.evaluate_recs(RECS, TRUTH, K, item_popularity=pop)
    assert list(out) == list(EXPECTED_3)
    assert out == pytest.approx(EXPECTED_3, abs=1e-14)
    assert "novelty@3" not in m.evaluate_recs(RECS, TRUTH, K)


def test_evaluate_recs_excludes_users_without_relevant_items() -> None:
    pop = np.array([0.5, 0.25, 0.125, 1.0, 0.0625])
    # Two extra users who bought nothing; their lists (item 4, a duplicate list) must not
    # change any metric, beyond-accuracy ones included.
    recs = np.vstack([[[4, 3, -1]], RECS, [[2, 1, 0]]])
    truth = sp.vstack([sp.csr_matrix((1, N_ITEMS)), TRUTH, sp.csr_matrix((1, N_ITEMS))]).tocsr()
    out = m.evaluate_recs(recs, truth, K, item_popularity=pop)
    assert out == pytest.approx(EXPECTED_3, abs=1e-14)


def test_evaluate_recs_truncates_to_k_and_uses_n_items() -> None:
    # Extra 4th column holds hits for users 1 and 2 (items 0 and 4); they must be ignored.
    wide = np.hstack([RECS, [[3], [0], [4]]])
    out = m.evaluate_recs(wide, TRUTH, K, n_items=10)
    expected = dict(EXPECTED_3, **{"coverage@3": 4 / 10})
    expected.pop("novelty@3")
    # personalization is the same with a bigger catalogue (only shared items matter)
    assert out == pytest.approx(expected, abs=1e-14)


def test_evaluate_recs_with_padding_only_lists() -> None:
    # user 1 gets nothing at all: it still counts (zeros) for accuracy, is one (empty) list for
    # overlap, and is excluded from personalization.
    recs = RECS.copy()
    recs[1] = -1
    out = m.evaluate_recs(recs, TRUTH, K)
    assert out["map@3"] == pytest.approx((7 / 12 + 1 / 2) / 3)
    assert out["overlap@3"] == pytest.approx(1 / 3)  # {0,1,2}, {}, {0,1,2}
    assert out["personalization@3"] == pytest.approx(0.0, abs=1e-12)  # only two identical
    assert out["coverage@3"] == pytest.approx(3 / 5)


def test_evaluate_recs_all_users_without_purchases_gives_nan_accuracy() -> None:
    out = m.evaluate_recs(RECS, sp.csr_matrix((3, N_ITEMS)), K)
    assert math.isnan(out["map@3"])
    assert out["coverage@3"] == 0.0
