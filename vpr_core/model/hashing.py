"""Deep hashing branch of SelaVPR++ (Lu et al., T-PAMI 2025, "SelaVPR++").

The hashing stream's tokens (its own adapter stream when adapters are MulConv) go through
Linear3 D->D per token, L2 over channels per location, its own GeM, Linear4 D->bits and L2 to a
continuous code z; b = sign(z) with 0 -> +1 and a straight-through identity gradient.
:meth:`HashingHead.describe` also pools vertical strips of the map (for the whitening).
"""
from __future__ import annotations

import torch
from torch import nn, Tensor

from vpr_core.model.layers import gem_pooling, pooled_codes, Tokens


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
    carry the names of the released checkpoints; ``location_norm=False`` puts an Identity in
    the L2Norm's place, as in the GeM float head.
    """

    def __init__(self, dim: int, bits: int, location_norm: bool = True) -> None:
        super().__init__()
        self.bits = bits
        self.aggregation_hashing = gem_pooling(location_norm)
        self.linear3 = nn.Linear(dim, dim)
        self.linear4 = nn.Linear(dim, bits)

    def forward(self, tokens: Tokens) -> tuple[Tensor, Tensor]:
        z, b, _ = self.describe(tokens)
        return z, b

    def describe(self, tokens: Tokens,
                 strips: int = 0) -> tuple[Tensor, Tensor, Tensor | None]:
        """(z, b, the continuous code of each of ``strips`` vertical strips [B, strips, bits]
        unit-norm | None); Linear3 runs once."""
        x = self.linear3(tokens.patch_grid()).permute(0, 3, 1, 2)
        z, parts = pooled_codes(x, self.aggregation_hashing, self.linear4, strips)
        return z, sign_ste(z), parts
