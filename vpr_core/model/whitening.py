"""Learned whitening of the float descriptor (Radenovic, Tolias and Chum, "Fine-tuning CNN
Image Retrieval with No Human Annotation", T-PAMI 2018: the supervised whitening "Lw").

Fit in closed form from descriptors grouped by place: the within-place scatter (what changes
between images of one place: season, light, a neighbouring viewpoint) is whitened, so the
directions along which one place varies are shrunk, then the whitened descriptors are rotated
onto their principal axes. The within-place covariance is shrunk towards a scaled identity:
it is often singular (the SelaVPR++ GeM head maps a D-wide pooled vector to its output, so its
descriptors span at most D + 1 dimensions) and is estimated from few images per place.
Keeping only the leading axes also reduces the dimension (two streams' descriptors side by
side back to one descriptor's width).

In the model the whitening is a stage after the heads (:class:`Whitening`, ours, not the
seeds'): :class:`~vpr_core.model.vpr_model.VPRModel` runs backbone -> heads -> this stage.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn, Tensor
import torch.nn.functional as F

from vpr_core.errors import ConfigError
from vpr_core.model.config import ModelConfig
from vpr_core.model.layers import pool_strips, Tokens


def fit_whitening(descriptors: np.ndarray, groups: Sequence[np.ndarray],
                  shrinkage: float = 0.1,
                  out_dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[N, d] descriptors and groups of row indices (one per place, >= 2 rows each) ->
    ``(weight [k, d], bias [k])`` with whitened = descriptors @ weight.T + bias.

    ``shrinkage`` in (0, 1]: weight of the scaled identity in the within-place covariance.
    ``out_dim``: keep the first k = ``out_dim`` principal axes (default all d).
    """
    x = np.asarray(descriptors, dtype=np.float64)
    if x.ndim != 2 or not len(x):
        raise ConfigError(f'whitening needs [N, d] descriptors, got shape {x.shape}')
    if not 0.0 < shrinkage <= 1.0:
        raise ConfigError(f'whitening shrinkage must be in (0, 1], got {shrinkage}')
    groups = [np.asarray(g, dtype=np.int64) for g in groups if len(g) >= 2]
    if not groups:
        raise ConfigError('whitening needs at least one place with two or more images')
    dim = x.shape[1]
    if out_dim is not None and not 1 <= out_dim <= dim:
        raise ConfigError(f'whitening out_dim must be in 1..{dim}, got {out_dim}')
    within = np.zeros((dim, dim))
    count = 0
    for group in groups:
        centred = x[group] - x[group].mean(axis=0)
        within += centred.T @ centred
        count += len(group)
    within /= count
    scale = np.trace(within) / dim
    if scale <= 0:
        raise ConfigError('whitening: the images of every place have identical descriptors')
    within = (1.0 - shrinkage) * within + shrinkage * scale * np.eye(dim)
    values, vectors = np.linalg.eigh(within)
    inverse_sqrt = vectors @ np.diag(1.0 / np.sqrt(values)) @ vectors.T
    mean = x.mean(axis=0)
    whitened = (x - mean) @ inverse_sqrt.T
    _, axes = np.linalg.eigh(whitened.T @ whitened / len(x))
    weight = (axes[:, ::-1].T @ inverse_sqrt)[:out_dim]
    return weight, -weight @ mean


class Whitening(nn.Module):
    """Post-head stage: the learned whitening of the float descriptor, then L2.

    Reads the float descriptor x_g (``with_code`` False), or the unit x_g beside the hashing
    branch's continuous code z (``with_code`` True, ``whitening_input: float+hash``), through
    its child ``whiten`` (Linear ``in_dim`` -> ``out_dim``: grafted onto the model as
    ``whiten.*``, frozen, identity on x_g until fitted by the training stage ``whiten``).
    """

    def __init__(self, in_dim: int, out_dim: int, *, with_code: bool) -> None:
        super().__init__()
        self.with_code = with_code
        self.whiten = nn.Linear(in_dim, out_dim)
        with torch.no_grad():     # identity on the float descriptor (zeros on the rest)
            self.whiten.weight.copy_(torch.eye(*self.whiten.weight.shape))
            self.whiten.bias.zero_()
        self.whiten.requires_grad_(False)

    def forward(self, tokens: dict[str, Tokens], x_g: Tensor, z: Tensor | None) -> Tensor:
        """(streams' tokens, x_g [B, D], z [B, bits] | None) -> whitened x_g [B, out_dim]."""
        return F.normalize(self.whiten(self.inputs(tokens, x_g, z)), p=2, dim=-1)

    def inputs(self, tokens: dict[str, Tokens], x_g: Tensor, z: Tensor | None) -> Tensor:
        """What ``whiten`` reads: x_g, or [unit x_g, z]."""
        if not self.with_code:
            return x_g
        return torch.cat([F.normalize(x_g, p=2, dim=-1), z], dim=-1)


class StripWhitening(Whitening):
    """:class:`Whitening` that also reads the heads' codes of ``strips`` vertical strips of
    the token grid (regional pooling, as R-MAC's regions), so the whitened descriptor keeps
    where things are across the view: [unit x_g, (z), float strips, (hashing strips)].

    A strip code is its head's pooling and last Linear, then L2, over a band of token columns
    (equal bands when ``strips`` divides the grid width, else the first bands one column
    wider). The heads are GeM heads (``feature_map``, ``aggregation``/``aggregation_hashing``,
    ``linear2``/``linear4``); their maps are computed again here (one D x D Linear per token).
    """

    def __init__(self, in_dim: int, out_dim: int, *, with_code: bool, strips: int,
                 float_head: nn.Module, hashing_head: nn.Module | None) -> None:
        super().__init__(in_dim, out_dim, with_code=with_code)
        self.strips = strips
        # Plain references: the heads' children are registered on the model.
        self.__dict__['pools'] = {'float': (float_head, float_head.aggregation,
                                            float_head.linear2)}
        if with_code:
            self.pools['hash'] = (hashing_head, hashing_head.aggregation_hashing,
                                  hashing_head.linear4)

    def inputs(self, tokens: dict[str, Tokens], x_g: Tensor, z: Tensor | None) -> Tensor:
        """[unit x_g, (z), float strips [B, strips * D], (hashing strips [B, strips * bits])]."""
        parts = [F.normalize(x_g, p=2, dim=-1)] + ([z] if self.with_code else [])
        for stream, (head, pooling, linear) in self.pools.items():
            bands = pool_strips(pooling, head.feature_map(tokens[stream]), self.strips)
            parts.append(F.normalize(linear(bands), p=2, dim=-1).flatten(1))
        return torch.cat(parts, dim=-1)


def build_whitening(config: ModelConfig, float_head: nn.Module,
                    hashing_head: nn.Module | None) -> Whitening | None:
    """The stage ``config`` asks for (checked by the caller), or None without whitening."""
    if not config.whitening:
        return None
    with_code = config.whitening_input == 'float+hash'
    width = float_head.out_dim + (hashing_head.bits if with_code else 0)
    if not config.whitening_strips:
        return Whitening(width, float_head.out_dim, with_code=with_code)
    return StripWhitening((1 + config.whitening_strips) * width, float_head.out_dim,
                          with_code=with_code, strips=config.whitening_strips,
                          float_head=float_head, hashing_head=hashing_head)
