"""Build VPR models from a :class:`ModelConfig`, and the published systems by keyword.

``build_model(cfg)`` (from :mod:`vpr_core.model.architecture`, re-exported here) combines any
DINOv2 size with any adapter kind and any head. The public factories mirror the seeds' entry
points (``torch.hub`` keyword arguments), e.g.
``selavpr_plusplus(backbone='dinov2-large', aggregation='gem', hashing=True, rerank=True)``.
``weights`` takes an official DINOv2 ``.pth``, a released checkpoint ``.pth`` or our own
``.safetensors``; ``foundation_weights`` an official DINOv2 ``.pth`` for the backbone only.
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch

from vpr_core.errors import CheckpointError, ConfigError
from vpr_core.model.architecture import build_model
from vpr_core.model.checkpoint import load_model
from vpr_core.model.config import (AdapterConfig, HashingConfig, HeadConfig, ModelConfig,
                                   PreprocessConfig)
from vpr_core.model.foreign import load_foreign_weights, load_foundation_weights
from vpr_core.model.registry import backbone_preset
from vpr_core.model.vpr_model import VPRModel

__all__ = ['build_model', 'dinov2', 'dinov2_config', 'from_weights', 'ham_vpr', 'ham_vpr_config',
           'selavpr_plusplus', 'selavpr_plusplus_config', 'supervlad', 'supervlad_config']

logger = logging.getLogger(__name__)

SIZES = ('small', 'base', 'large', 'giant')


def dinov2_config(*, size: str = 'base', registers: bool = False) -> ModelConfig:
    """Plain DINOv2 (CLS token output), official hub interpolation settings, 224 px."""
    name = _backbone_name(size, registers)
    return ModelConfig(
        name=name, system='dinov2', backbone=backbone_preset(name), head=HeadConfig(kind='cls'),
        preprocess=PreprocessConfig(train_size=(224, 224), test_size=(224, 224)))


def selavpr_plusplus_config(*, backbone: str = 'dinov2-large', aggregation: str = 'gem',
                            hashing: bool = True, rerank: bool = True) -> ModelConfig:
    """SelaVPR++: MulConv side network, GeM/BoQ/SALAD head, optional 512-bit hashing branch."""
    if aggregation not in ('gem', 'boq', 'salad'):
        raise ConfigError(f'aggregation {aggregation!r} (valid: gem, boq, salad)')
    branch = ('_rerank' if rerank else '_hashing') if hashing else ''
    return ModelConfig(
        name=f'selavpr++-{backbone.removeprefix("dinov2-")}-{aggregation}{branch}',
        system='selavpr++', backbone=backbone_preset(backbone),
        adapter=AdapterConfig(kind='mulconv'), head=HeadConfig(kind=aggregation),
        hashing=HashingConfig(bits=512 if hashing else 0, rerank=rerank),
        preprocess=PreprocessConfig(train_size=(224, 224), test_size=(322, 322)))


def supervlad_config(*, backbone: str = 'dinov2-base', clusters: int = 4,
                     ghost_clusters: int = 1, crossimage_encoder: bool = True) -> ModelConfig:
    """SuperVLAD: ViT blocks >= 8 trainable, SuperVLAD layer, optional cross-image encoder."""
    encoder = '-crossimage' if crossimage_encoder else ''
    return ModelConfig(
        name=f'supervlad-{backbone.removeprefix("dinov2-")}-k{clusters}g{ghost_clusters}{encoder}',
        system='supervlad', backbone=backbone_preset(backbone, train_blocks_from=8),
        head=HeadConfig(kind='supervlad', clusters=clusters, ghost_clusters=ghost_clusters,
                        crossimage_encoder=crossimage_encoder),
        preprocess=PreprocessConfig(train_size=(224, 224), test_size=(322, 322),
                                    infer_batch_size=8))


def ham_vpr_config() -> ModelConfig:
    """HAM-VPR: ViT-L, serial+parallel adapters on blocks 18-23, mask head + AMG-GeM, 224 px."""
    return ModelConfig(
        name='ham-vpr-large', system='ham-vpr', backbone=backbone_preset('dinov2-large'),
        adapter=AdapterConfig(kind='serial_parallel', last_blocks=6, unused_norms=True,
                              trainable=False),
        head=HeadConfig(kind='amg_gem', mask_channels=256),
        preprocess=PreprocessConfig(train_size=(224, 224), test_size=(224, 224)))


def dinov2(*, size: str = 'base', registers: bool = False,
           weights: str | Path | None = None) -> VPRModel:
    """DINOv2 ViT-{S,B,L,g}/14 [+4 registers]; ``forward`` returns the CLS token [B, D].

    ``model.backbone`` is the :class:`DinoVisionTransformer` (``forward_features`` etc.).
    """
    return from_weights(dinov2_config(size=size, registers=registers), weights, None)


def selavpr_plusplus(*, backbone: str = 'dinov2-large', aggregation: str = 'gem',
                     hashing: bool = True, rerank: bool = True,
                     weights: str | Path | None = None,
                     foundation_weights: str | Path | None = None) -> VPRModel:
    """SelaVPR++; ``forward`` returns x_g, (z, b) or (z, b, x_g) as the authors' model."""
    cfg = selavpr_plusplus_config(backbone=backbone, aggregation=aggregation, hashing=hashing,
                                  rerank=rerank)
    return from_weights(cfg, weights, foundation_weights)


def supervlad(*, backbone: str = 'dinov2-base', clusters: int = 4, ghost_clusters: int = 1,
              crossimage_encoder: bool = True, weights: str | Path | None = None,
              foundation_weights: str | Path | None = None) -> VPRModel:
    """SuperVLAD (K=4, G=1: 3,072-d; 1-cluster VLAD: clusters=1, ghost_clusters=2: 768-d)."""
    cfg = supervlad_config(backbone=backbone, clusters=clusters, ghost_clusters=ghost_clusters,
                           crossimage_encoder=crossimage_encoder)
    return from_weights(cfg, weights, foundation_weights)


def ham_vpr(*, weights: str | Path | None = None,
            foundation_weights: str | Path | None = None) -> VPRModel:
    """HAM-VPR (1,024-d mask-weighted GeM descriptor, 224 x 224 input)."""
    return from_weights(ham_vpr_config(), weights, foundation_weights)


def _backbone_name(size: str, registers: bool) -> str:
    if size not in SIZES:
        raise ConfigError(f'size {size!r} (valid: {", ".join(SIZES)})')
    return f'dinov2-{size}' + ('-reg4' if registers else '')


def from_weights(cfg: ModelConfig, weights: str | Path | None = None,
                 foundation_weights: str | Path | None = None) -> VPRModel:
    """Build ``cfg`` and load ``weights`` (any supported file) or ``foundation_weights``.

    As in the seeds, the foundation (DINOv2) weights are only used when no full checkpoint is
    given. A ``.safetensors`` file goes through :func:`vpr_core.model.checkpoint.load_model` and
    must hold the architecture of ``cfg`` (preprocessing and name aside).
    """
    if weights is None:
        model = build_model(cfg)
        if foundation_weights is not None:
            load_foundation_weights(model.backbone, foundation_weights)
        return model
    if foundation_weights is not None:
        logger.info('full checkpoint %s given: foundation weights %s not used', weights,
                    foundation_weights)
    if Path(weights).suffix == '.safetensors':
        return _load_ours(cfg, Path(weights))
    with torch.device('meta'):  # every tensor comes from the file: skip the random init
        model = build_model(cfg)
    model = model.to_empty(device='cpu')
    load_foreign_weights(model, weights)
    return model


def _load_ours(cfg: ModelConfig, path: Path) -> VPRModel:
    model = load_model(path)
    ours = replace(model.config, name=cfg.name, preprocess=cfg.preprocess)
    if ours != cfg:
        raise CheckpointError(f'{path}: holds architecture {model.config.name!r}, which is not '
                              f'the requested {cfg.name!r}; load it with vpr_core.load_model')
    return model
