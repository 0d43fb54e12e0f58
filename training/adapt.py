"""Adapt a trained model to the place it must work in (``vpr adapt``).

The recorded sessions of that place (a robot's teach run: bags or image folders, see
:mod:`training.bag_places`) give places from their poses (or frame order); the model's
adapters and heads (float, hashing and, for HAM-VPR, its serial / parallel adapters) are
fine-tuned on them with the backbone frozen, as SelaVPR++ adapts a frozen foundation model.
Batches are place-major (P places x K images) with photometric augmentation standing in for
the condition changes a single session cannot show. The loss is the multi-similarity loss on
the float descriptor the model serves (after its whitening stage, which stays fixed) plus
``hash_weight`` x the SelaVPR++ hashing loss on the codes. The new model file is written
atomically with its own fingerprint; rebuild the map with it (``vpr build-map --weights``).
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.augment import TrainTransform
from training.bag_places import (mine_places, MinedPlaces, MiningConfig, read_session,
                                 SessionSpec, SpacedBatchSampler)
from training.config import AugmentConfig, LossConfig
from training.loop import train_step
from training.losses import HashingLoss, MultiSimilarity
from training.sampler import collate_places, PlaceImages
from training.stage import train_mode
from vpr_core.config import to_dict
from vpr_core.devices import select_device
from vpr_core.errors import ConfigError
from vpr_core.model.checkpoint import default_model_path, load_model, save_model
from vpr_core.model.vpr_model import VPRModel

logger = logging.getLogger(__name__)

ADAPTER_PARAMS = re.compile(r'backbone\.(adapters(_hashing)?\.|blocks\.\d+\.adapter[12]\.)')


@dataclass(frozen=True)
class AdaptConfig:
    """One adaptation run. ``trainable``: regular expressions over parameter names (empty:
    adapters and heads). ``freeze_bn_stats``: every BatchNorm keeps the statistics it was
    trained with (the adapters' too). ``time_limit_min``: stop after this many minutes."""

    mining: MiningConfig = field(default_factory=MiningConfig)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(
        kind='photometric', brightness=0.5, contrast=0.5, shift=0.05))
    loss: LossConfig = field(default_factory=LossConfig)
    places_per_batch: int = 16
    images_per_place: int = 4
    epochs: int = 3
    steps_per_epoch: int | None = None
    lr: float = 1e-4
    hash_weight: float = 1.0
    trainable: tuple[str, ...] = ()
    freeze_bn_stats: bool = True
    grad_clip: float | None = 1.0
    seed: int = 0
    device: str = 'auto'
    time_limit_min: float | None = None


@dataclass(frozen=True)
class AdaptResult:
    """What a run did: mean loss per epoch, places, frames, wall and CPU seconds."""

    path: Path
    fingerprint: str
    base_fingerprint: str
    epoch_losses: tuple[float, ...]
    places: int
    frames: int
    steps: int
    wall_s: float
    cpu_s: float


class AdaptCriterion:
    """MS loss on the served float descriptor + ``hash_weight`` x hashing loss on (z, b)."""

    def __init__(self, outputs: str, cfg: AdaptConfig) -> None:
        common = dict(alpha=cfg.loss.alpha, beta=cfg.loss.beta, base=cfg.loss.base,
                      epsilon=cfg.loss.epsilon, normalize=cfg.loss.normalize)
        self.outputs, self.hash_weight = outputs, cfg.hash_weight
        self.float_loss = MultiSimilarity(**common)
        self.hash_loss = HashingLoss(weight=cfg.loss.hash_weight, **common)

    def __call__(self, outputs, labels: torch.Tensor, masks=None, predicted=None
                 ) -> torch.Tensor:
        if self.outputs == 'float':
            return self.float_loss(outputs, labels)
        z, b = outputs[0], outputs[1]
        hashed = self.hash_loss(z, b, labels)
        if self.outputs == 'hash':
            return hashed
        return self.float_loss(outputs[2], labels) + self.hash_weight * hashed


def adapt_trainable(model: VPRModel, patterns: Sequence[str] = ()) -> list[str]:
    """Set ``requires_grad`` on the adapters and heads (or ``patterns``); return the names."""
    if patterns:
        compiled = [re.compile(p) for p in patterns]
        chosen = {n for n, _ in model.named_parameters() if any(c.search(n) for c in compiled)}
    else:
        heads = [h for h in (model.float_head, model.hashing_head) if h is not None]
        head_ids = {id(p) for h in heads for p in h.parameters()}
        chosen = {n for n, p in model.named_parameters()
                  if id(p) in head_ids or ADAPTER_PARAMS.match(n)}
    if not chosen:
        raise ConfigError(f'adaptation selects no parameter of {model.config.name!r} '
                          f'(trainable={list(patterns)})')
    for name, param in model.named_parameters():
        param.requires_grad_(name in chosen)
    count = sum(p.numel() for n, p in model.named_parameters() if n in chosen)
    logger.info('adapting %d tensors, %.3f M parameters', len(chosen), count / 1e6)
    return sorted(chosen)


def adapt(sessions: Sequence[SessionSpec], out: str | Path, cfg: AdaptConfig = AdaptConfig(),
          model_path: str | Path | None = None, progress: bool = True) -> AdaptResult:
    """Fine-tune ``model_path`` (default: the bundled model) on ``sessions``, write ``out``."""
    wall, cpu = time.perf_counter(), time.process_time()
    torch.manual_seed(cfg.seed)
    device = select_device(cfg.device)
    model_path = Path(model_path) if model_path is not None else default_model_path()
    model = load_model(model_path, device=device)
    base_fingerprint = model.fingerprint
    size = tuple(model.config.preprocess.train_size)
    mined = mine_places([read_session(s, size) for s in sessions], cfg.mining)
    adapt_trainable(model, cfg.trainable)
    loader = _loader(model, mined, cfg)
    steps = cfg.steps_per_epoch or len(loader.batch_sampler)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs * steps)
    scaler = torch.amp.GradScaler('cuda', enabled=False)
    criterion = AdaptCriterion(model.outputs, cfg)
    losses: list[float] = []
    for epoch in range(1, cfg.epochs + 1):
        loader.batch_sampler.set_epoch(epoch)
        _train_mode(model, cfg.freeze_bn_stats)
        epoch_losses = _epoch(model, loader, steps, criterion, optimizer, scheduler, scaler,
                              device, cfg, f'adapt {epoch}/{cfg.epochs}', progress, wall)
        losses.append(float(np.mean(epoch_losses)))
        logger.info('epoch %d: loss %.4f over %d steps', epoch, losses[-1], len(epoch_losses))
        if _out_of_time(cfg, wall):
            logger.info('time limit reached after epoch %d', epoch)
            break
    model.eval()
    result_meta = {'adapted': {'from': str(model_path), 'from_fingerprint': base_fingerprint,
                               'sessions': [s.name for s in sessions], 'places':
                               len(mined.places), 'frames': mined.frames,
                               'epoch_losses': losses, 'config': to_dict(cfg)}}
    fingerprint = save_model(model, out, metadata=result_meta)
    return AdaptResult(Path(out), fingerprint, base_fingerprint, tuple(losses),
                       len(mined.places), mined.frames, steps * len(losses),
                       time.perf_counter() - wall, time.process_time() - cpu)


def _loader(model: VPRModel, mined: MinedPlaces, cfg: AdaptConfig) -> DataLoader:
    pre = model.config.preprocess
    transform = TrainTransform(pre.train_size, cfg.augment, pre.mean, pre.std)
    sampler = SpacedBatchSampler(mined, cfg.places_per_batch, cfg.seed)
    dataset = PlaceImages(mined.places, transform, cfg.images_per_place)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_places)


def _train_mode(model: VPRModel, freeze_bn_stats: bool) -> None:
    train_mode(model, freeze_bn_stats=True)
    if freeze_bn_stats:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def _epoch(model, loader, steps, criterion, optimizer, scheduler, scaler, device, cfg,
           label, progress, start) -> list[float]:
    losses: list[float] = []
    with tqdm(total=steps, desc=label, unit='step', leave=False, disable=not progress) as bar:
        while len(losses) < steps:
            before = len(losses)
            for batch in loader:
                losses.append(train_step(model, batch, criterion, optimizer, scheduler, scaler,
                                         device, False, None, cfg.grad_clip))
                bar.update(1)
                bar.set_postfix(loss=f'{np.mean(losses[-10:]):.4f}')
                if len(losses) >= steps or _out_of_time(cfg, start):
                    return losses
            if len(losses) == before:
                raise ConfigError('no batch of two or more places that are far enough apart: '
                                  'record a longer route or lower the negative radius')
    return losses


def _out_of_time(cfg: AdaptConfig, start: float) -> bool:
    return cfg.time_limit_min is not None and \
        time.perf_counter() - start >= cfg.time_limit_min * 60.0
