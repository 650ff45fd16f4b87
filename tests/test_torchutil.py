"""torchutil: the thread cap of the torch sessions and the score-block size."""

from __future__ import annotations

import logging

import pytest
import torch

from fashionrec.errors import ConfigError
from fashionrec.models import torchutil
from fashionrec.models.torchutil import MAX_THREADS, block_rows, torch_session


def test_threads_are_capped_with_a_warning_and_restored(caplog: pytest.LogCaptureFixture) -> None:
    before = torch.get_num_threads()
    warnings = caplog.at_level(logging.WARNING, logger=torchutil.__name__)
    with warnings, torch_session(MAX_THREADS + 6, 0):
        assert torch.get_num_threads() == MAX_THREADS
    assert "clamped" in caplog.text
    assert torch.get_num_threads() == before
    with pytest.raises(ConfigError, match="threads"), torch_session(0, 0):
        pass


def test_the_session_rng_is_seeded_and_private() -> None:
    outside = torch.random.get_rng_state()
    with torch_session(1, 3):
        a = torch.rand(3)
    with torch_session(1, 3):
        b = torch.rand(3)
    torch.testing.assert_close(a, b)
    assert torch.equal(torch.random.get_rng_state(), outside)


def test_block_rows_fit_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torchutil, "LOGITS_BUDGET", 100)
    assert block_rows(30) == 3 and block_rows(1000) == 1 and block_rows(0) == 100
