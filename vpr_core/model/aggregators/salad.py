"""SALAD head as configured in SelaVPR++ (Izquierdo & Civera, "Optimal Transport Aggregation for
Visual Place Recognition", CVPR 2024; Lu et al., "SelaVPR++", T-PAMI 2025).

Per-patch cluster features (1x1 conv D->512, dropout, ReLU, 512->128) and scores (D->512,
dropout, ReLU, 512->64); a dustbin row (learnable scalar, init 1) and 3 log-domain Sinkhorn
iterations give the assignment; per-cluster sums are L2-normalised over the 128 dims, flattened
channel-major and concatenated with the L2-normalised 256-d token of the CLS (adapted stream);
final L2 -> 64 * 128 + 256 = 8,448-d.
"""
from __future__ import annotations

import math

import torch
from torch import nn, Tensor
import torch.nn.functional as F

from vpr_core.errors import UnsupportedImageError
from vpr_core.model.config import HeadConfig
from vpr_core.model.layers import Tokens
from vpr_core.model.registry import Head, HEADS


def log_otp_solver(log_a: Tensor, log_b: Tensor, scores: Tensor, num_iters: int,
                   reg: float = 1.0) -> Tensor:
    """Log-domain Sinkhorn: [B, m+1], [B, n] marginals, [B, m+1, n] scores -> log plan."""
    scores = scores / reg
    u, v = torch.zeros_like(log_a), torch.zeros_like(log_b)
    for _ in range(num_iters):
        u = log_a - torch.logsumexp(scores + v.unsqueeze(1), dim=2)
        v = log_b - torch.logsumexp(scores + u.unsqueeze(2), dim=1)
    return scores + u.unsqueeze(2) + v.unsqueeze(1)


def matching_probs(scores: Tensor, dustbin: Tensor, num_iters: int = 3) -> Tensor:
    """[B, m, n] scores -> [B, m + 1, n] log assignment (dustbin row last), SALAD's marginals."""
    batch, m, n = scores.shape
    if n <= m:
        raise UnsupportedImageError(f'SALAD needs more patches ({n}) than clusters ({m}); '
                                    'use a larger input')
    augmented = torch.cat((scores, dustbin.to(scores.dtype).expand(batch, 1, n)), dim=1)
    norm = -torch.tensor(math.log(n + m), device=scores.device)
    log_a = torch.cat((norm.expand(m), (norm + math.log(n - m)).reshape(1)))
    log_a, log_b = log_a.expand(batch, -1), norm.expand(batch, n)
    return log_otp_solver(log_a, log_b, augmented, num_iters) - norm


class SALAD(nn.Module):
    """([B, D, h, w] features, [B, D] token) -> [B, clusters * cluster_dim + token_dim]."""

    def __init__(self, num_channels: int, num_clusters: int = 64, cluster_dim: int = 128,
                 token_dim: int = 256, dropout: float = 0.3) -> None:
        super().__init__()
        self.num_clusters, self.cluster_dim = num_clusters, cluster_dim
        drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.token_features = nn.Sequential(
            nn.Linear(num_channels, 512), nn.ReLU(), nn.Linear(512, token_dim))
        self.cluster_features = nn.Sequential(
            nn.Conv2d(num_channels, 512, 1), drop, nn.ReLU(), nn.Conv2d(512, cluster_dim, 1))
        self.score = nn.Sequential(
            nn.Conv2d(num_channels, 512, 1), drop, nn.ReLU(), nn.Conv2d(512, num_clusters, 1))
        self.dust_bin = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: Tensor, token: Tensor) -> Tensor:
        features = self.cluster_features(x).flatten(2)
        probs = torch.exp(matching_probs(self.score(x).flatten(2), self.dust_bin))[:, :-1]
        clusters = torch.einsum('bln,bmn->blm', features, probs)
        return F.normalize(torch.cat((
            F.normalize(self.token_features(token), p=2, dim=-1),
            F.normalize(clusters, p=2, dim=1).flatten(1)), dim=-1), p=2, dim=-1)


@HEADS.register('salad')
class SaladHead(Head):
    """Tokens (patch grid + CLS) -> [B, 8448] with the SelaVPR++ settings."""

    def __init__(self, dim: int, clusters: int = 64, cluster_dim: int = 128,
                 token_dim: int = 256, dropout: float = 0.3) -> None:
        super().__init__()
        self.out_dim = clusters * cluster_dim + token_dim
        self.aggregation = SALAD(dim, clusters, cluster_dim, token_dim, dropout)

    @classmethod
    def from_config(cls, config: HeadConfig, dim: int) -> 'SaladHead':
        return cls(dim, config.salad_clusters, config.salad_cluster_dim, config.salad_token_dim,
                   config.salad_dropout)

    def forward(self, tokens: Tokens) -> Tensor:
        return F.normalize(self.aggregation(tokens.patch_map(), tokens.cls), p=2, dim=-1)
