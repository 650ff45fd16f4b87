"""Resumable training checkpoints (issue 5): an interrupted fit resumed from its checkpoint ends
with the same weights and log as an uninterrupted one; another run's checkpoint is not resumed;
a finished one returns at once; the files are replaced atomically."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fashionrec.data.dataset import Dataset
from fashionrec.models import cvae, lightgcn, registry, sequence, torchutil
from fashionrec.models.torchutil import train_epochs

FILES = ["checkpoint.json", "checkpoint.safetensors"]
# tiny fits with dropout and validation, so that every RNG and the early-stopping state matter
MODELS = {
    "ns-gru": (sequence, {"emb_dim": 8, "user_dim": 4, "hidden": 8, "batch_size": 16}),
    "sasrec": (sequence, {"emb_dim": 8, "blocks": 1, "batch_size": 16, "max_history": 10}),
    "lightgcn": (lightgcn, {"factors": 8, "batch_size": 64, "valid_k": 5}),
    "cvae": (cvae, {"hidden": 16, "latent": 4, "batch_size": 16, "n_segments": 2}),
}


def interrupt_at(
    monkeypatch: pytest.MonkeyPatch, module: Any, at: int | None
) -> Callable[[], list[int]]:
    """Patch `module.train_epochs` so that the first fit raises KeyboardInterrupt after training
    epoch index `at` (before its checkpoint is written); returns the epoch indices run."""
    calls: list[int] = []

    def patched(net: nn.Module, epoch: Callable[[int], float], *args: Any, **kw: Any) -> Any:
        def counted(i: int) -> float:
            calls.append(i)
            loss = epoch(i)
            if i == at and calls.count(at) == 1:
                raise KeyboardInterrupt
            return loss

        return train_epochs(net, counted, *args, **kw)

    monkeypatch.setattr(module, "train_epochs", patched)
    return lambda: calls


def without_times(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "train_s"} for row in rows]


def assert_same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(torch.from_numpy(a[key]), torch.from_numpy(b[key])), key


@pytest.mark.parametrize("name", list(MODELS))
def test_an_interrupted_fit_resumes_to_the_same_model(
    name: str,
    random_dataset: Dataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    module, params = MODELS[name]
    params = params | {"epochs": 5, "patience": 5, "seed": 3}
    whole = registry.create(name, **params).fit(random_dataset)
    assert len(whole.train_log_) == 5 and len(whole.train_log_[0]) == 4  # with validation

    calls = interrupt_at(monkeypatch, module, at=2)
    model = registry.create(name, **params, checkpoint=str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        model.fit(random_dataset)
    assert json.loads((tmp_path / "checkpoint.json").read_text())["epoch"] == 2
    with caplog.at_level(logging.INFO, logger=torchutil.__name__):
        resumed = registry.create(name, **params, checkpoint=str(tmp_path)).fit(random_dataset)
    assert f"resuming {name} at epoch 3" in caplog.text
    assert calls() == [0, 1, 2, 2, 3, 4]  # epoch 3 (index 2) is trained again, from epoch 2
    assert_same_weights(resumed.weights_, whole.weights_)
    assert without_times(resumed.train_log_) == without_times(whole.train_log_)
    if name == "cvae":  # sampled after training from the restored torch RNG
        np.testing.assert_array_equal(resumed.prior_, whole.prior_)

    # finished: a re-fit restores the best weights without training
    again = registry.create(name, **params, checkpoint=str(tmp_path)).fit(random_dataset)
    assert calls() == [0, 1, 2, 2, 3, 4]
    assert_same_weights(again.weights_, whole.weights_)
    assert again.train_log_ == resumed.train_log_
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES  # no *.tmp left


def test_other_parameters_do_not_resume(
    random_dataset: Dataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    params = MODELS["ns-gru"][1] | {"epochs": 2, "checkpoint": str(tmp_path)}
    registry.create("ns-gru", **params).fit(random_dataset)
    first = json.loads((tmp_path / "checkpoint.json").read_text())["fingerprint"]
    calls = interrupt_at(monkeypatch, sequence, at=None)
    registry.create("ns-gru", **params, threads=2).fit(random_dataset)  # threads: the same run
    assert calls() == []
    with caplog.at_level(logging.WARNING, logger=torchutil.__name__):
        registry.create("ns-gru", **params, lr=0.01).fit(random_dataset)
    assert "another run" in caplog.text and calls() == [0, 1]
    assert json.loads((tmp_path / "checkpoint.json").read_text())["fingerprint"] != first


# ---- train_epochs itself, on a one-weight module whose weight remembers its epoch ------------


def run(root: Path, scores: list[float], fingerprint: str = "a", **kw: Any) -> tuple[Any, ...]:
    """(rows, epochs run, final weight) of a 5-epoch run with these validation scores."""
    module = nn.Linear(1, 1, bias=False)
    opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(0)
    ran: list[int] = []
    it: Iterator[float] = iter(scores)

    def epoch(i: int) -> float:
        ran.append(i)
        module.weight.grad = torch.ones_like(module.weight)
        opt.step()  # momentum buffers: optimizer tensors in the checkpoint
        module.weight.data.fill_(i + 1.0)
        return float(rng.random())

    rows = train_epochs(
        module,
        epoch,
        lambda: next(it),
        epochs=5,
        patience=2,
        name="t",
        checkpoint=root,
        extra={"opt": opt, "rng": rng},
        fingerprint=fingerprint,
        **kw,
    )
    return rows, ran, module.weight.item()


def test_a_finished_checkpoint_returns_the_best_weights_at_once(tmp_path: Path) -> None:
    rows, ran, weight = run(tmp_path, [0.1, 0.3, 0.2, 0.25])
    assert ran == [0, 1, 2, 3] and [r["epoch"] for r in rows] == [1, 2, 3, 4]  # early stop
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["done"] and saved["epoch"] == 4 and saved["best"] == 0.3
    again, ran, weight_again = run(tmp_path, [])
    assert ran == [] and again == rows and weight_again == weight == 2.0  # the best epoch's
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES


def test_another_fingerprint_starts_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run(tmp_path, [0.1, 0.3, 0.2, 0.25])
    with caplog.at_level(logging.WARNING, logger=torchutil.__name__):
        _, ran, _ = run(tmp_path, [0.1] * 5, fingerprint="b")
    assert "another run" in caplog.text and ran == [0, 1, 2]
    assert json.loads((tmp_path / "checkpoint.json").read_text())["fingerprint"] == "b"


def test_a_failed_write_keeps_the_last_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real = torchutil.save_file
    count = iter(range(100))

    def crash_on_third(tensors: dict, path: Path, metadata: dict) -> None:
        if next(count) == 2:  # the write after epoch 3 dies half-way
            Path(path).write_bytes(b"half a file")
            raise KeyboardInterrupt
        real(tensors, path, metadata)

    monkeypatch.setattr(torchutil, "save_file", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, [0.1, 0.2, 0.3, 0.4, 0.5])
    assert json.loads((tmp_path / "checkpoint.json").read_text())["epoch"] == 2
    monkeypatch.setattr(torchutil, "save_file", real)
    with caplog.at_level(logging.INFO, logger=torchutil.__name__):
        rows, ran, weight = run(tmp_path, [0.3, 0.4, 0.5])
    assert "resuming t at epoch 3" in caplog.text and ran == [2, 3, 4]
    assert [r["valid"] for r in rows] == [0.1, 0.2, 0.3, 0.4, 0.5] and weight == 5.0
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES  # the half-written temp is removed


def test_files_of_two_different_saves_are_not_resumed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run(tmp_path, [0.1, 0.3, 0.2, 0.25])
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta | {"epoch": 3, "done": False}))
    with caplog.at_level(logging.WARNING, logger=torchutil.__name__):
        _, ran, _ = run(tmp_path, [0.1, 0.3, 0.2, 0.25])
    assert "do not match" in caplog.text and ran == [0, 1, 2, 3]
