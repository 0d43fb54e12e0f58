"""Deep hashing branch of SelaVPR++ (Lu et al., T-PAMI 2025, "SelaVPR++").

The hashing stream's tokens (its own adapter stream when adapters are MulConv) go through
Linear3 D->D per token, L2 over channels per location, its own GeM, Linear4 D->bits and L2 to a
continuous code z; b = sign(z) with 0 -> +1 and a straight-through identity gradient.
"""
from __future__ import annotations

import torch
from torch import nn, Tensor
import torch.nn.functional as F

from vpr_core.model.layers import gem_pooling, Tokens


def binarize(z: Tensor) -> Tensor:
    """Exact +1 where z >= 0 and -1 elsewhere, in z's dtype."""
    return (z >= 0).to(z.dtype) * 2 - 1


class STEBinary(torch.autograd.Function):
    """sign with 0 -> +1 forward; the gradient passes through unchanged (no clipping)."""

    @staticmethod
    def forward(ctx, z: Tensor) -> Tensor:
        return binarize(z)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> Tensor:
        return grad_output


def sign_ste(z: Tensor) -> Tensor:
    """[B, bits] -> [B, bits] in {-1, +1}; straight-through when autograd is recording."""
    if torch.is_grad_enabled() and z.requires_grad:
        return STEBinary.apply(z)
    return binarize(z)


class HashingHead(nn.Module):
    """Tokens -> (z [B, bits] unit norm, b [B, bits] in {-1, +1}).

    Children ``aggregation_hashing`` (Sequential L2Norm, GeM, Flatten), ``linear3``, ``linear4``
    carry the names of the released checkpoints; ``pooling`` replaces the seeds' pooling as in
    :class:`~vpr_core.model.aggregators.gem.SelaGeMHead` (None: the seeds').
    """

    def __init__(self, dim: int, bits: int, pooling: nn.Sequential | None = None) -> None:
        super().__init__()
        self.bits = bits
        self.aggregation_hashing = pooling if pooling is not None else gem_pooling()
        self.linear3 = nn.Linear(dim, dim)
        self.linear4 = nn.Linear(dim, bits)

    def forward(self, tokens: Tokens) -> tuple[Tensor, Tensor]:
        z = self.pool(self.feature_map(tokens))
        return z, sign_ste(z)

    def feature_map(self, tokens: Tokens) -> Tensor:
        """Linear3 on every patch token: [B, D, h, w]."""
        return self.linear3(tokens.patch_grid()).permute(0, 3, 1, 2)

    def pool(self, feature_map: Tensor) -> Tensor:
        """[B, D, h, w] -> L2 per location, GeM, Linear4, L2: continuous code z [B, bits]."""
        return F.normalize(self.linear4(self.aggregation_hashing(feature_map)), p=2, dim=-1)
