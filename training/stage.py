"""What each stage trains, and how a stage starts from an earlier model.

Stage defaults (``TrainConfig.trainable`` regular expressions override them):

- ``float``: float adapters (``backbone.adapters`` or the serial/parallel ``adapter1/2``), the
  float head, backbone blocks >= ``train_blocks_from`` and a convolutional stem;
- ``hashing``: hashing adapters and hashing head (+ those backbone blocks and the stem);
- ``rerank``: hashing adapters and hashing head only (the float branch, and the stem both
  branches share, stay frozen);
- ``supervlad``: the float head (SuperVLAD layer, encoder), blocks >= ``train_blocks_from``
  and a convolutional stem;
- ``ham_adapters``: serial/parallel adapters and the head; ``ham_mask``: the head only.

BatchNorm layers whose parameters are all frozen are kept in eval mode while training when
``freeze_bn_stats`` is on (our default): the frozen float branch of stage 2 is then exactly the
stage-1 branch. The seeds leave them in train mode, so their running statistics drift during
stage 2; ``freeze_bn_stats: false`` reproduces that.
"""
from __future__ import annotations

import logging
import re
from typing import Iterable

import torch
from torch import nn

from vpr_core.errors import ConfigError
from vpr_core.model import VPRModel

logger = logging.getLogger(__name__)

HEAD_PARTS = {'float': 'float_head', 'hash': 'hashing_head'}
SIDE_STREAMS = {'float': 'backbone.adapters.', 'hash': 'backbone.adapters_hashing.'}
SERIAL_PARALLEL = re.compile(r'backbone\.blocks\.\d+\.adapter[12]\.')
HASHING_PREFIXES = ('backbone.adapters_hashing.', 'aggregation_hashing.', 'linear3.', 'linear4.')


def default_trainable(model: VPRModel, stage: str) -> set[str]:
    """Names of the parameters a stage trains by default."""
    branch = 'hash' if stage in ('hashing', 'rerank') else 'float'
    head = getattr(model, HEAD_PARTS[branch])
    if head is None:
        raise ConfigError(f"stage '{stage}' trains the {branch} branch, which the model "
                          f"'{model.config.name}' does not have (outputs: {model.outputs})")
    head_ids = {id(p) for p in head.parameters()}
    first = model.config.backbone.train_blocks_from
    conv_stem = model.config.backbone.stem != 'patch'
    names = set()
    for name, param in model.named_parameters():
        block = _block_index(name)
        if id(param) in head_ids:
            names.add(name)
        elif stage in ('float', 'hashing', 'rerank') and name.startswith(SIDE_STREAMS[branch]):
            names.add(name)
        elif stage in ('float', 'ham_adapters') and SERIAL_PARALLEL.match(name):
            names.add(name)
        elif stage in ('float', 'hashing', 'supervlad') and first is not None and \
                block is not None and block >= first:
            names.add(name)
        elif stage in ('float', 'hashing', 'supervlad') and conv_stem and \
                name.startswith('backbone.patch_embed.'):
            names.add(name)
    return names


def _block_index(name: str) -> int | None:
    match = re.match(r'backbone\.blocks\.(\d+)\.', name)
    if match is None or '.adapter' in name:
        return None
    return int(match.group(1))


def set_trainable(model: VPRModel, stage: str, patterns: Iterable[str] = ()) -> list[str]:
    """Set ``requires_grad`` for the stage (or the ``patterns``); return the trained names."""
    patterns = tuple(patterns)
    if patterns:
        compiled = [re.compile(p) for p in patterns]
        chosen = {n for n, _ in model.named_parameters() if any(c.search(n) for c in compiled)}
    else:
        chosen = default_trainable(model, stage)
    if not chosen:
        raise ConfigError(f"stage '{stage}' with trainable={list(patterns)} selects no "
                          'parameter of the model')
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
    count = sum(p.numel() for n, p in model.named_parameters() if n in chosen)
    logger.info('stage %s: %d tensors, %.3f M parameters trainable', stage, len(chosen),
                count / 1e6)
    return sorted(chosen)


def train_mode(model: nn.Module, freeze_bn_stats: bool) -> None:
    """``model.train()``; with ``freeze_bn_stats``, frozen BatchNorms stay in eval mode."""
    model.train()
    if not freeze_bn_stats:
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()


def reinit_adapter_convs(model: VPRModel) -> int:
    """Re-draw every Conv2d inside the adapter streams with PyTorch's default init."""
    count = 0
    for name, module in model.named_modules():
        if 'adapter' in name and isinstance(module, nn.Conv2d):
            module.reset_parameters()
            count += 1
    return count


def load_matching(model: nn.Module, source: nn.Module) -> list[str]:
    """Copy every tensor of ``source`` whose name and shape exist in ``model``; return names."""
    target = model.state_dict()
    copied = {k: v for k, v in source.state_dict().items()
              if k in target and target[k].shape == v.shape}
    if not copied:
        raise ConfigError('the initial checkpoint shares no tensor with the model being trained')
    model.load_state_dict(copied, strict=False)
    return sorted(copied)


def copy_float_adapters_to_hashing(model: VPRModel) -> None:
    """SelaVPR++ stage 2: the hashing stream starts as a copy of the trained float stream."""
    source = getattr(model.backbone, 'adapters', None)
    target = getattr(model.backbone, 'adapters_hashing', None)
    if source is None or target is None:
        raise ConfigError('stage rerank needs a two-branch MulConv model (adapter.kind: '
                          'mulconv, hashing.bits > 0, hashing.rerank: true)')
    target.load_state_dict(source.state_dict())


def float_branch_state(model: VPRModel) -> dict[str, torch.Tensor]:
    """Copies of every tensor (parameters and buffers) that the float branch uses."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if not k.startswith(HASHING_PREFIXES)}


def enable_grad_checkpointing(model: VPRModel) -> int:
    """Recompute ViT blocks and adapters in the backward pass (memory for time)."""
    from torch.utils.checkpoint import checkpoint
    wrapped = 0
    modules = list(model.backbone.blocks)
    for name in ('adapters', 'adapters_hashing'):
        modules += list(getattr(model.backbone, name, []))
    for module in modules:
        forward = module.forward

        def checkpointed(*args, _forward=forward, **kwargs):
            if torch.is_grad_enabled():
                return checkpoint(_forward, *args, use_reentrant=False, **kwargs)
            return _forward(*args, **kwargs)
        module.forward = checkpointed
        wrapped += 1
    return wrapped
