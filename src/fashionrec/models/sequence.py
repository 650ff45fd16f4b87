"""Next-article models that read a customer's purchase sequence: the "neural sequencer" (NS) models
of the H&M thesis (RNN, LSTM, GRU, attention, transformer) and SASRec (Kang & McAuley 2018).

The file reads top to bottom (nanoGPT style): data preparation, the networks, the training loop,
then the registered recommenders. All six share one network shell (`SeqNet`: item embedding ->
sequence encoder -> concatenated user embedding -> head -> scores over the whole catalogue) and
differ in the encoder, the head (an MLP only in `ns-transformer`) and their defaults. Repeat
removal and the order ablation are `data.seqrec`'s; torch sessions, weights <-> numpy, the
epoch loop and the score-block budget are `torchutil`'s.

Every encoder is causal, so one forward pass over a customer's sequence yields the prediction
after *every* prefix: "all prefixes as training samples, next item as target" costs one pass.
Sequences are right-padded with 0 (item i is token i + 1), so padding never leaks into a real
position and positions count from the first kept item, the same in training and at serving time.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from fashionrec.data.dataset import Dataset
from fashionrec.data.seqrec import ORDERS, drop_repeats, keep_where, owners, reorder, repeats
from fashionrec.errors import ConfigError
from fashionrec.models.base import (
    Recs,
    as_csr_lists,
    batched,
    extra_matrix,
    first_k,
    popularity_fallback,
    rank_list,
    rows_of,
    take_rows,
)
from fashionrec.models.torchutil import (
    block_rows,
    fingerprint_of,
    load_weights,
    to_numpy,
    torch_session,
    train_epochs,
)

log = logging.getLogger(__name__)

LOSSES = ("full", "sampled")

# ---------------------------------------------------------------------------------------------
# Data preparation: CSR-style sequences (indptr, items) as returned by Dataset.sequences().


def tails(
    indptr: np.ndarray,
    items: np.ndarray,
    n: int,
    drop: np.ndarray | int = 0,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """(rows, n) int64 tokens: each row's last n items (after dropping `drop` items from its end)
    as item + 1, right-padded with 0; all rows, or the rows `rows`."""
    start, end = indptr[:-1], indptr[1:] - drop
    if rows is not None:
        start, end = start[rows], end[rows]
    length = np.clip(end - start, 0, n)
    cols = np.arange(n)
    valid = cols < length[:, None]
    idx = (end - length)[:, None] + cols
    out = np.zeros((len(end), n), dtype=np.int64)
    out[valid] = items[idx[valid]].astype(np.int64) + 1
    return out


def keep_last(indptr: np.ndarray, items: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, int32 items) with each row cut to its last n items."""
    start = np.maximum(indptr[:-1], indptr[1:] - n)
    lengths = indptr[1:] - start
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=out[1:])
    idx = np.repeat(start - out[:-1], lengths) + np.arange(out[-1])
    return out, items[idx].astype(np.int32)


def append_rows(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row i of `b` appended to row i of `a` (CSR-style pairs with the same number of rows):
    (indptr, items, a mask of the items that come from `b`)."""
    rows = np.concatenate([owners(a[0]), owners(b[0])])
    order = np.argsort(rows, kind="stable")  # a's items stay before b's in each row
    indptr = np.zeros_like(a[0])
    np.cumsum(np.bincount(rows, minlength=len(a[0]) - 1), out=indptr[1:])
    from_b = np.concatenate([np.zeros(len(a[1]), dtype=bool), np.ones(len(b[1]), dtype=bool)])
    return indptr, np.concatenate([a[1], b[1]]).astype(np.int64)[order], from_b[order]


# ---------------------------------------------------------------------------------------------
# Networks. Each encoder maps (B, L, emb_dim) item embeddings to (B, L, state) causal states.


class RNNEncoder(nn.Module):
    """The Neural Sequencer's recurrent stack (thesis: 3 layers of 512 units)."""

    def __init__(self, cell: str, emb_dim: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        self.drop = nn.Dropout(dropout)
        self.rnn = rnn(emb_dim, hidden, layers, batch_first=True, dropout=dropout * (layers > 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.rnn(self.drop(x))[0])


class AttentionEncoder(nn.Module):
    """A GRU with causal self-attention over its own states: at step t, a linear query of h_t
    attends over h_1..h_t (scaled dot product), and the context is mixed linearly with h_t, as
    NARM (Li et al. 2017) combines its local and global encoders; all t at once."""

    def __init__(self, emb_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.rnn = nn.GRU(emb_dim, hidden, batch_first=True)
        self.query = nn.Linear(hidden, hidden, bias=False)
        self.mix = nn.Linear(2 * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.rnn(self.drop(x))[0]
        context = F.scaled_dot_product_attention(self.query(h), h, h, is_causal=True)
        # a linear mix, as NARM's: a tanh here saturated and froze training
        return self.drop(self.mix(torch.cat([context, h], dim=-1)))


class TransformerEncoder(nn.Module):
    """Causal transformer encoder with learned positions (thesis: 8 heads, feed-forward 2048)."""

    def __init__(
        self, emb_dim: int, heads: int, layers: int, ff: int, max_len: int, dropout: float
    ) -> None:
        super().__init__()
        self.pos = nn.Embedding(max_len, emb_dim)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            emb_dim, heads, ff, dropout, batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(emb_dim), enable_nested_tensor=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        mask = nn.Transformer.generate_square_subsequent_mask(n, dtype=x.dtype)
        return self.blocks(self.drop(x + self.pos.weight[:n]), mask=mask, is_causal=True)


class SASRecBlock(nn.Module):
    """One SASRec block as in Kang & McAuley's code: the attention residual is added to the
    *normalised* queries and keys/values are not normalised, so it is not a standard pre-LN
    nn.TransformerEncoderLayer; point-wise feed-forward of width d with its own residual."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d, eps=1e-8)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(d, eps=1e-8)
        self.ff = nn.Sequential(
            nn.Linear(d, d), nn.Dropout(dropout), nn.ReLU(), nn.Linear(d, d), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.ln1(x)
        x = q + self.attn(q, x, x, attn_mask=mask, need_weights=False)[0]
        x = self.ln2(x)
        return x + self.ff(x)


class SASRecEncoder(nn.Module):
    """SASRec: scaled item embeddings + learned positions, causal attention blocks, final LN."""

    def __init__(self, d: int, heads: int, blocks: int, max_len: int, dropout: float) -> None:
        super().__init__()
        self.scale = math.sqrt(d)
        self.pos = nn.Embedding(max_len, d)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(d, heads, dropout) for _ in range(blocks))
        self.ln = nn.LayerNorm(d, eps=1e-8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        mask = torch.ones(n, n, dtype=torch.bool).triu(1)  # True: may not attend (the future)
        x = self.drop(x * self.scale + self.pos.weight[:n])
        for block in self.blocks:
            x = block(x, mask)
        return self.ln(x)


class SeqNet(nn.Module):
    """Item embedding -> encoder -> [state, user embedding] -> head -> one query vector per
    position; an item's score is query . out_item + bias_item (out = the item embedding when
    tied). User 0 is "unknown" (a zero vector, also used for user dropout in training)."""

    def __init__(
        self,
        n_items: int,
        n_users: int,
        emb_dim: int,
        user_dim: int,
        encoder: nn.Module,
        state_dim: int,
        mlp: tuple[int, ...] = (),
        dropout: float = 0.0,
        tied: bool = True,
        features: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.items = nn.Embedding(n_items + 1, emb_dim, padding_idx=0)
        # article features (n_features, n_items + 1; 0 = padding): a value's vector is added to
        # the vectors of all its articles, e.g. the colour variants of one product_code
        codes = np.zeros((0, n_items + 1), dtype=np.int64) if features is None else features
        self.register_buffer("codes", torch.from_numpy(codes.astype(np.int64)), persistent=False)
        self.features = nn.ModuleList(
            nn.Embedding(int(row.max()) + 1, emb_dim, padding_idx=0) for row in codes
        )
        self.users = nn.Embedding(n_users + 1, user_dim, padding_idx=0) if user_dim else None
        self.encoder = encoder
        layers: list[nn.Module] = []
        width = state_dim + user_dim
        for size in mlp:  # the thesis transformer's leaky-ReLU MLP
            layers += [nn.Linear(width, size), nn.LeakyReLU(), nn.Dropout(dropout)]
            width = size
        if layers or width != emb_dim:
            layers.append(nn.Linear(width, emb_dim))
        self.head = nn.Sequential(*layers)
        self.out = None if tied else nn.Embedding(n_items, emb_dim)
        self.bias = nn.Parameter(torch.zeros(n_items))
        for module in self.modules():  # items, users, outputs and positions alike (GPT-2's 0.02)
            if isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
                if module.padding_idx is not None:
                    module.weight.data[module.padding_idx] = 0

    def query(
        self, seq: torch.Tensor, users: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        """(N, emb_dim) queries after the prefixes ending at positions (rows, cols) of `seq`."""
        state = self.encoder(self.vectors(seq))[rows, cols]
        if self.users is not None:
            state = torch.cat([state, self.users(users[rows])], dim=1)
        return self.head(state)

    def vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """Input vectors of item tokens: the item embedding plus its feature embeddings."""
        out = self.items(tokens)
        for codes, emb in zip(self.codes, self.features, strict=True):
            out = out + emb(codes[tokens])
        return out

    def logits(self, query: torch.Tensor, cand: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of all items (or of the candidate items `cand`) for each query."""
        if self.out is None and len(self.features):  # tied, with features: compose the vectors
            n_items = self.bias.shape[0]
            weight = self.vectors(torch.arange(1, n_items + 1) if cand is None else cand + 1)
        else:
            weight = self.items.weight[1:] if self.out is None else self.out.weight
            weight = weight if cand is None else weight[cand]
        bias = self.bias if cand is None else self.bias[cand]
        return torch.addmm(bias, query, weight.T)


# ---------------------------------------------------------------------------------------------
# Training: Adam, one-cycle LR, batches of ~batch_size samples (a sample is a prefix and its next
# item; a sequence brings all its prefixes), full cross-entropy over the catalogue or sampled
# softmax, early stopping on validation HR@k.


@dataclass
class TrainData:
    """Token matrices for training: `seqs` (n, max_history + 1) right-padded sequences and their
    user tokens (index + 1); validation inputs (m, max_history), user tokens and next items."""

    seqs: np.ndarray
    users: np.ndarray
    valid_seqs: np.ndarray
    valid_users: np.ndarray
    valid_targets: np.ndarray


def _parts(counts: np.ndarray, n_items: int) -> list[np.ndarray]:
    """Split a batch's sequences into micro-batches whose full logit block fits
    torchutil.LOGITS_BUDGET."""
    per_part = block_rows(n_items)
    part_of = (np.cumsum(counts) - 1) // per_part
    return [np.flatnonzero(part_of == p) for p in np.unique(part_of)]


def _batch_loss(
    net: SeqNet, seqs: np.ndarray, users: torch.Tensor, cfg: Any, target_share: torch.Tensor
) -> float:
    """Forward and backward one batch (in micro-batches of bounded logit blocks, gradients
    accumulate); returns the mean loss per target position."""
    width = max(int((seqs > 0).sum(axis=1).max()), 2)
    tokens = torch.from_numpy(seqs[:, :width])
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    counts = (targets > 0).sum(dim=1).numpy()
    total = int(counts.sum())
    n_items = target_share.shape[0]
    cand, log_q = None, None
    if cfg.loss == "sampled":
        # in-batch positives plus shared uniform negatives (mixed negative sampling, Yang et al.
        # WWW 2020), with the logQ correction by each item's chance of being a candidate, so that
        # popular in-batch items are not over-penalised (Yi et al. RecSys 2019)
        noise = torch.randint(n_items, (cfg.negatives,))
        cand = torch.unique(torch.cat([targets[targets > 0] - 1, noise]))
        miss_noise = cfg.negatives * math.log1p(-1.0 / n_items)
        log_miss = total * torch.log1p(-target_share[cand].clamp(max=1 - 1e-7)) + miss_noise
        log_q = torch.log(-torch.expm1(log_miss))
    value = 0.0
    for part in _parts(counts, n_items if cand is None else len(cand)):
        idx = torch.from_numpy(part)
        part_targets = targets[idx]
        rows, cols = torch.nonzero(part_targets, as_tuple=True)
        target = part_targets[rows, cols] - 1
        query = net.query(inputs[idx], users[idx], rows, cols)
        if cand is None:
            logits = net.logits(query)
        else:
            logits = net.logits(query, cand) - log_q
            target = torch.searchsorted(cand, target)
        loss = F.cross_entropy(logits, target, reduction="sum") / total
        loss.backward()
        value += float(loss.detach())
    return value


@torch.no_grad()
def last_scores(net: SeqNet, seqs: np.ndarray, users: np.ndarray) -> torch.Tensor:
    """(n, n_items) scores after the last item of each right-padded token row (non-empty rows)."""
    width = max(int((seqs > 0).sum(axis=1).max()), 1)
    tokens = torch.from_numpy(seqs[:, :width])
    rows = torch.arange(len(seqs))
    cols = (tokens > 0).sum(dim=1) - 1
    return net.logits(net.query(tokens, torch.from_numpy(users), rows, cols))


@torch.no_grad()
def valid_hit_rate(net: SeqNet, data: TrainData, k: int) -> float:
    """The validation score: the share of validation next items in the top k over the whole
    catalogue (nothing excluded)."""
    net.eval()
    step = block_rows(net.bias.shape[0])
    hits = 0
    for s in range(0, len(data.valid_seqs), step):
        scores = last_scores(net, data.valid_seqs[s : s + step], data.valid_users[s : s + step])
        top = scores.topk(min(k, scores.shape[1]), dim=1).indices.numpy()
        hits += int((top == data.valid_targets[s : s + step, None]).any(axis=1).sum())
    return hits / max(len(data.valid_seqs), 1)


def _batches(counts: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Sequences grouped into batches of about `size` training samples (target positions), by
    length (random within a length) so that padding wastes little (7x less work on Beauty), in
    random order. A sequence longer than `size` is a batch of its own."""
    order = np.lexsort((rng.random(len(counts)), counts))
    group = np.cumsum(counts[order]) // size
    chunks = np.split(order, np.flatnonzero(np.diff(group)) + 1)
    return [chunks[i] for i in rng.permutation(len(chunks))]


def train(net: SeqNet, data: TrainData, cfg: Any) -> list[dict[str, float]]:
    """Fit `net` in place; with validation data, keep the weights of the best epoch (HR@k) and
    stop after `patience` epochs without improvement (torchutil.train_epochs). With
    `cfg.checkpoint` (a directory), resume a run of the same parameters and data saved there.
    Returns one log row per epoch."""
    counts = np.maximum((data.seqs > 0).sum(axis=1) - 1, 0)  # samples (targets) per sequence
    rng = np.random.default_rng(cfg.seed)
    steps = len(_batches(counts, cfg.batch_size, rng))  # the same every epoch
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=max(cfg.epochs * steps, 2), pct_start=cfg.warmup
    )
    targets = data.seqs[:, 1:][data.seqs[:, 1:] > 0] - 1
    share = np.bincount(targets, minlength=net.bias.shape[0]) / max(len(targets), 1)
    target_share = torch.from_numpy(share.astype(np.float32))
    users = torch.from_numpy(data.users)

    def epoch(_: int) -> float:
        loss = 0.0
        for idx in _batches(counts, cfg.batch_size, rng):
            keep = torch.rand(len(idx)) >= cfg.user_dropout
            opt.zero_grad(set_to_none=True)
            loss += _batch_loss(net, data.seqs[idx], users[idx] * keep, cfg, target_share)
            opt.step()
            sched.step()
        return loss / steps

    return train_epochs(
        net,
        epoch,
        (lambda: valid_hit_rate(net, data, cfg.valid_k)) if len(data.valid_seqs) else None,
        epochs=cfg.epochs,
        patience=cfg.patience,
        name=cfg.name,
        metric=f"valid_hr@{cfg.valid_k}",
        checkpoint=cfg.checkpoint,
        extra={"opt": opt, "sched": sched, "rng": rng},
        fingerprint=run_fingerprint(net, data, cfg) if cfg.checkpoint is not None else "",
    )


def run_fingerprint(net: SeqNet, data: TrainData, cfg: Any) -> str:
    """The identity of a training run (torchutil.fingerprint_of): the model and its parameters,
    the network's shapes and feature codes, and the training and validation arrays."""
    return fingerprint_of(
        cfg,
        net.codes.numpy(),
        data.seqs,
        data.users,
        data.valid_seqs,
        data.valid_users,
        data.valid_targets,
        shapes={k: list(v.shape) for k, v in net.state_dict().items()},
    )


# ---------------------------------------------------------------------------------------------
# The recommenders.


@dataclass
class SequenceModel:
    """Shared data preparation, training and serving of the sequence models (not registered)."""

    fallback: ClassVar[str] = (
        "decay (time-decayed popularity) for customers without purchases; a customer unknown to "
        "the user embedding but with a purchase history (recommend_history / recommend_with) is "
        "served from that sequence"
    )
    name: ClassVar[str]

    emb_dim: int = 64
    user_dim: int = 32
    max_history: int = 20
    dedupe: bool = True
    order: str = "true"
    dropout: float = 0.2
    tied: bool = True
    features: tuple[str, ...] | str = ()  # article columns: a sequence, or "a" / "a,b"
    loss: str = "full"
    negatives: int = 4096
    epochs: int = 30
    batch_size: int = 2048
    lr: float = 3e-3
    warmup: float = 0.1
    weight_decay: float = 0.0
    user_dropout: float = 0.1
    validate: bool = True
    patience: int = 3
    valid_k: int = 10
    valid_users: int = 10_000
    seed: int = 0
    threads: int = 1  # torch threads, at most torchutil.MAX_THREADS (2: shared machines)
    checkpoint: str | None = None  # a directory: save every epoch, resume an interrupted fit

    weights_: dict[str, np.ndarray] = field(default=None, init=False, repr=False)
    n_users_: int = field(default=None, init=False, repr=False)
    n_items_: int = field(default=None, init=False, repr=False)
    hist_indptr_: np.ndarray = field(default=None, init=False, repr=False)
    hist_items_: np.ndarray = field(default=None, init=False, repr=False)
    seen_: sp.csr_matrix = field(default=None, init=False, repr=False)
    pop_items_: np.ndarray = field(default=None, init=False, repr=False)
    pop_scores_: np.ndarray = field(default=None, init=False, repr=False)
    codes_: np.ndarray = field(default=None, init=False, repr=False)
    train_log_: list = field(default=None, init=False, repr=False)

    # ---- what differs per model ----------------------------------------------------------

    def encoder(self) -> tuple[nn.Module, int]:
        """The sequence encoder and the width of its states."""
        raise NotImplementedError

    def head(self) -> tuple[int, ...]:
        """Hidden sizes of the MLP between [state, user] and the query vector."""
        return ()

    # ---- fit -------------------------------------------------------------------------------

    def fit(self, data: Dataset) -> Self:
        self._check()
        indptr, items = self.sequences(data)
        self.n_users_, self.n_items_ = data.n_users, data.n_items
        self.hist_indptr_, self.hist_items_ = keep_last(indptr, items, self.max_history)
        self.seen_ = data.user_items(binary=True)
        self.pop_items_, self.pop_scores_ = popularity_fallback(data)
        self.codes_ = feature_codes(data, self.feature_names())
        prepared = self._train_data(indptr, items)
        with torch_session(self.threads, self.seed):
            net = self._build()
            self.train_log_ = train(net, prepared, self) if len(prepared.seqs) else []
        self.weights_ = to_numpy(net)
        self._net = (self.weights_, net.eval())
        return self

    def sequences(self, data: Dataset) -> tuple[np.ndarray, np.ndarray]:
        """The (indptr, items) sequences the model reads: repeats dropped in time order first
        (`dedupe`), then put in `order`, so that every order trains on the same purchases."""
        indptr, items, days = data.sequences()
        if self.dedupe:
            indptr, items, days = drop_repeats(indptr, items, days)
        return indptr, reorder(indptr, items, days, self.order, self.seed)

    def feature_names(self) -> tuple[str, ...]:
        """`features` as a tuple: a string (e.g. from the CLI) is one name or "a,b"."""
        names = self.features.split(",") if isinstance(self.features, str) else self.features
        return tuple(name.strip() for name in names if name.strip())

    def _check(self) -> None:
        if self.order not in ORDERS:
            raise ConfigError(f"{self.name}: order must be one of {', '.join(ORDERS)}")
        if self.loss not in LOSSES:
            raise ConfigError(f"{self.name}: loss must be one of {', '.join(LOSSES)}")
        if self.emb_dim < 1 or self.max_history < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"{self.name}: emb_dim, max_history, epochs, batch_size must be >= 1")

    def _train_data(self, indptr: np.ndarray, items: np.ndarray) -> TrainData:
        """Training sequences (last max_history + 1 items) and, with `validate`, the last item of
        up to `valid_users` customers (a seeded sample; all of them when there are fewer) held
        out as validation targets, never trained on (leave-last-out)."""
        lengths = np.diff(indptr)
        valid = np.flatnonzero(lengths >= 2) if self.validate else np.zeros(0, dtype=np.int64)
        if len(valid) > self.valid_users:
            pick = np.random.default_rng(self.seed).choice(len(valid), self.valid_users, False)
            valid = valid[np.sort(pick)]
        held = np.zeros(len(lengths), dtype=np.int64)
        held[valid] = 1
        if len(valid) and not (lengths - held >= 2).any():
            log.warning("%s: too little data to hold out validation items", self.name)
            valid, held = valid[:0], held * 0
        users = np.flatnonzero(lengths - held >= 2)
        return TrainData(
            seqs=tails(indptr, items, self.max_history + 1, held, rows=users),
            users=users.astype(np.int64) + 1,
            valid_seqs=tails(indptr, items, self.max_history, 1, rows=valid),
            valid_users=valid.astype(np.int64) + 1,
            valid_targets=items[indptr[valid + 1] - 1].astype(np.int64),
        )

    def _build(self) -> SeqNet:
        encoder, state_dim = self.encoder()
        return SeqNet(
            self.n_items_,
            self.n_users_,
            self.emb_dim,
            self.user_dim,
            encoder,
            state_dim,
            self.head(),
            self.dropout,
            self.tied,
            self.codes_,
        )

    def net(self) -> SeqNet:
        """The network, rebuilt lazily from `weights_` (e.g. after artifacts.load)."""
        cached = getattr(self, "_net", None)
        if cached is None or cached[0] is not self.weights_:
            with torch_session(self.threads, self.seed):
                net = self._build()
            self._net = cached = (self.weights_, load_weights(net, self.weights_))
        return cached[1]

    # ---- recommend -------------------------------------------------------------------------

    def recommend(self, users: np.ndarray, k: int, *, exclude_seen: bool = False) -> Recs:
        """Top k after each customer's fitted history; cold or unknown customers get `decay`."""
        return self.recommend_with(users, None, k, exclude_seen=exclude_seen)

    def recommend_with(
        self,
        users: np.ndarray,
        extra: list[np.ndarray] | None,
        k: int,
        *,
        exclude_seen: bool = False,
    ) -> Recs:
        """`recommend` with `extra[i]` (articles users[i] bought after the fit, oldest first)
        appended to the fitted history: real-time updates without refitting. An unknown
        customer (-1) with extra purchases is served from them with the "unknown" user vector."""
        users = np.asarray(users, dtype=np.int64)
        indptr, items = take_rows(self.hist_indptr_, self.hist_items_, users)
        new = np.zeros(len(items), dtype=bool)
        exclude = rows_of(self.seen_, users) if exclude_seen else None
        if extra is not None:
            indptr, items, new = append_rows((indptr, items), as_csr_lists(extra))
            if exclude_seen:
                exclude = exclude + extra_matrix(extra, self.n_items_)
        return self._recommend(indptr, items, new, users, k, exclude)

    def recommend_history(
        self,
        histories: list[np.ndarray],
        k: int,
        *,
        users: np.ndarray | None = None,
        exclude_seen: bool = False,
    ) -> Recs:
        """Top k after each given history (item indices, oldest first): a session, or the
        purchases of a customer the model has never seen. `users` (optional, -1 = unknown) adds
        the fitted user vectors; `exclude_seen` excludes the history's items. An empty history
        gets the popularity fallback."""
        n = len(histories)
        users = np.full(n, -1, np.int64) if users is None else np.asarray(users, np.int64)
        exclude = extra_matrix(list(histories), self.n_items_) if exclude_seen else None
        indptr, items = as_csr_lists(histories)
        return self._recommend(indptr, items, np.ones(len(items), dtype=bool), users, k, exclude)

    def _recommend(
        self,
        indptr: np.ndarray,
        items: np.ndarray,
        new: np.ndarray,
        users: np.ndarray,
        k: int,
        exclude: sp.csr_matrix | None,
    ) -> Recs:
        """Top k after each row of (indptr, items). `new` marks the purchases not seen at fit
        (in time order): only they are checked for repeats, since the fitted histories lost
        theirs before any reordering."""
        valid = (items >= 0) & (items < self.n_items_)
        if not valid.all():  # drop articles the model does not know
            indptr, items, new = keep_where(indptr, valid, items, new)
        if self.dedupe:
            indptr, items = keep_where(indptr, ~(repeats(indptr, items) & new), items)
        token_users = np.where((users >= 0) & (users < self.n_users_), users + 1, 0)

        def popular(rows: np.ndarray, excl: sp.csr_matrix | None) -> Recs:
            return rank_list(self.pop_items_, self.pop_scores_, len(rows), k, excl)

        def sequence(rows: np.ndarray, excl: sp.csr_matrix | None) -> Recs:
            tokens = tails(indptr, items, self.max_history, rows=rows)
            with torch_session(self.threads, self.seed):
                return top_k_scores(last_scores(self.net(), tokens, token_users[rows]), k, excl)

        def part(rows: np.ndarray) -> Recs:
            out = Recs(
                np.full((len(rows), k), -1, dtype=np.int32),
                np.full((len(rows), k), -np.inf, dtype=np.float32),
            )
            has = np.diff(indptr)[rows] > 0
            for pick, recs in ((~has, popular), (has, sequence)):
                where = np.flatnonzero(pick)
                if len(where):
                    sub = recs(rows[where], None if exclude is None else exclude[rows[where]])
                    out.items[where], out.scores[where] = sub.items, sub.scores
            return out

        return batched(np.arange(len(users)), part, batch=block_rows(self.n_items_))


def feature_codes(data: Dataset, columns: tuple[str, ...]) -> np.ndarray:
    """(len(columns), n_items + 1) int32 value codes of article columns (1.., 0 = padding);
    missing values share one code."""
    out = np.zeros((len(columns), data.n_items + 1), dtype=np.int32)
    for row, column in enumerate(columns):
        out[row, 1:] = np.unique(data.article_groups(column), return_inverse=True)[1].ravel() + 1
    return out


def top_k_scores(scores: torch.Tensor, k: int, exclude: sp.csr_matrix | None) -> Recs:
    """Top k of each row of a dense score tensor, best first; entries in `exclude` never appear.
    torch.topk instead of base.top_k_dense: about 8x faster on 105k H&M articles in a one-off
    measurement (numpy's argpartition and the copy dominated recommend)."""
    if exclude is not None and exclude.nnz:
        coo = exclude.tocoo()
        rows, cols = (torch.from_numpy(a.astype(np.int64)) for a in (coo.row, coo.col))
        scores[rows, cols] = -torch.inf
    values, items = scores.topk(min(k, scores.shape[1]), dim=1)
    values, items = values.numpy(), items.numpy()
    return first_k(items, values, np.isfinite(values), k)


@dataclass
class _NSRecurrent(SequenceModel):
    """Neural Sequencer: item embedding -> recurrent layers -> [state, user embedding] -> scores
    over the catalogue (thesis: emb 256, 3 x 512 units; `emb_dim=256, hidden=512, layers=3`)."""

    cell: ClassVar[str]
    hidden: int = 128
    layers: int = 1

    def encoder(self) -> tuple[nn.Module, int]:
        return RNNEncoder(self.cell, self.emb_dim, self.hidden, self.layers, self.dropout), (
            self.hidden
        )


@dataclass
class NSRNN(_NSRecurrent):
    __doc__ = _NSRecurrent.__doc__.replace("recurrent", "Elman RNN (tanh)")
    name: ClassVar[str] = "ns-rnn"
    cell: ClassVar[str] = "rnn"


@dataclass
class NSLSTM(_NSRecurrent):
    __doc__ = _NSRecurrent.__doc__.replace("recurrent", "LSTM")
    name: ClassVar[str] = "ns-lstm"
    cell: ClassVar[str] = "lstm"


@dataclass
class NSGRU(_NSRecurrent):
    __doc__ = _NSRecurrent.__doc__.replace("recurrent", "GRU")
    name: ClassVar[str] = "ns-gru"
    cell: ClassVar[str] = "gru"


@dataclass
class NSAttention(SequenceModel):
    """Neural Sequencer with attention: a GRU whose states attend causally over themselves
    (scaled dot product, NARM-style mix with the last state), then [state, user embedding] ->
    scores."""

    name: ClassVar[str] = "ns-attention"
    hidden: int = 128

    def encoder(self) -> tuple[nn.Module, int]:
        return AttentionEncoder(self.emb_dim, self.hidden, self.dropout), self.hidden


@dataclass
class NSTransformer(SequenceModel):
    """Neural Sequencer with a causal transformer encoder and a leaky-ReLU MLP after the user
    embedding (thesis: 8 heads, feed-forward 2048, MLP 1024-512-256, emb 256)."""

    name: ClassVar[str] = "ns-transformer"
    heads: int = 4
    layers: int = 2
    ff: int = 256
    mlp: tuple[int, ...] = (256,)

    def encoder(self) -> tuple[nn.Module, int]:
        if self.emb_dim % self.heads:
            raise ConfigError(f"{self.name}: emb_dim must be a multiple of heads")
        enc = TransformerEncoder(
            self.emb_dim, self.heads, self.layers, self.ff, self.max_history, self.dropout
        )
        return enc, self.emb_dim

    def head(self) -> tuple[int, ...]:
        return tuple(int(m) for m in self.mlp)


@dataclass
class SASRec(SequenceModel):
    """SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the last `max_history`
    items, scores = final state . item embedding (tied), trained with full cross-entropy over
    the catalogue. No user embedding by default, as in the paper (`user_dim` adds one)."""

    name: ClassVar[str] = "sasrec"
    user_dim: int = 0
    max_history: int = 50
    dropout: float = 0.5
    lr: float = 2e-3
    heads: int = 2
    blocks: int = 2

    def encoder(self) -> tuple[nn.Module, int]:
        if self.emb_dim % self.heads:
            raise ConfigError(f"{self.name}: emb_dim must be a multiple of heads")
        enc = SASRecEncoder(self.emb_dim, self.heads, self.blocks, self.max_history, self.dropout)
        return enc, self.emb_dim
