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
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vpr_core.errors import ConfigError


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
