"""cvae: a variational autoencoder of purchase histories conditioned on the customer's k-modes
segment (Mult-VAE, Liang et al. 2018, with a condition as in a conditional VAE, Sohn et al. 2015).

Input: a customer's binary purchase vector over the `n_items` most bought articles of the
training period (all articles when None), L2-normalised with input dropout; the first layer is an
EmbeddingBag over the bought columns, so the input side costs O(purchases), not O(catalogue).
Condition: the one-hot segment of a `Segments` model fitted inside `fit`, fed to the encoder and
the decoder. Loss: multinomial log-likelihood of the purchases under softmax(decoder) (it cannot
win by predicting all zeros on a very sparse matrix) plus beta x KL, beta annealed linearly from 0
to `anneal_cap`. Serving decodes the mean code of the customer's history with their segment; a
customer without history but with attributes is served the decoded prior of their segment (the
mean of softmax(decoder(z, segment)) over `prior_samples` draws z ~ N(0, I)); everything is
filled with time-decayed popularity. `conditional=False` is the same network without the
condition (cold customers then get popularity), so the value of the condition is measurable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from fashionrec.data.dataset import Dataset
from fashionrec.errors import ConfigError
from fashionrec.models.base import (
    Recs,
    batched_with,
    fill,
    params_of,
    popularity_fallback,
    rank_list,
    rows_of,
    seen_with,
    top_k_dense,
)
from fashionrec.models.segments import Segments
from fashionrec.models.torchutil import (
    block_rows,
    fingerprint_of,
    load_weights,
    recall_at,
    to_numpy,
    torch_session,
    train_epochs,
)

# the Segments state that `assign` needs (the per-customer arrays are kept apart)
SEGMENT_STATE = ("source_", "features_", "numeric_", "levels_", "edges_", "modes_", "centres_")
SEGMENT_STATE += ("scale_", "gamma_")


# ---------------------------------------------------------------------------------------------
# The network.


class CVAENet(nn.Module):
    """[bag of bought columns] -> tanh(hidden (+ segment)) -> (mu, logvar); [z, segment] ->
    tanh(hidden) -> logits over the columns. `n_cond` = 0 drops the condition."""

    def __init__(self, n_cols: int, n_cond: int, hidden: int, latent: int) -> None:
        super().__init__()
        self.n_cond = n_cond
        self.inp = nn.EmbeddingBag(n_cols, hidden, mode="sum")  # sparse x @ W
        self.inp_bias = nn.Parameter(torch.zeros(hidden))
        self.cond = nn.Linear(n_cond, hidden, bias=False) if n_cond else None
        self.enc = nn.Linear(hidden, 2 * latent)
        self.dec = nn.Sequential(
            nn.Linear(latent + n_cond, hidden), nn.Tanh(), nn.Linear(hidden, n_cols)
        )
        nn.init.xavier_uniform_(self.inp.weight)

    def encode(self, bag: tuple[torch.Tensor, ...], cond: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(mu, logvar) of a batch given as EmbeddingBag (indices, offsets, weights)."""
        idx, offsets, weights = bag
        h = self.inp(idx, offsets, per_sample_weights=weights) + self.inp_bias
        if self.cond is not None:
            h = h + self.cond(cond)
        mu, logvar = self.enc(torch.tanh(h)).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Logits over the columns."""
        return self.dec(torch.cat([z, cond], dim=1) if self.n_cond else z)


def bag(rows: sp.csr_matrix, dropout: float = 0.0) -> tuple[torch.Tensor, ...]:
    """EmbeddingBag inputs of binary CSR rows: each row L2-normalised (weight 1 / sqrt(n)), then
    each entry dropped with probability `dropout` (the rest scaled by 1 / (1 - dropout))."""
    lengths = np.diff(rows.indptr)
    weights = np.repeat(1.0 / np.sqrt(np.maximum(lengths, 1)), lengths).astype(np.float32)
    w = torch.from_numpy(weights)
    if dropout > 0:
        w = w * (torch.rand(len(w)) >= dropout) / (1.0 - dropout)
    return (
        torch.from_numpy(rows.indices.astype(np.int64)),
        torch.from_numpy(rows.indptr[:-1].astype(np.int64)),
        w,
    )


def one_hot(segments: np.ndarray, n_cond: int) -> torch.Tensor:
    """(n, n_cond) one-hot segments; a zero row for -1 (no attributes)."""
    out = torch.zeros(len(segments), n_cond)
    known = np.flatnonzero(segments >= 0)
    out[known, segments[known]] = 1.0
    return out


# ---------------------------------------------------------------------------------------------
# The recommender.


@dataclass
class CVAE:
    """Conditional Mult-VAE over the `n_items` most bought articles, conditioned on the k-modes
    segment (`n_segments`, `segment_source`: see `segments`); input dropout `dropout`, KL weight
    annealed to `anneal_cap` over `anneal_epochs`, early stopping on the recall@`valid_k` of each
    validation customer's last purchase day (never trained on). `half_life` weights the
    reconstructed purchases by recency (0.5 ** (age_days / half_life), repeats adding up; the
    input stays binary); None gives the binary target of the paper."""

    name: ClassVar[str] = "cvae"
    fallback: ClassVar[str] = (
        "customers without history (in the modelled articles) but with a segment: the decoded "
        "prior of their segment; unknown customers and customers without a segment: decay "
        "(time-decayed popularity), which also fills every list"
    )
    cold_start_by_attributes: ClassVar[bool] = True

    n_items: int | None = 4000
    conditional: bool = True
    n_segments: int = 8
    segment_source: str = "auto"
    hidden: int = 256
    latent: int = 64
    dropout: float = 0.5
    half_life: float | None = 30.0
    anneal_cap: float = 0.2
    anneal_epochs: int = 10
    epochs: int = 20
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 0.0
    validate: bool = True
    patience: int = 3
    valid_users: int = 5000
    valid_k: int = 20
    prior_samples: int = 64
    fill_half_life: float = 7.0
    seed: int = 0
    threads: int = 1  # torch threads, at most torchutil.MAX_THREADS (2: shared machines)
    checkpoint: str | None = None  # a directory: save every epoch, resume an interrupted fit

    weights_: dict[str, np.ndarray] = field(default=None, init=False, repr=False)
    columns_: np.ndarray = field(default=None, init=False, repr=False)
    inputs_: sp.csr_matrix = field(default=None, init=False, repr=False)
    segments_: np.ndarray = field(default=None, init=False, repr=False)
    n_cond_: int = field(default=None, init=False, repr=False)
    segment_state_: dict = field(default=None, init=False, repr=False)
    prior_: np.ndarray = field(default=None, init=False, repr=False)
    seen_: sp.csr_matrix = field(default=None, init=False, repr=False)
    fill_items_: np.ndarray = field(default=None, init=False, repr=False)
    fill_scores_: np.ndarray = field(default=None, init=False, repr=False)
    train_log_: list = field(default=None, init=False, repr=False)

    # ---- fit -------------------------------------------------------------------------------

    def fit(self, data: Dataset) -> Self:
        if self.hidden < 1 or self.latent < 1 or self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("cvae: hidden, latent, epochs and batch_size must be at least 1")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"cvae: dropout must be in [0, 1), not {self.dropout}")
        self.seen_ = data.user_items(binary=True)
        self.fill_items_, self.fill_scores_ = popularity_fallback(data, self.fill_half_life)
        self._fit_segments(data)
        pop = data.item_popularity()
        order = np.lexsort((np.arange(len(pop)), -pop))
        n_sold = int((pop > 0).sum())
        n_cols = n_sold if self.n_items is None else min(self.n_items, n_sold)
        self.columns_ = np.sort(order[: max(n_cols, 1)]).astype(np.int32)
        self.inputs_ = sp.csr_matrix(self.seen_[:, self.columns_])
        inputs, targets, valid, valid_out = self._train_data(data)
        with torch_session(self.threads, self.seed):
            net = CVAENet(len(self.columns_), self.n_cond_, self.hidden, self.latent)
            self.train_log_ = self._train(net, inputs, targets, valid, valid_out)
            self.prior_ = self._prior(net)
        self.weights_ = to_numpy(net)
        self._net = (self.weights_, net)
        return self

    def _fit_segments(self, data: Dataset) -> None:
        """The k-modes segments the network is conditioned on (none when not `conditional`)."""
        if not self.conditional:
            self.segments_, self.n_cond_, self.segment_state_ = None, 0, None
            return
        seg = Segments(n_segments=self.n_segments, source=self.segment_source, seed=self.seed)
        seg.fit(data)
        self.segments_ = seg.labels_.astype(np.int32)
        self.n_cond_ = len(seg.modes_)
        self.segment_state_ = {"params": params_of(seg)} | {
            key: _jsonable(getattr(seg, key)) for key in SEGMENT_STATE
        }
        self._segments = (self.segment_state_, seg)

    def _train_data(self, data: Dataset) -> tuple[Any, ...]:
        """Training inputs (binary) and targets (binary or recency-weighted), both (n_users,
        n_cols); validation customers (up to `valid_users` and a tenth of the buyers, among those
        with purchases on two or more days; their last day is held out) and their last-day
        purchases (binary, one row each)."""
        col_of = np.full(data.n_items, -1, dtype=np.int64)
        col_of[self.columns_] = np.arange(len(self.columns_))
        tx = data.transactions
        cols = col_of[tx["item"].to_numpy()]
        keep = cols >= 0
        users, cols = tx["user"].to_numpy()[keep].astype(np.int64), cols[keep]
        days = tx["t_dat"].cast(pl.Int32).to_numpy()[keep].astype(np.int64)
        weights = (
            np.ones(len(cols), dtype=np.float32)
            if self.half_life is None
            else data.decay(self.half_life)[keep]
        )
        last = np.full(data.n_users, np.iinfo(np.int64).min)
        np.maximum.at(last, users, days)
        first = np.full(data.n_users, np.iinfo(np.int64).max)
        np.minimum.at(first, users, days)
        valid = np.flatnonzero(first < last) if self.validate else np.zeros(0, dtype=np.int64)
        n_valid = min(self.valid_users, len(np.unique(users)) // 10)  # at most a tenth
        if len(valid) > n_valid:
            rng = np.random.default_rng(self.seed)
            valid = np.sort(rng.choice(valid, n_valid, replace=False))
        is_valid = np.zeros(data.n_users, dtype=bool)
        is_valid[valid] = True
        held = is_valid[users] & (days == last[users])
        shape = (data.n_users, len(self.columns_))

        def matrix(rows: np.ndarray, c: np.ndarray, w: np.ndarray, binary: bool) -> sp.csr_matrix:
            mat = sp.csr_matrix((w, (rows, c)), shape=shape, dtype=np.float32)
            mat.sum_duplicates()
            if binary:
                mat.data[:] = 1.0
            return mat

        train = ~held
        inputs = matrix(users[train], cols[train], weights[train], True)
        targets = matrix(users[train], cols[train], weights[train], self.half_life is None)
        valid_out = matrix(users[held], cols[held], weights[held], True)[valid]
        return inputs, targets, valid, valid_out

    def _train(
        self,
        net: CVAENet,
        inputs: sp.csr_matrix,
        targets: sp.csr_matrix,
        valid: np.ndarray,
        valid_out: sp.csr_matrix,
    ) -> list[dict[str, float]]:
        """Adam on nll + beta * KL over customers with inputs, in shuffled batches."""
        users = np.flatnonzero(np.diff(inputs.indptr))
        if not len(users):
            return []
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        rng = np.random.default_rng(self.seed)
        n_batches = -(-len(users) // self.batch_size)
        anneal_steps = max(1, self.anneal_epochs * n_batches)

        def epoch(i: int) -> float:
            step, total = i * n_batches, 0.0  # from the epoch: a resumed run anneals alike
            order = rng.permutation(users)
            for start in range(0, len(order), self.batch_size):
                batch = np.sort(order[start : start + self.batch_size])
                cond = self._condition(batch)
                mu, logvar = net.encode(bag(inputs[batch], self.dropout), cond)
                z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
                logp = F.log_softmax(net.decode(z, cond), dim=1)
                t = targets[batch].tocoo()
                rows, cols = (torch.from_numpy(a.astype(np.int64)) for a in (t.row, t.col))
                nll = -(logp[rows, cols] * torch.from_numpy(t.data)).sum() / len(batch)
                kl = -0.5 * torch.mean(torch.sum(1 + logvar - mu**2 - logvar.exp(), dim=1))
                loss = nll + self.anneal_cap * min(1.0, step / anneal_steps) * kl
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
                step += 1
            return total / n_batches

        def validate() -> float:
            tops = [
                torch.topk(
                    self._scores(net, inputs[part], part), min(self.valid_k, inputs.shape[1])
                ).indices.numpy()
                for part in np.array_split(valid, -(-len(valid) // block_rows(len(self.columns_))))
            ]
            return recall_at(np.concatenate(tops), valid_out)

        ident = ""  # the identity of the run, for its checkpoint
        if self.checkpoint is not None:
            arrays = [
                a for m in (inputs, targets, valid_out) for a in (m.indptr, m.indices, m.data)
            ]
            ident = fingerprint_of(self, *arrays, valid, self.segments_, self.columns_)
        return train_epochs(
            net,
            epoch,
            validate if len(valid) else None,
            epochs=self.epochs,
            patience=self.patience,
            name=self.name,
            checkpoint=self.checkpoint,
            extra={"opt": opt, "rng": rng},
            fingerprint=ident,
        )

    def _condition(self, users: np.ndarray) -> torch.Tensor:
        if not self.n_cond_:
            return torch.zeros(len(users), 0)
        return one_hot(self.segment_of(users), self.n_cond_)

    @torch.no_grad()
    def _scores(self, net: CVAENet, inputs: sp.csr_matrix, users: np.ndarray) -> torch.Tensor:
        """Softmax of the decoded mean code of each input row (customers `users`)."""
        cond = self._condition(users)
        mu, _ = net.encode(bag(sp.csr_matrix(inputs)), cond)
        return torch.softmax(net.decode(mu, cond), dim=1)

    @torch.no_grad()
    def _prior(self, net: CVAENet) -> np.ndarray | None:
        """(n_cond, n_cols) mean softmax(decoder(z, segment)) over prior samples z ~ N(0, I)."""
        if not self.n_cond_:
            return None
        z = torch.randn(self.prior_samples, self.latent)
        rows = [
            torch.softmax(net.decode(z, one_hot(np.full(len(z), s), self.n_cond_)), 1).mean(0)
            for s in range(self.n_cond_)
        ]
        return torch.stack(rows).numpy().astype(np.float32)

    # ---- lazily rebuilt parts ------------------------------------------------------------------

    def net(self) -> CVAENet:
        """The network, rebuilt from `weights_` (e.g. after artifacts.load)."""
        cached = getattr(self, "_net", None)
        if cached is None or cached[0] is not self.weights_:
            net = CVAENet(len(self.columns_), self.n_cond_, self.hidden, self.latent)
            self._net = cached = (self.weights_, load_weights(net, self.weights_))
        return cached[1]

    def segments(self) -> Segments:
        """The fitted segments (enough of them for `assign` and `options`)."""
        if not self.conditional:
            raise ConfigError("cvae: conditional=False has no segments")
        cached = getattr(self, "_segments", None)
        if cached is None or cached[0] is not self.segment_state_:
            state = self.segment_state_
            seg = Segments(**state["params"])
            for key in SEGMENT_STATE:
                setattr(seg, key, state[key])
            seg.modes_ = np.asarray(state["modes_"], dtype=str).reshape(self.n_cond_, -1)
            seg.centres_ = np.asarray(state["centres_"], dtype=np.float64).reshape(
                self.n_cond_, len(state["numeric_"])
            )
            seg.scale_ = np.asarray(state["scale_"], dtype=np.float64).reshape(2, -1)
            self._segments = cached = (state, seg)
        return cached[1]

    # ---- recommend -----------------------------------------------------------------------------

    def segment_of(self, users: np.ndarray) -> np.ndarray:
        """(n,) segment of user indices; -1 for unknown users, users without attributes, and
        everybody when not `conditional`."""
        users = np.asarray(users, dtype=np.int64)
        if self.segments_ is None:
            return np.full(len(users), -1, dtype=np.int32)
        known = (users >= 0) & (users < len(self.segments_))
        return np.where(known, self.segments_[np.where(known, users, 0)], -1).astype(np.int32)

    def recommend(self, users: np.ndarray, k: int, *, exclude_seen: bool = False) -> Recs:
        return self.recommend_with(users, None, k, exclude_seen=exclude_seen)

    def recommend_with(
        self,
        users: np.ndarray,
        extra: list[np.ndarray] | None,
        k: int,
        *,
        exclude_seen: bool = False,
    ) -> Recs:
        """`recommend`, with `extra[i]` (articles users[i] bought after the fit) added to the
        bag the encoder reads, so the code is inferred again at once (the VAE's own fold-in);
        an unknown customer with purchases is encoded from them, with no segment."""
        return batched_with(
            users,
            extra,
            self.seen_.shape[1],
            lambda u, new: self._serve(u, self.segment_of(u), k, exclude_seen, new),
            block_rows(len(self.columns_)),
        )

    def _serve(
        self,
        users: np.ndarray,
        segments: np.ndarray,
        k: int,
        exclude_seen: bool,
        new: sp.csr_matrix | None = None,
    ) -> Recs:
        """Decoded histories (plus `new` purchases), else decoded segment priors, filled with
        popularity."""
        inputs, seen = rows_of(self.inputs_, users), seen_with(rows_of(self.seen_, users), new)
        if new is not None:
            inputs = sp.csr_matrix(seen[:, self.columns_])
        has = np.diff(inputs.indptr) > 0
        scores = np.full((len(users), len(self.columns_)), -np.inf, dtype=np.float32)
        if has.any():
            with torch_session(self.threads, self.seed):
                scores[has] = self._scores(self.net(), inputs[has], users[has]).numpy()
        cold = ~has & (segments >= 0)
        if cold.any() and self.prior_ is not None:
            scores[cold] = self.prior_[segments[cold]]
        own = top_k_dense(scores, k, inputs if exclude_seen else None)
        own = Recs(np.where(own.items >= 0, self.columns_[own.items], -1), own.scores)
        exclude = seen if exclude_seen else None
        popular = rank_list(self.fill_items_, self.fill_scores_, len(users), k, exclude)
        return fill(own, popular, k)

    # ---- new customers -------------------------------------------------------------------------

    def options(self) -> dict[str, list[str] | str]:
        """What `assign` accepts (see Segments.options)."""
        return self.segments().options()

    def assign(self, attributes: dict[str, object]) -> int:
        """The segment of a customer described by `attributes` (see Segments.assign); -1 when
        none is given or the model is not conditional."""
        return self.segments().assign(attributes) if self.conditional else -1

    def recommend_attributes(self, attributes: dict[str, object], k: int) -> Recs:
        """(1, k) recommendations for a new customer: the decoded prior of their segment."""
        segment = np.array([self.assign(attributes)], dtype=np.int32)
        return self._serve(np.array([-1]), segment, k, False)


def _jsonable(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value
