"""Assemble a :class:`VPRModel` from a :class:`ModelConfig`: backbone, adapters, heads and the
optional stage after them.

Our variants (front end, pooling without the per-location L2, whitening) are chosen here, from
:mod:`vpr_core.model.variants` and :mod:`vpr_core.model.whitening`; the published modules
never look at them.

The one place that turns an architecture description into modules. It loads no weights, so
both the checkpoint loader (:mod:`vpr_core.model.checkpoint`) and the keyword factories
(:mod:`vpr_core.model.factory`) build on it without importing each other.
"""
from __future__ import annotations

from vpr_core.errors import ConfigError
from vpr_core.model import aggregators  # noqa: F401  (registers the heads)
from vpr_core.model.adapters import attach_adapters
from vpr_core.model.aggregators.gem import SelaGeMHead
from vpr_core.model.backbone import freeze_backbone
from vpr_core.model.config import ModelConfig
from vpr_core.model.hashing import HashingHead
from vpr_core.model.registry import Head
from vpr_core.model.variants import build_backbone, build_float_head, build_hashing_head
from vpr_core.model.vpr_model import VPRModel
from vpr_core.model.whitening import build_whitening


def build_model(cfg: ModelConfig) -> VPRModel:
    """A randomly initialised :class:`VPRModel` in eval mode, with the config's freezing.

    Backbone parameters train only in blocks >= ``backbone.train_blocks_from``; adapters
    follow ``adapter.trainable``; heads are trainable.
    """
    streams = _streams(cfg)
    backbone = build_backbone(cfg.backbone)
    freeze_backbone(backbone, cfg.backbone.train_blocks_from)
    adapter_kind = attach_adapters(backbone, cfg.adapter, streams)
    head = build_float_head(cfg.head, backbone.embed_dim) if 'float' in streams else None
    hashing = (build_hashing_head(cfg.hashing, backbone.embed_dim)
               if 'hash' in streams else None)
    _check_whitening(cfg, head, hashing)
    post = build_whitening(cfg, head, hashing)
    return VPRModel(cfg, backbone, adapter_kind, head, hashing, post).eval()


def _check_whitening(cfg: ModelConfig, head: Head | None, hashing: HashingHead | None) -> None:
    if cfg.whitening and head is None:
        raise ConfigError('whitening applies to the float descriptor: the model has no float '
                          'head (hashing.rerank is false)')
    if cfg.whitening and cfg.whitening_input == 'float+hash' and hashing is None:
        raise ConfigError("whitening_input 'float+hash' needs the two-branch model "
                          '(hashing.bits > 0, hashing.rerank true)')
    if cfg.whitening_strips < 0:
        raise ConfigError(f'whitening_strips must be >= 0, got {cfg.whitening_strips}')
    if cfg.whitening_strips and not (cfg.whitening and isinstance(head, SelaGeMHead)):
        raise ConfigError('whitening_strips needs model.whitening: true and the GeM float head '
                          f'(head.kind: gem), got whitening {cfg.whitening}, head '
                          f'{cfg.head.kind!r}')


def _streams(cfg: ModelConfig) -> tuple[str, ...]:
    if cfg.hashing.bits < 0 or cfg.hashing.bits % 8:
        raise ConfigError(f'hashing.bits {cfg.hashing.bits} must be 0 (off) or a positive '
                          'multiple of 8')
    if not cfg.hashing.bits:
        return ('float',)
    return ('float', 'hash') if cfg.hashing.rerank else ('hash',)
