"""Experiments of the H&M sequence-model thesis: leave-last-out evaluation at k=14 and its
ablations (embedding size, sequence order, history length). Each ablation returns a table: a list
of rows, one per setting, ready for `evaluate.markdown_table` and JSON.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import polars as pl

from fashionrec.data.dataset import Dataset
from fashionrec.data.seqrec import ORDERS, without_repeats
from fashionrec.data.split import leave_last_out
from fashionrec.errors import ConfigError
from fashionrec.evaluate import truth_of
from fashionrec.metrics import evaluate_recs
from fashionrec.models import registry

log = logging.getLogger(__name__)

K = 14  # the thesis' cutoff
EMBEDDING_SIZES = (1, 10, 20, 128, 256)
HISTORY_LENGTHS = (5, 10, 20, 50)
THESIS_COLUMNS = (
    "hr@14",
    "coverage@14",
    "overlap@14",
    "personalization@14",
    "novelty@14",
    "hr@10",
    "ndcg@10",
)


def holdout(data: Dataset, *, repeats: bool = False) -> tuple[Dataset, Dataset]:
    """(fit data, test data) of the thesis protocol: consecutive repeat purchases removed first
    (unless `repeats`), then leave-last-out; the validation purchase goes back to the fit data,
    because the sequence models hold each customer's last fitted purchase out again inside `fit`
    (the S3-Rec/ICLRec protocol: train on all but the last two, validate on the second last, and
    the test history includes it)."""
    split = leave_last_out(data if repeats else without_repeats(data))
    fit = pl.concat([split.train.transactions, split.valid.transactions])  # type: ignore[union-attr]
    # a stable sort keeps each customer's validation purchase after their training purchases
    return data.with_transactions(fit.sort("t_dat", maintain_order=True)), split.test


def score(
    model: Any, fit: Dataset, test: Dataset, k: int = K, *, exclude_seen: bool = False
) -> dict[str, float]:
    """Every metric at k (and HR / NDCG at 10 when k >= 10) of `model` on the test buyers, with
    the recommend throughput."""
    users, truth = truth_of(test)
    t0 = time.perf_counter()
    recs = model.recommend(users, k, exclude_seen=exclude_seen)
    seconds = time.perf_counter() - t0
    row = evaluate_recs(recs.items, truth, k, item_popularity=fit.item_user_share())
    for cut in sorted({10, 20} - {k}):
        if cut < k:
            cut_row = evaluate_recs(recs.items[:, :cut], truth, cut)
            row |= {f"hr@{cut}": cut_row[f"hr@{cut}"], f"ndcg@{cut}": cut_row[f"ndcg@{cut}"]}
    return row | {"users": len(users), "recommend_users_per_s": len(users) / max(seconds, 1e-9)}


def run(
    name: str,
    params: dict[str, Any],
    fit: Dataset,
    test: Dataset,
    k: int = K,
    *,
    exclude_seen: bool = False,
) -> dict[str, Any]:
    """Fit `name` with `params` on `fit`, score it on `test`; one table row with timings."""
    model = registry.create(name, **params)
    t0 = time.perf_counter()
    model.fit(fit)
    fit_s = time.perf_counter() - t0
    row: dict[str, Any] = {"model": name, **score(model, fit, test, k, exclude_seen=exclude_seen)}
    row["fit_s"] = fit_s
    epochs = getattr(model, "train_log_", None)
    if epochs:
        row["epochs"] = len(epochs)
        row["train_s_per_epoch"] = sum(e["train_s"] for e in epochs) / len(epochs)
    log.info("%s %s: hr@%d %.4f", name, params, k, row[f"hr@{k}"])
    return row


def _sweep(
    data: Dataset,
    model: str,
    params: dict[str, Any] | None,
    column: str,
    values: tuple,
    settings: Callable[[Any], dict[str, Any]],
    k: int,
) -> list[dict[str, Any]]:
    fit, test = holdout(data)
    rows = []
    for value in values:
        row = run(model, {**(params or {}), **settings(value)}, fit, test, k)
        rows.append({column: value, **row})
    return rows


def ablation_embedding(
    data: Dataset,
    model: str = "ns-gru",
    params: dict[str, Any] | None = None,
    sizes: tuple[int, ...] = EMBEDDING_SIZES,
    k: int = K,
) -> list[dict[str, Any]]:
    """User and item embedding sizes (both set to each size)."""
    return _sweep(
        data, model, params, "embedding", sizes, lambda s: {"emb_dim": s, "user_dim": s}, k
    )


def ablation_order(
    data: Dataset,
    model: str = "ns-gru",
    params: dict[str, Any] | None = None,
    orders: tuple[str, ...] = ORDERS,
    k: int = K,
) -> list[dict[str, Any]]:
    """Sequence order the model reads (true, shuffled within each day, random); repeats are
    removed in true order first, so every order trains on the same purchases, and the test
    target is always the true next purchase."""
    return _sweep(data, model, params, "order", orders, lambda o: {"order": o}, k)


def ablation_history(
    data: Dataset,
    model: str = "ns-gru",
    params: dict[str, Any] | None = None,
    lengths: tuple[int, ...] = HISTORY_LENGTHS,
    k: int = K,
) -> list[dict[str, Any]]:
    """How many of the last purchases the model reads (`max_history`)."""
    return _sweep(data, model, params, "max_history", lengths, lambda n: {"max_history": n}, k)


ABLATIONS: dict[str, Callable[..., list[dict[str, Any]]]] = {
    "embedding": ablation_embedding,
    "order": ablation_order,
    "history": ablation_history,
}


def ablation(
    data: Dataset,
    which: tuple[str, ...] = tuple(ABLATIONS),
    model: str = "ns-gru",
    params: dict[str, Any] | None = None,
    k: int = K,
) -> dict[str, list[dict[str, Any]]]:
    """The thesis' ablations by name: {"embedding": rows, "order": rows, "history": rows}."""
    unknown = set(which) - set(ABLATIONS)
    if unknown:
        raise ConfigError(f"unknown ablation {sorted(unknown)}; choose from {', '.join(ABLATIONS)}")
    from fashionrec.models import registry
    from fashionrec.models.sequence import SequenceModel

    if not issubclass(registry.get(model), SequenceModel):
        sequences = [n for n in registry.MODELS if issubclass(registry.get(n), SequenceModel)]
        raise ConfigError(
            f"{model!r} is not a sequence model; ablate one of {', '.join(sequences)}"
        )
    return {name: ABLATIONS[name](data, model, params, k=k) for name in which}
