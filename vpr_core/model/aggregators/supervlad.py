"""SuperVLAD head (Lu et al., "SuperVLAD: Compact and Robust Image Descriptors for Visual Place
Recognition", NeurIPS 2024).

Patch descriptors are L2-normalised, softly assigned by a bias-free 1x1 conv to K clusters + G
ghost clusters (softmax over K + G), summed without centroids, ghosts dropped, intra-normalised
and globally L2-normalised: K * D (3,072 for K=4 on ViT-B; 1-cluster VLAD K=1, G=2 -> 768).

Optional cross-image encoder: a 2-layer post-norm TransformerEncoder (16 heads, FFN 2048, GELU,
dropout 0.1) with batch_first=False on [B, K, D], so the *sequence* axis is the image batch and
each cluster slot attends across the images of the batch; then flatten and global L2. A
descriptor therefore depends on which images share its batch: run inference in fixed-size
batches (``PreprocessConfig.infer_batch_size``, 8 as in the README) in a fixed image order.
"""
from __future__ import annotations

import math

import torch
from torch import nn, Tensor
import torch.nn.functional as F

from vpr_core.errors import ConfigError
from vpr_core.model.config import HeadConfig
from vpr_core.model.layers import Tokens
from vpr_core.model.registry import Head, HEADS


class SuperVLADLayer(nn.Module):
    """[B, D, h, w] -> [B, K * D] unit norm."""

    def __init__(self, dim: int, clusters: int, ghost_clusters: int) -> None:
        super().__init__()
        self.clusters, self.ghost_clusters = clusters, ghost_clusters
        self.conv = nn.Conv2d(dim, clusters + ghost_clusters, kernel_size=1, bias=False)
        self.alpha = 0.0

    def forward(self, x: Tensor) -> Tensor:
        b, d = x.shape[:2]
        x = F.normalize(x, p=2, dim=1)
        assign = F.softmax(self.conv(x).reshape(b, self.clusters + self.ghost_clusters, -1), 1)
        vlad = torch.bmm(assign, x.reshape(b, d, -1).transpose(1, 2))[:, :self.clusters]
        vlad = F.normalize(vlad, p=2, dim=2).reshape(b, -1)
        return F.normalize(vlad, p=2, dim=1)

    @torch.no_grad()
    def init_from_centroids(self, centroids: Tensor, descriptors: Tensor) -> float:
        """k-means init: conv weight = alpha * normalised centroids; returns alpha.

        ``centroids`` [K + G, D]; ``descriptors`` [N, D] L2-normalised samples. alpha =
        -ln(0.01) / mean over samples of (best - second best centroid similarity).
        """
        centroids = torch.as_tensor(centroids, dtype=torch.float32)
        descriptors = torch.as_tensor(descriptors, dtype=torch.float32)
        expected = (self.clusters + self.ghost_clusters, self.conv.in_channels)
        if tuple(centroids.shape) != expected or descriptors.shape[-1] != expected[1]:
            raise ConfigError(f'centroids must be {list(expected)} and descriptors '
                              f'[N, {expected[1]}], got {list(centroids.shape)} and '
                              f'{list(descriptors.shape)}')
        assign = centroids / centroids.norm(dim=1, keepdim=True)
        top2 = torch.topk(assign @ descriptors.T, 2, dim=0).values
        self.alpha = float(-math.log(0.01) / (top2[0] - top2[1]).mean())
        weight = (self.alpha * assign)[:, :, None, None]
        self.conv.weight.copy_(weight.to(self.conv.weight))
        return self.alpha


@HEADS.register('supervlad')
class SuperVLADHead(Head):
    """Tokens -> [B, K * D]; ``encoder`` present only with the cross-image encoder."""

    def __init__(self, dim: int, clusters: int = 4, ghost_clusters: int = 1,
                 crossimage_encoder: bool = False) -> None:
        super().__init__()
        if clusters < 1 or ghost_clusters < 0 or clusters + ghost_clusters < 2:
            raise ConfigError(f'SuperVLAD needs clusters >= 1, ghost_clusters >= 0 and at least '
                              f'2 in total, got {clusters} + {ghost_clusters}')
        self.out_dim = clusters * dim
        self.batch_dependent = crossimage_encoder
        self.aggregation = SuperVLADLayer(dim, clusters, ghost_clusters)
        if crossimage_encoder:
            if dim % 16:
                raise ConfigError(f'cross-image encoder needs 16 | D, got D = {dim}')
            layer = nn.TransformerEncoderLayer(d_model=dim, nhead=16, dim_feedforward=2048,
                                               activation='gelu', dropout=0.1)
            self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)

    @classmethod
    def from_config(cls, config: HeadConfig, dim: int) -> 'SuperVLADHead':
        return cls(dim, config.clusters, config.ghost_clusters, config.crossimage_encoder)

    def forward(self, tokens: Tokens) -> Tensor:
        vlad = self.aggregation(tokens.patch_map())
        if self.batch_dependent:
            b, d = vlad.shape[0], tokens.x.shape[-1]
            vlad = self.encoder(vlad.reshape(b, -1, d)).reshape(b, -1)
        return F.normalize(vlad, p=2, dim=-1)  # the seeds normalise again in either case

    def init_from_centroids(self, centroids: Tensor, descriptors: Tensor) -> float:
        """See :meth:`SuperVLADLayer.init_from_centroids`."""
        return self.aggregation.init_from_centroids(centroids, descriptors)
