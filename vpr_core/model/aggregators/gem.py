"""SelaVPR++ GeM head (Lu et al., "SelaVPR++", T-PAMI 2025).

Patch grid [B, h, w, D] -> Linear1 D->D per token -> [B, D, h, w] -> L2 over channels per
location -> GeM (one learnable p, init 3, clamp 1e-6) -> Linear2 D->2048 (ViT-B) / 4096 (ViT-L)
-> L2. Child names (``aggregation`` = Sequential(L2Norm, GeM, Flatten), ``linear1``,
``linear2``) are those of the released checkpoints.
"""
from __future__ import annotations

from torch import nn, Tensor
import torch.nn.functional as F

from vpr_core.model.config import HeadConfig
from vpr_core.model.layers import gem_pooling, Tokens
from vpr_core.model.registry import Head, HEADS


@HEADS.register('gem')
class SelaGeMHead(Head):
    """Tokens -> [B, out_dim] unit-norm GeM descriptor.

    ``pooling`` replaces the seeds' ``Sequential(L2Norm, GeM, Flatten)`` (None: the seeds');
    it must keep GeM at index 1 so the state-dict keys stay ``aggregation.1.p``.
    """

    def __init__(self, dim: int, out_dim: int, pooling: nn.Sequential | None = None) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.aggregation = pooling if pooling is not None else gem_pooling()
        self.linear1 = nn.Linear(dim, dim)
        self.linear2 = nn.Linear(dim, out_dim)

    @classmethod
    def from_config(cls, config: HeadConfig, dim: int, *,
                    pooling: nn.Sequential | None = None) -> 'SelaGeMHead':
        out_dim = config.out_dim or (2048 if dim <= 768 else 4096)
        return cls(dim, out_dim, pooling)

    def forward(self, tokens: Tokens) -> Tensor:
        return self.pool(self.feature_map(tokens))

    def feature_map(self, tokens: Tokens) -> Tensor:
        """Linear1 on every patch token: [B, D, h, w]."""
        return self.linear1(tokens.patch_grid()).permute(0, 3, 1, 2)

    def pool(self, feature_map: Tensor) -> Tensor:
        """[B, D, h, w] -> L2 per location, GeM, Linear2, L2: [B, out_dim]."""
        return F.normalize(self.linear2(self.aggregation(feature_map)), p=2, dim=-1)
