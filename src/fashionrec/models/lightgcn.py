"""lightgcn: graph collaborative filtering on the customer-article bipartite graph (LightGCN, He et
al. SIGIR 2020).

Every customer and article seen in training has an ego embedding; `layers` rounds of propagation
over the symmetric-normalised adjacency D^-1/2 A D^-1/2 (torch sparse CSR matmul, no weights, no
non-linearity) and the mean over layers 0..L give the final embeddings, and a score is their dot
product. Training: BPR in its softplus form, softplus(-(pos - neg), beta) (the H&M GNN project's
beta = 1.5), one uniformly sampled unbought negative per purchase, plus `weight_decay` times the
squared L2 norm of the batch's ego embeddings (LightGCN's own regulariser, not Adam's weight
decay); Adam; early stopping on the recall@`valid_k` of each validation customer's last purchase
(removed from the training graph). The final embeddings are propagated once more over the whole
training graph and kept as the state, so serving is a dot product; customers and articles unseen
in training have no embedding (popularity fills).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from fashionrec.data.dataset import Dataset
from fashionrec.errors import ConfigError
from fashionrec.models.base import (
    Recs,
    batched_with,
    built,
    fill,
    lookup,
    popularity_fallback,
    rank_list,
    rows_of,
    seen_with,
    top_k_dense,
)
from fashionrec.models.torchutil import (
    block_rows,
    fingerprint_of,
    recall_at,
    sparse_tensor,
    spmm,
    torch_session,
    train_epochs,
)

log = logging.getLogger(__name__)


class LightGCNNet(nn.Module):
    """Ego embeddings and parameter-free propagation over the normalised bipartite graph."""

    def __init__(self, n_users: int, n_items: int, factors: int) -> None:
        super().__init__()
        self.users = nn.Embedding(n_users, factors)
        self.items = nn.Embedding(n_items, factors)
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)

    def forward(
        self, graph: tuple[torch.Tensor, torch.Tensor], layers: int
    ) -> tuple[torch.Tensor, ...]:
        """Final (users, items) embeddings: the mean of layers 0..`layers` of e <- A_norm e;
        `graph` is (R_norm, R_norm^T), the user-item block of A_norm and its transpose."""
        every = self.propagate(graph, layers)
        return sum(u for u, _ in every) / (layers + 1), sum(i for _, i in every) / (layers + 1)

    def propagate(
        self, graph: tuple[torch.Tensor, torch.Tensor], layers: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(users, items) embeddings of layers 0..`layers` (0: the ego embeddings)."""
        r, rt = graph
        out = [(self.users.weight, self.items.weight)]
        for _ in range(layers):
            u, i = out[-1]
            out.append((spmm(r, rt, i), spmm(rt, r, u)))
        return out


def normalised(pairs: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor]:
    """(R_norm, R_norm^T) with R_norm = D_u^-1/2 R D_i^-1/2 for a binary (users x items) R: the
    off-diagonal blocks of the symmetric-normalised adjacency of the bipartite graph."""
    du = np.asarray(pairs.sum(axis=1)).ravel()
    di = np.asarray(pairs.sum(axis=0)).ravel()
    inv_u = np.divide(1.0, np.sqrt(du), out=np.zeros_like(du), where=du > 0)
    inv_i = np.divide(1.0, np.sqrt(di), out=np.zeros_like(di), where=di > 0)
    r = sp.csr_matrix(sp.diags(inv_u) @ pairs @ sp.diags(inv_i))
    return sparse_tensor(r), sparse_tensor(sp.csr_matrix(r.T))


@dataclass
class LightGCN:
    """LightGCN: `factors`-dimensional embeddings, `layers` propagation rounds, BPR with softplus
    `beta` plus `weight_decay` x the batch's ego embeddings' squared L2 norm, Adam (`lr`), `epochs`
    with early stopping (`patience`) on up to `valid_users` customers' last purchase."""

    name: ClassVar[str] = "lightgcn"
    fallback: ClassVar[str] = (
        "decay (time-decayed popularity) for customers without purchases in training and unknown "
        "ones; it also fills lists (articles unseen in training have no embedding)"
    )

    factors: int = 64
    layers: int = 3
    epochs: int = 50
    batch_size: int = 8192
    lr: float = 0.01
    weight_decay: float = 0.001
    beta: float = 1.5
    validate: bool = True
    patience: int = 5
    valid_users: int = 5000
    valid_k: int = 20
    fill_half_life: float = 7.0
    seed: int = 0
    threads: int = 1  # torch threads, at most torchutil.MAX_THREADS (2: shared machines)
    checkpoint: str | None = None  # a directory: save every epoch, resume an interrupted fit

    weights_: dict[str, np.ndarray] = field(default=None, init=False, repr=False)
    user_row_: np.ndarray = field(default=None, init=False, repr=False)
    items_: np.ndarray = field(default=None, init=False, repr=False)
    seen_: sp.csr_matrix = field(default=None, init=False, repr=False)
    fill_items_: np.ndarray = field(default=None, init=False, repr=False)
    fill_scores_: np.ndarray = field(default=None, init=False, repr=False)
    train_log_: list = field(default=None, init=False, repr=False)

    # ---- fit -------------------------------------------------------------------------------

    def fit(self, data: Dataset) -> Self:
        if min(self.factors, self.epochs, self.batch_size) < 1 or self.layers < 0:
            raise ConfigError("lightgcn: factors, epochs, batch_size >= 1 and layers >= 0")
        self.seen_ = data.user_items(binary=True)
        self.fill_items_, self.fill_scores_ = popularity_fallback(data, self.fill_half_life)
        users = np.flatnonzero(np.diff(self.seen_.indptr))
        self.items_ = np.flatnonzero(np.diff(self.seen_.tocsc().indptr)).astype(np.int32)
        self.user_row_ = np.full(data.n_users, -1, dtype=np.int32)
        self.user_row_[users] = np.arange(len(users))
        full = sp.csr_matrix(self.seen_[users][:, self.items_])
        train, valid, targets = self._holdout(data, full, users)
        with torch_session(self.threads, self.seed):
            net = LightGCNNet(len(users), len(self.items_), self.factors)
            self.train_log_ = self._train(net, train, valid, targets) if train.nnz else []
            with torch.no_grad():
                layers = net.propagate(normalised(full), self.layers)
                every = [(u.detach().numpy().copy(), i.detach().numpy().copy()) for u, i in layers]
        # the means of layers 0..L, and the articles' layers 0..L-1, which a customer's layers
        # 1..L are made of (fold_in)
        self._cache = {}  # serving-only structures (`built`)
        self.weights_ = {
            "users": sum(u for u, _ in every) / np.float32(self.layers + 1),
            "items": sum(i for _, i in every) / np.float32(self.layers + 1),
            "item_layers": np.stack([i for _, i in every])[:-1],
        }
        log.info("lightgcn: %d customers x %d articles, %d edges", *full.shape, full.nnz)
        return self

    def _holdout(
        self, data: Dataset, full: sp.csr_matrix, users: np.ndarray
    ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        """The training graph without the validation edges, the validation rows (up to
        `valid_users` and a tenth of the customers with two or more articles) and the column of
        each one's last purchased article."""
        empty = np.zeros(0, dtype=np.int64)
        if not self.validate:
            return full, empty, empty
        candidates = np.flatnonzero(np.diff(full.indptr) >= 2)
        n_valid = min(self.valid_users, len(users) // 10)
        if len(candidates) > n_valid:
            rng = np.random.default_rng(self.seed)
            candidates = np.sort(rng.choice(candidates, n_valid, replace=False))
        if not len(candidates):
            return full, empty, empty
        tx = data.transactions
        last_row = np.full(data.n_users, -1, dtype=np.int64)  # the rows are in time order
        np.maximum.at(last_row, tx["user"].to_numpy(), np.arange(tx.height))
        last_item = tx["item"].to_numpy()[last_row[users[candidates]]]
        col_of = np.full(data.n_items, -1, dtype=np.int64)
        col_of[self.items_] = np.arange(len(self.items_))
        targets = col_of[last_item]
        held = sp.csr_matrix(
            (np.ones(len(candidates), dtype=np.float32), (candidates, targets)), shape=full.shape
        )
        train = sp.csr_matrix(full - held)
        train.eliminate_zeros()
        return train, candidates, targets

    def _train(
        self, net: LightGCNNet, train: sp.csr_matrix, valid: np.ndarray, targets: np.ndarray
    ) -> list[dict[str, float]]:
        """BPR over shuffled training edges, one sampled negative each, full propagation per
        batch."""
        graph = normalised(train)
        coo = train.tocoo()
        pos_u, pos_i = coo.row.astype(np.int64), coo.col.astype(np.int64)
        n_items = train.shape[1]
        keys = np.sort(pos_u * n_items + pos_i)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr)
        rng = np.random.default_rng(self.seed)
        n_batches = -(-len(pos_u) // self.batch_size)

        def epoch(_: int) -> float:
            total = 0.0
            order = rng.permutation(len(pos_u))
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                u, i = pos_u[idx], pos_i[idx]
                j = negatives(u, keys, n_items, rng)
                tu, ti, tj = (torch.from_numpy(x) for x in (u, i, j))
                emb_u, emb_i = net(graph, self.layers)
                eu = emb_u[tu]
                pos = (eu * emb_i[ti]).sum(1)
                neg = (eu * emb_i[tj]).sum(1)
                ego = net.users.weight[tu], net.items.weight[ti], net.items.weight[tj]
                reg = sum(e.pow(2).sum() for e in ego) / (2 * len(u))
                loss = F.softplus(-(pos - neg), beta=self.beta).mean() + self.weight_decay * reg
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach())
            return total / n_batches

        def validate() -> float:
            emb_u, emb_i = net(graph, self.layers)
            truth = sp.csr_matrix(  # column n_items: the -1 padding, never relevant
                (np.ones(len(valid), dtype=np.float32), (np.arange(len(valid)), targets)),
                shape=(len(valid), n_items + 1),
            )
            step = block_rows(n_items)
            tops = []
            for s in range(0, len(valid), step):
                rows = valid[s : s + step]
                scores = emb_u[torch.from_numpy(rows)] @ emb_i.T
                recs = top_k_dense(scores.numpy(), self.valid_k, train[rows])
                tops.append(recs.items)
            top = np.concatenate(tops).astype(np.int64)
            return recall_at(np.where(top >= 0, top, n_items), truth)

        ident = ""  # the identity of the run, for its checkpoint
        if self.checkpoint is not None:
            arrays = (train.indptr, train.indices, train.data, valid, targets)
            ident = fingerprint_of(self, *arrays, shape=train.shape)
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

    # ---- recommend -------------------------------------------------------------------------

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
        customer's neighbourhood in the graph (`fold_in`), so an unknown customer with purchases
        gets a list too. An artifact without the articles' layers ignores `extra`."""
        return batched_with(
            users,
            extra,
            self.seen_.shape[1],
            lambda u, new: self._serve(u, k, exclude_seen, new),
            block_rows(len(self.items_)),
        )

    def _serve(
        self, users: np.ndarray, k: int, exclude_seen: bool, new: sp.csr_matrix | None = None
    ) -> Recs:
        known = (users >= 0) & (users < len(self.user_row_))
        rows = np.where(known, self.user_row_[np.where(known, users, 0)], -1)
        has = rows >= 0
        emb_u, emb_i = self.weights_["users"], self.weights_["items"]
        vectors = np.zeros((len(users), emb_u.shape[1]), np.float32)
        vectors[has] = emb_u[rows[has]]
        seen = seen_with(rows_of(self.seen_, users), new)
        if new is not None and new.nnz and "item_layers" in self.weights_:
            fresh = np.flatnonzero(np.diff(new.indptr) > 0)
            vectors[fresh] = self.fold_in(seen[fresh], rows[fresh])
            has[fresh] = True
        scores = np.full((len(users), len(self.items_)), -np.inf, dtype=np.float32)
        scores[has] = vectors[has] @ emb_i.T
        exclude = None
        if exclude_seen:
            exclude = sp.csr_matrix(seen[:, self.items_])
        own = top_k_dense(scores, k, exclude)
        own = Recs(np.where(own.items >= 0, self.items_[own.items], -1), own.scores)
        # dot products may be negative: shift each row so that its scores are >= 0 for `fill`
        low = np.where(own.items >= 0, own.scores, np.inf).min(axis=1, keepdims=True)
        shifted = np.where(own.items >= 0, own.scores - np.minimum(low, 0), own.scores)
        exclude = seen if exclude_seen else None
        popular = rank_list(self.fill_items_, self.fill_scores_, len(users), k, exclude)
        return fill(Recs(own.items, shifted.astype(np.float32)), popular, k)

    def fold_in(self, bought: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
        """Final embeddings of customers whose bought articles are now `bought` (rows of flags
        over all articles; `rows`: their fitted embedding rows, -1 for none), the articles as
        fitted. A customer's layer k + 1 is the sum over their articles i of the article's layer
        k / sqrt(d_u d_i) (d_i: the article's fitted degree), and the final embedding the mean of
        layers 0..L; the ego (layer 0) is what the fitted final embedding and the fitted
        articles imply, and zero for a customer without them."""
        layers = self.weights_["item_layers"]

        def inv_sqrt_degree() -> np.ndarray:
            degree = np.asarray(self.seen_[:, self.items_].sum(axis=0)).ravel()
            inv = np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0)
            return inv.astype(np.float32)

        inv_i = built(self, "inv_sqrt_degree", inv_sqrt_degree)

        def propagated(mat: sp.csr_matrix) -> np.ndarray:
            """The sum of layers 1..L of customers who bought the articles of `mat`'s rows."""
            flags = sp.csr_matrix(mat[:, self.items_] > 0, dtype=np.float32)
            d_u = np.asarray(flags.sum(axis=1)).ravel()
            inv_u = np.divide(1.0, np.sqrt(d_u), out=np.zeros_like(d_u), where=d_u > 0)
            norm = sp.csr_matrix(sp.diags(inv_u) @ flags @ sp.diags(inv_i))
            total = np.zeros((mat.shape[0], layers.shape[2]))
            for layer in layers:
                total += norm @ layer
            return total

        ego = np.zeros((len(rows), layers.shape[2]))
        fitted = np.flatnonzero(rows >= 0)
        if len(fitted):
            users = np.flatnonzero(self.user_row_ >= 0)[rows[fitted]]
            final = self.weights_["users"][rows[fitted]].astype(np.float64)
            ego[fitted] = (len(layers) + 1) * final - propagated(self.seen_[users])
        return ((ego + propagated(bought)) / (len(layers) + 1)).astype(np.float32)


def negatives(
    users: np.ndarray, keys: np.ndarray, n_items: int, rng: np.random.Generator, tries: int = 5
) -> np.ndarray:
    """One uniformly drawn article per user that the user has not bought (sorted `keys` are the
    bought user * n_items + item pairs); after `tries` redraws a bought one may remain."""
    neg = rng.integers(n_items, size=len(users))
    for _ in range(tries):
        bad = np.flatnonzero(lookup(keys, users * n_items + neg) >= 0)
        if not len(bad):
            break
        neg[bad] = rng.integers(n_items, size=len(bad))
    return neg
