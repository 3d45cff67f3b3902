"""The two encoders of :func:`morphst.tl.graph_encoder` and their training loop (torch, sparse edge lists).

- ``"contrastive"``: a one-layer graph convolution trained as deep graph infomax with a local summary and a
  reconstruction term, the idea of GraphST (Long et al., *Nat. Commun.* 2023; DGI: Veličković et al., ICLR 2019).
- ``"autoencoder"``: a graph attention autoencoder with tied weights and tied attention, the idea of STAGATE (Dong &
  Zhang, *Nat. Commun.* 2022).

A batch is one tile (see ``_encoder_graph``): its features and edges with self-loops, the symmetric-normalised edge
values (normalised on the whole graph) and the raw (morphology) edge weights. All messages are gathered along edges
and summed with ``index_add_``, so memory is ``O(n_edges × width)`` per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812


@dataclass
class Batch:
    """One tile on the device: features ``x`` (n, d); edges ``rows -> cols`` with self-loops; edge values."""

    x: torch.Tensor
    rows: torch.Tensor
    cols: torch.Tensor
    w_sym: torch.Tensor  # D^-1/2 (W + I) D^-1/2, degrees from the whole graph
    w_mean: torch.Tensor  # (W + I) row-normalised within the tile
    out: torch.Tensor  # positions (within the batch) whose embedding is kept at inference

    @property
    def n(self) -> int:
        """Observations in the batch."""
        return self.x.shape[0]


def propagate(values: torch.Tensor, h: torch.Tensor, b: Batch) -> torch.Tensor:
    """``out_i = Σ_j values_ij · h_j`` over the batch's edges ``i -> j``."""
    msg = h.index_select(0, b.cols) * values[:, None]
    return torch.zeros(b.n, h.shape[1], dtype=h.dtype, device=h.device).index_add_(0, b.rows, msg)


class Contrastive(nn.Module):
    """Graph convolution encoder + bilinear discriminator against a row-permuted corruption (DGI, local summary)."""

    def __init__(self, d_in: int, d_latent: int, rec_weight: float = 10.0):
        super().__init__()
        self.enc = nn.Linear(d_in, d_latent, bias=False)
        self.dec = nn.Linear(d_latent, d_in, bias=False)
        self.disc = nn.Bilinear(d_latent, d_latent, 1)
        self.rec_weight = rec_weight

    def embed(self, x: torch.Tensor, b: Batch) -> torch.Tensor:
        """The representation: ``Â X W`` (``Â`` the normalised graph with self-loops)."""
        return propagate(b.w_sym, self.enc(x), b)

    def loss(self, b: Batch, gen: torch.Generator) -> torch.Tensor:
        """Reconstruction MSE × ``rec_weight`` + the two discriminator cross-entropies (as GraphST)."""
        z = self.embed(b.x, b)
        perm = torch.randperm(b.n, generator=gen).to(b.x.device)
        h, ha = F.relu(z), F.relu(self.embed(b.x[perm], b))
        s = torch.sigmoid(F.normalize(propagate(b.w_mean, h, b), dim=1))
        sa = torch.sigmoid(F.normalize(propagate(b.w_mean, ha, b), dim=1))
        ones, zeros = torch.ones(b.n, device=z.device), torch.zeros(b.n, device=z.device)
        target = torch.cat([ones, zeros])
        d1 = torch.cat([self.disc(h, s), self.disc(ha, s)]).squeeze(1)
        d2 = torch.cat([self.disc(ha, sa), self.disc(h, sa)]).squeeze(1)
        bce = F.binary_cross_entropy_with_logits(d1, target) + F.binary_cross_entropy_with_logits(d2, target)
        rec = propagate(b.w_sym, self.dec(z), b)
        return self.rec_weight * F.mse_loss(rec, b.x) + bce


class Autoencoder(nn.Module):
    """Two-layer graph attention autoencoder; the decoder reuses the encoder's weights (transposed) and attention."""

    def __init__(self, d_in: int, d_hidden: int, d_latent: int):
        super().__init__()
        self.w1 = nn.Parameter(nn.init.xavier_uniform_(torch.empty(d_in, d_hidden)))
        self.w2 = nn.Parameter(nn.init.xavier_uniform_(torch.empty(d_hidden, d_latent)))
        self.att_src = nn.Parameter(nn.init.xavier_uniform_(torch.empty(d_hidden, 1)))
        self.att_dst = nn.Parameter(nn.init.xavier_uniform_(torch.empty(d_hidden, 1)))

    def attention(self, h: torch.Tensor, b: Batch) -> torch.Tensor:
        """``α_ij ∝ w_ij · exp(σ(a_s·h_i + a_d·h_j))`` over ``i``'s edges (``w`` the morphology edge weight)."""
        e = torch.sigmoid((h @ self.att_src).squeeze(1)[b.rows] + (h @ self.att_dst).squeeze(1)[b.cols])
        num = torch.exp(e) * b.w_mean  # w_mean is w row-normalised: the normaliser cancels in the softmax
        den = torch.zeros(b.n, dtype=h.dtype, device=h.device).index_add_(0, b.rows, num)
        return num / den[b.rows]

    def encode(self, x: torch.Tensor, b: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent ``z`` and the attention used (for the tied decoder)."""
        h = x @ self.w1
        alpha = self.attention(h, b)
        return F.elu(propagate(alpha, h, b)) @ self.w2, alpha

    def embed(self, x: torch.Tensor, b: Batch) -> torch.Tensor:
        """The representation: the latent layer."""
        return self.encode(x, b)[0]

    def loss(self, b: Batch, gen: torch.Generator) -> torch.Tensor:  # noqa: ARG002  (no randomness)
        """Reconstruction MSE of the features."""
        z, alpha = self.encode(b.x, b)
        h3 = F.elu(propagate(alpha, z @ self.w2.T, b))
        return F.mse_loss(h3 @ self.w1.T, b.x)


def train(
    model: nn.Module, batches: list[Batch], n_epochs: int, lr: float, weight_decay: float, gen: torch.Generator
) -> np.ndarray:
    """Adam over all tiles in a seeded order each epoch; returns the mean loss per epoch (weighted by tile size)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n_total = sum(b.n for b in batches)
    curve = np.empty(n_epochs)
    model.train()
    for ep in range(n_epochs):
        order = torch.randperm(len(batches), generator=gen).tolist() if len(batches) > 1 else [0]
        total = 0.0
        for i in order:
            opt.zero_grad(set_to_none=True)
            loss = model.loss(batches[i], gen)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * batches[i].n
        curve[ep] = total / n_total
    return curve


@torch.inference_mode()
def embed_all(model: nn.Module, batches, n_obs: int, index: list[np.ndarray]) -> np.ndarray:
    """Embed every inference batch (a tile and its one-hop halo; any iterable, built lazily) and keep the tile's own
    rows."""
    model.eval()
    out = None
    for b, idx in zip(batches, index, strict=True):
        z = model.embed(b.x, b)[b.out].float().cpu().numpy()
        if out is None:
            out = np.empty((n_obs, z.shape[1]), dtype=np.float32)
        out[idx] = z
    return out


__all__ = ["Autoencoder", "Batch", "Contrastive", "embed_all", "propagate", "train"]
