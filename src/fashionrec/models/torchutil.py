"""Torch helpers shared by the network models (`cvae`, `lightgcn`, the sequence models): a
thread-capped seeded session, weights <-> numpy state, the score-block budget, and an epoch loop
with early stopping on a validation score."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from tqdm import tqdm

from fashionrec.errors import ConfigError

log = logging.getLogger(__name__)

# The models' `threads` are capped: the project's machines have 2 cores shared with other jobs,
# and more torch threads than free cores spin-wait instead of working.
MAX_THREADS = 2
# Floats in one (rows x columns) score or logit block: 16 MB. Larger blocks pass glibc's 32 MB
# mmap threshold and are page-faulted afresh on every call (slower on CPU in a one-off
# measurement here).
LOGITS_BUDGET = 1 << 22


def block_rows(width: int) -> int:
    """Rows per score block of `width` columns that fit LOGITS_BUDGET (at least 1)."""
    return max(1, LOGITS_BUDGET // max(width, 1))


@contextlib.contextmanager
def torch_session(threads: int, seed: int) -> Iterator[None]:
    """`threads` torch threads (clamped to MAX_THREADS with a warning) and a private, seeded RNG;
    the caller's settings come back afterwards. `threads` < 1 is a ConfigError."""
    if threads < 1:
        raise ConfigError(f"threads must be at least 1, not {threads}")
    if threads > MAX_THREADS:
        log.warning("threads=%d clamped to %d (torchutil.MAX_THREADS)", threads, MAX_THREADS)
    old = torch.get_num_threads()
    torch.set_num_threads(min(threads, MAX_THREADS))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(old)


def to_numpy(module: nn.Module) -> dict[str, np.ndarray]:
    """A module's weights as a state field (artifacts saves it as safetensors)."""
    return {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_weights(module: nn.Module, weights: dict[str, np.ndarray]) -> nn.Module:
    """`module` with `weights` loaded, in eval mode."""
    module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    return module.eval()


def sparse_tensor(mat: sp.csr_matrix) -> torch.Tensor:
    """A float32 torch sparse CSR tensor of a scipy CSR matrix (for torch.sparse.mm)."""
    mat = sp.csr_matrix(mat, dtype=np.float32)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": mm is all we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            torch.from_numpy(mat.indptr.astype(np.int64)),
            torch.from_numpy(mat.indices.astype(np.int64)),
            torch.from_numpy(mat.data),
            size=mat.shape,
            check_invariants=False,  # scipy CSR is valid by construction
        )


class _SparseMM(torch.autograd.Function):
    """a @ x for a sparse CSR `a`, with the gradient at @ g from a given transpose `at`.

    Hand-written because torch's own backward of a CSR matmul transposes the matrix on every
    call, which was about 10x slower per LightGCN layer in a one-off measurement (200,000 edges)."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, at: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.at = at
        return torch.sparse.mm(a, x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, torch.sparse.mm(ctx.at, grad)


def spmm(a: torch.Tensor, at: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """a @ x (a sparse, x dense) differentiable in x; `at` is a's transpose (sparse)."""
    return _SparseMM.apply(a, at, x)


def train_epochs(
    module: nn.Module,
    epoch: Callable[[int], float],
    validate: Callable[[], float] | None,
    *,
    epochs: int,
    patience: int,
    name: str,
    metric: str = "valid",
) -> list[dict[str, float]]:
    """Run `epoch(i)` (one pass over the training data; returns the mean loss) `epochs` times.
    With `validate` (a score, higher is better, logged as `metric`), stop after `patience` epochs
    without a new best and restore the best weights. Returns one log row per epoch."""
    best, best_state, waited, rows = -np.inf, None, 0, []
    bar = tqdm(range(epochs), desc=f"fit {name}", unit="epoch", disable=None, leave=False)
    for i in bar:
        module.train()
        t0 = time.perf_counter()
        row = {"epoch": i + 1, "loss": epoch(i), "train_s": time.perf_counter() - t0}
        if validate is not None:
            module.eval()
            with torch.no_grad():
                row[metric] = float(validate())
        rows.append(row)
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if k != "epoch"})
        log.info("%s epoch %s", name, {k: round(v, 4) for k, v in row.items()})
        if validate is None:
            continue
        if row[metric] > best:
            best, waited = row[metric], 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                log.info("%s: early stop after epoch %d (best %.4f)", name, i + 1, best)
                break
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    return rows


def recall_at(top: np.ndarray, targets: sp.csr_matrix) -> float:
    """Mean recall of the (n, k) top column indices against binary CSR targets (n, m); rows
    without targets are skipped."""
    n_rel = np.diff(targets.indptr)
    rows = np.flatnonzero(n_rel)
    if not len(rows):
        return 0.0
    hit = np.asarray(targets[rows[:, None], top[rows]].sum(axis=1)).ravel()
    return float(np.mean(hit / n_rel[rows]))
