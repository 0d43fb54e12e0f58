"""The plain DINOv2 output: the CLS token after the final LayerNorm (Oquab et al., 2024)."""
from __future__ import annotations

from torch import Tensor

from vpr_core.model.config import HeadConfig
from vpr_core.model.layers import Tokens
from vpr_core.model.registry import Head, HEADS


@HEADS.register('cls')
class ClsTokenHead(Head):
    """Tokens -> CLS token [B, D], not normalised (what the official ``forward`` returns)."""

    normalized = False

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.out_dim = dim

    @classmethod
    def from_config(cls, config: HeadConfig, dim: int) -> 'ClsTokenHead':
        return cls(dim)

    def forward(self, tokens: Tokens) -> Tensor:
        return tokens.cls
