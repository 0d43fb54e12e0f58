"""SelaVPR++ GeM head (Lu et al., "SelaVPR++", T-PAMI 2025).

Patch grid [B, h, w, D] -> Linear1 D->D per token -> [B, D, h, w] -> L2 over channels per
location -> GeM (one learnable p, init 3, clamp 1e-6) -> Linear2 D->2048 (ViT-B) / 4096 (ViT-L)
-> L2. Child names (``aggregation`` = Sequential(L2Norm, GeM, Flatten), ``linear1``,
``linear2``) are those of the released checkpoints. ``location_norm=False`` puts an Identity
in place of the L2Norm (same state-dict keys): GeM then pools Linear1's output as it is.
:meth:`SelaGeMHead.describe` also pools vertical strips of the map (for the whitening).
"""
from __future__ import annotations

from torch import nn, Tensor

from vpr_core.model.config import HeadConfig
from vpr_core.model.layers import gem_pooling, pooled_codes, Tokens
from vpr_core.model.registry import Head, HEADS


@HEADS.register('gem')
class SelaGeMHead(Head):
    """Tokens -> [B, out_dim] unit-norm GeM descriptor."""

    def __init__(self, dim: int, out_dim: int, location_norm: bool = True) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.aggregation = gem_pooling(location_norm)
        self.linear1 = nn.Linear(dim, dim)
        self.linear2 = nn.Linear(dim, out_dim)

    @classmethod
    def from_config(cls, config: HeadConfig, dim: int) -> 'SelaGeMHead':
        out_dim = config.out_dim or (2048 if dim <= 768 else 4096)
        return cls(dim, out_dim, config.location_norm)

    def forward(self, tokens: Tokens) -> Tensor:
        return self.describe(tokens)[0]

    def describe(self, tokens: Tokens, strips: int = 0) -> tuple[Tensor, Tensor | None]:
        """(descriptor [B, out_dim], the same pooling of each of ``strips`` vertical strips
        [B, strips, out_dim] | None), both unit-norm; Linear1 runs once."""
        x = self.linear1(tokens.patch_grid()).permute(0, 3, 1, 2)
        return pooled_codes(x, self.aggregation, self.linear2, strips)
