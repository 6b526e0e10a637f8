"""Vector quantisation with a learned codebook and straight-through gradients (VQ-VAE / VQGAN).

The taming-transformers ``VectorQuantizer2`` as GLARE's release builds it
(``code/models/modules/quantize.py``; codebook ``n_e × e_dim`` = 8192 × 3, β = 0.25,
``legacy=False``, no index remapping). Written by hand: no library in the environment
computes this exact quantiser (nearest code by ``|z|² + |e|² − 2 z·e``, the release's loss form).

For ``z: (B, e_dim, H, W)`` (channels first, as the VQGAN passes it):

* distances ``d[n, k] = |z_n|² + |e_k|² − 2 z_n·e_k`` over the ``N = B·H·W`` vectors ``z_n``;
  ``indices = argmin_k d`` (first minimum on ties);
* ``z_q = e[indices]``; loss (non-legacy, the release's) ``β·mean((sg(z_q) − z)²) + mean((z_q − sg(z))²)``,
  i.e. the codebook term at weight 1 and the commitment term at weight β; ``legacy=True`` puts β on
  the codebook term instead. Both means are over all elements; the forward value is ``(1 + β)·mse``;
* straight-through: the returned ``z_q = z + sg(z_q − z)``, so ∂z_q/∂z = I and the codebook is
  reached only through the loss.

Returns ``(z_q, loss, (None, None, indices))`` like the release (its perplexity and one-hot
slots are ``None``); ``indices`` is ``(N,)`` in (b, h, w) row-major order, or ``(B, H, W)`` with
``sane_index_shape=True``.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["VectorQuantizer"]


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser. ``z: (B, e_dim, H, W) → z_q: (B, e_dim, H, W)``, scalar loss, indices."""

    def __init__(self, n_e: int = 8192, e_dim: int = 3, beta: float = 0.25, legacy: bool = False,
                 sane_index_shape: bool = False) -> None:
        super().__init__()
        self.n_e, self.e_dim, self.beta = n_e, e_dim, beta
        self.legacy = legacy
        self.sane_index_shape = sane_index_shape
        self.embedding = nn.Embedding(n_e, e_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / n_e, 1.0 / n_e)  # the release's initialisation

    def nearest(self, z_flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of ``z_flat: (N, e_dim)`` → ``(N,)`` int64."""
        codebook = self.embedding.weight
        d = (z_flat.pow(2).sum(dim=1, keepdim=True) + codebook.pow(2).sum(dim=1)
             - 2 * torch.einsum("nd,kd->nk", z_flat, codebook))
        return torch.argmin(d, dim=1)

    def forward(self, z: torch.Tensor):
        b, c, h, w = z.shape
        if c != self.e_dim:
            raise ValueError(f"expected {self.e_dim} latent channels, got {c}")
        z_last = z.permute(0, 2, 3, 1).contiguous()  # (B, H, W, e_dim)
        indices = self.nearest(z_last.reshape(-1, self.e_dim))
        z_q = self.embedding(indices).view(z_last.shape)
        codebook_term = torch.mean((z_q - z_last.detach()) ** 2)
        commitment_term = torch.mean((z_q.detach() - z_last) ** 2)
        if self.legacy:
            loss = commitment_term + self.beta * codebook_term
        else:
            loss = self.beta * commitment_term + codebook_term
        z_q = z_last + (z_q - z_last).detach()  # straight-through estimator
        z_q = z_q.permute(0, 3, 1, 2).contiguous()
        if self.sane_index_shape:
            indices = indices.view(b, h, w)
        return z_q, loss, (None, None, indices)

    def get_codebook_entry(self, indices: torch.Tensor, shape: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        """Code vectors for ``indices``; with ``shape = (B, H, W, e_dim)`` returned as ``(B, e_dim, H, W)``."""
        z_q = self.embedding(indices.reshape(-1))
        if shape is not None:
            z_q = z_q.view(shape).permute(0, 3, 1, 2).contiguous()
        return z_q
