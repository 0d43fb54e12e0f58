"""HAM-VPR head (wlh-coder/HAM-VPR: "HAM-VPR", attention-mask-guided GeM).

A mini attention U-Net predicts a soft mask from the patch map: e = conv1x1(D->256)(x);
alpha = sigmoid(W_g e + W_x e) (two 1x1 convs 256->1 on the same e); mask =
sigmoid(conv1x1(256->1)(e * alpha)), clamped to [1e-6, 1 - 1e-6]. AMG-GeM pools with a
per-channel exponent p (init 3) over features clamped to >= 1e-6:
out_c = (sum m x_c^p_c / (sum m + 1e-6))^(1 / p_c), then L2 -> D (1,024 on ViT-L).
The sub-module names inside ``attention_unet`` follow the published equations; HAM-VPR ships no
weights, so they could not be checked against a released file.
"""
from __future__ import annotations

import torch
from torch import nn, Tensor
import torch.nn.functional as F

from vpr_core.model.config import HeadConfig
from vpr_core.model.layers import Tokens
from vpr_core.model.registry import Head, HEADS


class MiniAttentionUNet(nn.Module):
    """[B, D, h, w] -> mask [B, 1, h, w] in (0, 1)."""

    def __init__(self, in_channels: int = 1024, mid_channels: int = 256) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, mid_channels, 1)
        self.W_g = nn.Conv2d(mid_channels, 1, 1)
        self.W_x = nn.Conv2d(mid_channels, 1, 1)
        self.conv_out = nn.Conv2d(mid_channels, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        e = self.conv_in(x)
        gate = torch.sigmoid(self.W_g(e) + self.W_x(e))
        return torch.sigmoid(self.conv_out(e * gate))


class AMGGeM(nn.Module):
    """Mask-weighted GeM with a learnable exponent per channel: ([B, C, h, w], [B, 1, h, w])
    -> [B, C]."""

    def __init__(self, channels: int, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.p = nn.Parameter(torch.ones(channels) * p)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        mask = mask.clamp(min=self.eps)
        p = self.p.view(1, -1, 1, 1)
        num = torch.sum(mask * (x.clamp(min=self.eps) ** p), dim=(2, 3))
        den = torch.sum(mask, dim=(2, 3)) + self.eps
        return (num / den) ** (1.0 / p.view(1, -1))


@HEADS.register('amg_gem')
class AMGGeMHead(Head):
    """Tokens -> [B, D] unit norm."""

    def __init__(self, dim: int, mask_channels: int = 256) -> None:
        super().__init__()
        self.out_dim = dim
        self.attention_unet = MiniAttentionUNet(dim, mask_channels)
        self.amg_gem = AMGGeM(dim)

    @classmethod
    def from_config(cls, config: HeadConfig, dim: int) -> 'AMGGeMHead':
        return cls(dim, config.mask_channels)

    def forward(self, tokens: Tokens) -> Tensor:
        feature_map = tokens.patch_map()
        mask = self.attention_unet(feature_map).clamp(1e-6, 1 - 1e-6)
        return F.normalize(self.amg_gem(feature_map, mask), p=2, dim=1)
