"""Torch helpers shared by the network models (`cvae`, `lightgcn`, the sequence models): a
thread-capped seeded session, weights <-> numpy state, the score-block budget, and an epoch loop
with early stopping on a validation score and resumable checkpoints (safetensors + JSON)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from fashionrec.atomic import replace_with, write_text
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
    checkpoint: str | Path | None = None,
    extra: dict[str, Any] | None = None,
    fingerprint: str = "",
) -> list[dict[str, float]]:
    """Run `epoch(i)` (one pass over the training data; returns the mean loss) `epochs` times.
    With `validate` (a score, higher is better, logged as `metric`), stop after `patience` epochs
    without a new best and restore the best weights. Returns one log row per epoch.

    With `checkpoint` (a directory), the run is saved after every epoch (`save_checkpoint`): the
    weights, the torch RNG and the states of `extra` (named optimizers, schedulers, anything with
    state_dict/load_state_dict, and numpy Generators). A saved run with the same `fingerprint`
    (the caller's identity of its data and parameters) is resumed at its next epoch; a finished
    one only restores its weights and returns its rows; any other one is overwritten."""
    extra = extra or {}
    best, best_state, waited, rows, start = -np.inf, None, 0, [], 0
    saved = None if checkpoint is None else load_checkpoint(Path(checkpoint), fingerprint, name)
    if saved is not None:
        tensors, meta = saved
        module.load_state_dict(_prefixed(tensors, "module."))
        best_state = _prefixed(tensors, "best.") if meta["has_best"] else None
        for key, obj in extra.items():
            _set_state(obj, _decode(meta["extra"][key], tensors))
        torch.set_rng_state(tensors["torch_rng"])
        best = -np.inf if meta["best"] is None else meta["best"]
        waited, rows, start = meta["waited"], meta["rows"], meta["epoch"]
        if meta["done"]:
            log.info("%s: finished run in %s, %d epochs restored", name, checkpoint, len(rows))
            module.eval()
            return rows
        log.info("resuming %s at epoch %d", name, start + 1)

    def save(done: bool, epochs_done: int) -> None:
        state = {"epoch": epochs_done, "done": done, "waited": waited, "rows": rows}
        state["best"] = float(best) if np.isfinite(best) else None
        save_checkpoint(Path(checkpoint), module, best_state, extra, state, fingerprint)

    bar = tqdm(
        range(start, epochs),
        desc=f"fit {name}",
        unit="epoch",
        initial=start,
        total=epochs,
        disable=None,
        leave=False,
    )
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
        if validate is not None:
            if row[metric] > best:
                best, waited = row[metric], 0
                best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            else:
                waited += 1
                if waited >= patience:
                    log.info("%s: early stop after epoch %d (best %.4f)", name, i + 1, best)
                    break
        if checkpoint is not None and i + 1 < epochs:
            save(False, i + 1)
    if best_state is not None:
        module.load_state_dict(best_state)
    module.eval()
    if checkpoint is not None:
        save(True, len(rows))
    return rows


# ---- checkpoints: <dir>/checkpoint.safetensors (tensors) + <dir>/checkpoint.json (the rest) ----


def fingerprint_of(model: Any, *arrays: np.ndarray | None, **context: Any) -> str:
    """The identity of a training run, for its checkpoint: SHA-256 of a dataclass model's name
    and parameters (except `threads` and `checkpoint`, which do not change the run), `context`
    (sorted JSON) and the arrays' dtypes, shapes and bytes."""
    skip = ("threads", "checkpoint")
    params = {
        f.name: getattr(model, f.name) for f in fields(model) if f.init and f.name not in skip
    }
    text = json.dumps(
        {"model": model.name, "params": params, **context}, sort_keys=True, default=str
    )
    digest = hashlib.sha256(text.encode())
    for array in arrays:
        if array is None:
            digest.update(b"None")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.data)
    return digest.hexdigest()


def save_checkpoint(
    root: Path,
    module: nn.Module,
    best: dict[str, torch.Tensor] | None,
    extra: dict[str, Any],
    state: dict[str, Any],
    fingerprint: str,
) -> None:
    """Write `root`/checkpoint.safetensors (weights `module.*`, best weights `best.*`, tensors
    of `extra` `extra.*`, `torch_rng`) and then `root`/checkpoint.json (`state` plus the
    tensor-free states of `extra`), each to a temporary file first and renamed over the old
    one. Both carry the fingerprint and epoch, so a pair from two different saves is
    detected."""
    tensors = {f"module.{k}": v for k, v in module.state_dict().items()}
    tensors |= {f"best.{k}": v for k, v in (best or {}).items()}
    meta = {
        "fingerprint": fingerprint,
        **state,
        "has_best": best is not None,
        "extra": {
            key: _encode(_get_state(obj), f"extra.{key}", tensors) for key, obj in extra.items()
        },
    }
    tensors["torch_rng"] = torch.get_rng_state()
    tensors = {
        k: torch.clone(v.detach().cpu(), memory_format=torch.contiguous_format)
        for k, v in tensors.items()
    }
    stamp = {"fingerprint": fingerprint, "epoch": str(state["epoch"])}
    replace_with(root / "checkpoint.safetensors", lambda tmp: save_file(tensors, tmp, stamp))
    write_text(root / "checkpoint.json", json.dumps(meta, indent=1) + "\n")


def load_checkpoint(
    root: Path, fingerprint: str, name: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """(tensors, JSON state) of the checkpoint in `root`, or None when there is none, or (with a
    warning) when it is of another run (fingerprint) or its two files do not belong together."""
    tensor_path, json_path = root / "checkpoint.safetensors", root / "checkpoint.json"
    if not (tensor_path.exists() and json_path.exists()):
        return None
    meta = json.loads(json_path.read_text())
    if meta.get("fingerprint") != fingerprint:
        log.warning("%s: the checkpoint in %s is of another run: starting afresh", name, root)
        return None
    with safe_open(tensor_path, framework="pt") as f:
        stamp = f.metadata()
    if stamp != {"fingerprint": fingerprint, "epoch": str(meta["epoch"])}:
        log.warning("%s: the checkpoint files in %s do not match: starting afresh", name, root)
        return None
    return load_file(tensor_path), meta


def _prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors whose keys start with `prefix`, without it."""
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _get_state(obj: Any) -> Any:
    """The state of a numpy Generator or of anything with state_dict()."""
    if isinstance(obj, np.random.Generator):
        return obj.bit_generator.state
    return obj.state_dict()


def _set_state(obj: Any, state: Any) -> None:
    if isinstance(obj, np.random.Generator):
        obj.bit_generator.state = state
    else:
        obj.load_state_dict(state)


def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """`value` as JSON: each tensor moves to `tensors` under a key from its path (e.g.
    `extra.opt.state.0.exp_avg`) and leaves {"__tensor__": key}; tuples and dicts with
    non-string keys (an optimizer's parameter ids) are tagged so that they come back as such."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value
        return {"__tensor__": key}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: _encode(v, f"{key}.{k}", tensors) for k, v in value.items()}
        return {"__items__": [[k, _encode(v, f"{key}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        items = [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    return value


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `_encode`."""
    if isinstance(value, list):
        return [_decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__items__" in value:
        return {k: _decode(v, tensors) for k, v in value["__items__"]}
    if "__tuple__" in value:
        return tuple(_decode(v, tensors) for v in value["__tuple__"])
    return {k: _decode(v, tensors) for k, v in value.items()}


def recall_at(top: np.ndarray, targets: sp.csr_matrix) -> float:
    """Mean recall of the (n, k) top column indices against binary CSR targets (n, m); rows
    without targets are skipped."""
    n_rel = np.diff(targets.indptr)
    rows = np.flatnonzero(n_rel)
    if not len(rows):
        return 0.0
    hit = np.asarray(targets[rows[:, None], top[rows]].sum(axis=1)).ravel()
    return float(np.mean(hit / n_rel[rows]))
