"""Bag-of-Queries head as configured in SelaVPR++ (Ali-bey et al., "BoQ: A Place is Worth a Bag
of Learnable Queries", CVPR 2024; Lu et al., "SelaVPR++", T-PAMI 2025).

Conv3x3 D->384 on the patch grid, LayerNorm over tokens, 2 blocks of (post-norm encoder layer on
the tokens; 64 learnable queries + self-attention, LayerNorm; cross-attention to the tokens,
LayerNorm), concatenated queries [B, 128, 384] -> Linear over the query axis 128->32 ->
flatten [B, 12288] -> L2. Child names follow the BoQ code (``aggregation.proj_c`` ...).
"""
from __future__ import annotations

import torch
from torch import nn, Tensor
import torch.nn.functional as F

from vpr_core.errors import ConfigError
from vpr_core.model.config import HeadConfig
from vpr_core.model.layers import Tokens
from vpr_core.model.registry import Head, HEADS


class BoQBlock(nn.Module):
    """One BoQ layer: [B, N, C] tokens -> (tokens [B, N, C], queries out [B, Q, C])."""

    def __init__(self, dim: int, num_queries: int, num_heads: int) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(
            d_model=dim, nhead=num_heads, dim_feedforward=4 * dim, batch_first=True, dropout=0.0)
        self.queries = nn.Parameter(torch.randn(1, num_queries, dim))
        self.self_attn = nn.MultiheadAttention(dim, num_heads=num_heads, batch_first=True)
        self.norm_q = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads=num_heads, batch_first=True)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self.encoder(x)
        q = self.queries.repeat(x.size(0), 1, 1)
        q = self.norm_q(q + self.self_attn(q, q, q)[0])
        out = self.cross_attn(q, x, x)[0]
        return x, self.norm_out(out)


class BoQ(nn.Module):
    """[B, D, h, w] -> [B, proj * row_dim] unit-norm descriptor."""

    def __init__(self, in_channels: int, proj_channels: int, num_queries: int, num_layers: int,
                 row_dim: int) -> None:
        super().__init__()
        self.proj_c = nn.Conv2d(in_channels, proj_channels, kernel_size=3, padding=1)
        self.norm_input = nn.LayerNorm(proj_channels)
        self.boqs = nn.ModuleList(BoQBlock(proj_channels, num_queries, proj_channels // 64)
                                  for _ in range(num_layers))
        self.fc = nn.Linear(num_layers * num_queries, row_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm_input(self.proj_c(x).flatten(2).permute(0, 2, 1))
        outs = []
        for block in self.boqs:
            x, out = block(x)
            outs.append(out)
        out = self.fc(torch.cat(outs, dim=1).permute(0, 2, 1))
        return F.normalize(out.flatten(1), p=2, dim=-1)


@HEADS.register('boq')
class BoQHead(Head):
    """Tokens -> [B, proj * row_dim] (12,288 with the SelaVPR++ settings)."""

    def __init__(self, dim: int, proj_channels: int = 384, num_queries: int = 64,
                 num_layers: int = 2, row_dim: int = 32) -> None:
        super().__init__()
        if proj_channels < 64 or proj_channels % (proj_channels // 64):
            raise ConfigError(f'head.boq_proj_channels {proj_channels}: needs >= 64 channels '
                              'divisible into heads of ~64 (e.g. 64, 128, 384)')
        self.out_dim = proj_channels * row_dim
        self.aggregation = BoQ(dim, proj_channels, num_queries, num_layers, row_dim)

    @classmethod
    def from_config(cls, config: HeadConfig, dim: int) -> 'BoQHead':
        return cls(dim, config.boq_proj_channels, config.boq_num_queries,
                   config.boq_num_layers, config.boq_row_dim)

    def forward(self, tokens: Tokens) -> Tensor:
        return F.normalize(self.aggregation(tokens.patch_map()), p=2, dim=-1)
