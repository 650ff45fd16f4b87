"""Shared top-k helpers and artifacts, on inputs whose answers are obvious."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from fashionrec import artifacts
from fashionrec.models import base, registry


def test_top_k_dense_orders_and_excludes() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.9], [1.0, -np.inf, 0.0, 2.0]], dtype=np.float32)
    recs = base.top_k_dense(scores, 3)
    assert recs.items.tolist() == [[1, 3, 2], [3, 0, 2]]  # tie 0.9: lower index first
    excl = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 1]]))
    recs = base.top_k_dense(scores, 4, excl)
    assert recs.items.tolist() == [[3, 2, 0, -1], [0, 2, -1, -1]]  # -inf and excluded dropped
    assert recs.scores[1, 2] == -np.inf


def test_row_top_k() -> None:
    mat = sp.csr_matrix(np.array([[0, 3, 1, 3], [0, 0, 0, 0], [5, 0, 0, 0]], dtype=np.float32))
    recs = base.row_top_k(mat, 2)
    assert recs.items.tolist() == [[1, 3], [-1, -1], [0, -1]]
    assert recs.items.dtype == np.int32 and recs.scores.dtype == np.float32
    # only positive entries; float64 scores that are equal as float32 keep their float64 order
    close = sp.csr_matrix(np.array([[1.0, 1.0 + 1e-12, -2.0, 0.5]]))
    assert base.row_top_k(close, 4).items.tolist() == [[1, 0, 3, -1]]
    assert base.row_top_k(close.astype(np.float32), 4).items.tolist() == [[0, 1, 3, -1]]


def test_lookup_and_as_csr() -> None:
    keys = np.array([2, 5, 9], dtype=np.int64)
    assert base.lookup(keys, np.array([5, 3, 9, 10, 0])).tolist() == [1, -1, 2, -1, -1]
    assert base.lookup(keys[:0], np.array([1])).tolist() == [-1]
    items = np.array([[2, -1], [0, 2]])
    assert base.as_csr(items, 4).toarray().tolist() == [[0, 0, 1, 0], [1, 0, 1, 0]]
    values = np.array([[0.5, 9.0], [0.25, 2.0]])
    assert base.as_csr(items, 3, values).toarray().tolist() == [[0, 0, 0.5], [0.25, 0, 2.0]]


def test_rank_list_skips_each_users_items() -> None:
    excl = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 0, 0]]))
    recs = base.rank_list(np.array([0, 1, 2, 3]), np.array([4.0, 3, 2, 1]), 2, 2, excl)
    assert recs.items.tolist() == [[2, 3], [0, 1]]
    # unknown users (-1) have nothing to exclude
    unknown = base.rows_of(excl, np.array([-1]))
    recs = base.rank_list(np.array([0, 1]), np.array([2.0, 1]), 1, 2, unknown)
    assert recs.items.tolist() == [[0, 1]]


def test_fill_keeps_primary_first_without_duplicates() -> None:
    primary = base.Recs(
        np.array([[5, -1, -1]], dtype=np.int32),
        np.array([[2.0, -np.inf, -np.inf]], dtype=np.float32),
    )
    fallback = base.Recs(
        np.array([[5, 1, 2]], dtype=np.int32), np.array([[9.0, 8, 7]], dtype=np.float32)
    )
    out = base.fill(primary, fallback, 3)
    assert out.items.tolist() == [[5, 1, 2]]
    assert out.scores[0, 0] >= 1 > out.scores[0, 1] > out.scores[0, 2]


@dataclass
class _Toy:
    name: ClassVar[str] = "toy"
    fallback: ClassVar[str] = "-"
    alpha: float = 1.0
    weights_: dict = field(default=None, init=False)
    mat_: sp.csr_matrix = field(default=None, init=False)
    note_: dict = field(default=None, init=False)


def test_artifact_round_trip_of_every_state_kind(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(registry.MODELS, "toy", f"{__name__}:_Toy")
    toy = _Toy(alpha=0.5)
    toy.weights_ = {"layer.w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    toy.mat_ = sp.csr_matrix(np.eye(3, dtype=np.float32))
    toy.note_ = {"classes": ["a", "b"]}
    artifacts.save(toy, tmp_path / "toy")
    assert (tmp_path / "toy" / "weights_.safetensors").exists()
    back = artifacts.load(tmp_path / "toy")
    assert back.alpha == 0.5 and back.note_ == {"classes": ["a", "b"]}
    np.testing.assert_array_equal(back.weights_["layer.w"], toy.weights_["layer.w"])
    assert (back.mat_ != toy.mat_).nnz == 0


def test_load_rejects_a_non_artifact(tmp_path: Path) -> None:
    from fashionrec.errors import ConfigError

    with pytest.raises(ConfigError, match="not a fashionrec model artifact"):
        artifacts.load(tmp_path)


def _sorted_top_n(mat: sp.csr_matrix, n: int, self_offset: int | None) -> list[list[tuple]]:
    """Each row's n largest positive entries by a plain sort (ties: lower column first)."""
    out = []
    for r in range(mat.shape[0]):
        row = mat.getrow(r).tocoo()
        entries = [
            (float(v), int(c))
            for c, v in zip(row.col, row.data, strict=True)
            if v > 0 and (self_offset is None or c != r + self_offset)
        ]
        out.append(sorted(entries, key=lambda e: (-e[0], e[1]))[:n])
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_n_per_row_equals_a_plain_sort_with_long_rows_and_ties(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long rows go through the sampled bound (`_above_bound`), in chunks of a few rows; the
    result must be exactly the n largest of each row, ties by column, as a plain sort says."""
    monkeypatch.setattr(base, "SAMPLE_CHUNK", 50)
    rng = np.random.default_rng(0)
    for _ in range(20):
        mat = sp.random(30, 200, density=rng.uniform(0.05, 1.0), random_state=rng, format="csr")
        mat.data = np.round(mat.data * 4) / 4  # many ties, and zeros that must not be listed
        mat = mat.astype(dtype)
        n = int(rng.integers(1, 6))
        offset = int(rng.integers(0, 3)) if rng.random() < 0.5 else None
        top = base.top_n_per_row(mat, n, self_offset=offset)
        got = []
        for r in range(top.shape[0]):
            cols, vals = (
                top.indices[top.indptr[r] : top.indptr[r + 1]],
                top.data[top.indptr[r] : top.indptr[r + 1]],
            )
            got.append([(float(v), int(c)) for v, c in zip(vals, cols, strict=True)])
        assert got == _sorted_top_n(mat, n, offset)
    # long rows really were cut by the bound: 200 entries, n=2 -> at most a few survive the bound
    dense = sp.csr_matrix(rng.random((4, 200)).astype(np.float32))
    rows = np.repeat(np.arange(4), 200)
    kept = base._above_bound(rows, dense.indices, dense.data, 4, 2)[0]
    assert len(kept) < 4 * 200 // 4
