"""Adapt a trained model to the place it must work in (``vpr adapt``).

The recorded sessions of that place (a robot's teach run: bags or image folders, see
:mod:`training.bag_places`) give places from their poses (or frame order); the model's
adapters and heads (float, hashing and, for HAM-VPR, its serial / parallel adapters) are
fine-tuned on them with the backbone frozen, as SelaVPR++ adapts a frozen foundation model.
Batches are place-major (P places x K images) with photometric augmentation standing in for
the condition changes a single session cannot show. The loss is the multi-similarity loss on
the float descriptor the model serves (after its whitening stage, which stays fixed) plus
``hash_weight`` x the SelaVPR++ hashing loss on the codes, plus a distillation term towards the
original model's descriptors (of the same augmented images, or with ``distill_target: clean``
of the un-augmented ones, so the student learns invariance to the simulated condition
change). ``interpolate`` < 1 writes WiSE-FT weights (Wortsman et al., "Robust fine-tuning of
zero-shot models", CVPR 2022): each trained tensor is (1 - a) x original + a x adapted. The new
model file is written atomically with its own fingerprint; rebuild the map with it
(``vpr build-map --weights``).
"""
from __future__ import annotations

import copy
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from training.augment import ConditionConfig, TrainTransform, TwoViewTransform
from training.bag_places import (mine_places, MinedPlaces, MiningConfig, read_session,
                                 SessionSpec, SpacedBatchSampler)
from training.config import AugmentConfig, LossConfig
from training.losses import HashingLoss, MultiSimilarity
from training.sampler import collate_places, PlaceImages
from training.stage import train_mode
from vpr_core.config import to_dict
from vpr_core.devices import select_device
from vpr_core.errors import ConfigError
from vpr_core.model import default_model_path, load_model, save_model, VPRModel

logger = logging.getLogger(__name__)

DISTILL_TARGETS = ('same', 'clean')
ADAPTER_PARAMS = re.compile(r'backbone\.(adapters(_hashing)?\.|blocks\.\d+\.adapter[12]\.)')


@dataclass(frozen=True)
class AdaptConfig:
    """One adaptation run: ``epochs`` passes over the places, and at least ``min_steps``
    steps (a short teach run is passed over more often). ``trainable``: regular expressions
    over parameter names (empty: adapters and heads). ``distill_weight``: how strongly the
    descriptors stay those of the original model (see :class:`AdaptCriterion`);
    ``distill_target``: the original model sees the ``same`` augmented images as the adapted
    one, or their ``clean`` (un-augmented) views. ``interpolate``: a in (0, 1], the written
    trained tensors are (1 - a) x original + a x adapted (1: as trained).
    ``freeze_bn_stats``: every BatchNorm keeps the statistics it was trained with (the
    adapters' too). ``time_limit_min``: stop after this many minutes."""

    mining: MiningConfig = field(default_factory=MiningConfig)
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(
        kind='photometric', brightness=0.5, contrast=0.5, shift=0.05))
    condition: ConditionConfig = field(default_factory=lambda: ConditionConfig(probability=0.8))
    loss: LossConfig = field(default_factory=LossConfig)
    places_per_batch: int = 16
    images_per_place: int = 4
    epochs: int = 3
    min_steps: int = 150
    lr: float = 1e-4
    hash_weight: float = 1.0
    distill_weight: float = 1.0
    distill_target: str = 'same'
    interpolate: float = 1.0
    trainable: tuple[str, ...] = ()
    freeze_bn_stats: bool = True
    grad_clip: float | None = 1.0
    seed: int = 0
    device: str = 'auto'
    time_limit_min: float | None = None

    def check(self) -> None:
        """Raise :class:`ConfigError` for settings no run can use."""
        if self.distill_target not in DISTILL_TARGETS:
            raise ConfigError(f'distill_target must be one of {", ".join(DISTILL_TARGETS)}, '
                              f'got {self.distill_target!r}')
        if not 0.0 < self.interpolate <= 1.0:
            raise ConfigError(f'interpolate must be in (0, 1], got {self.interpolate}')
        if self.interpolate != 1.0 and not self.freeze_bn_stats:
            raise ConfigError('interpolate < 1 blends weights, not BatchNorm statistics: '
                              'use it with freeze_bn_stats: true')


@dataclass(frozen=True)
class AdaptResult:
    """What a run did: mean loss per pass over the places, places, frames, steps run (fewer
    than planned where the time limit stopped it), wall and CPU seconds."""

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
    """MS loss on the served float descriptor + ``hash_weight`` x hashing loss on (z, b)
    + ``distill_weight`` x mean (1 - cosine) between the adapted and the original model's
    float descriptor and code z (what the model knew is kept; the original sees the same
    images or, with ``distill_target: clean``, their un-augmented views)."""

    def __init__(self, outputs: str, cfg: AdaptConfig) -> None:
        common = dict(alpha=cfg.loss.alpha, beta=cfg.loss.beta, base=cfg.loss.base,
                      epsilon=cfg.loss.epsilon, normalize=cfg.loss.normalize)
        self.outputs, self.hash_weight = outputs, cfg.hash_weight
        self.distill_weight = cfg.distill_weight
        self.float_loss = MultiSimilarity(**common)
        self.hash_loss = HashingLoss(weight=cfg.loss.hash_weight, **common)

    def __call__(self, outputs, labels: torch.Tensor, original=None) -> torch.Tensor:
        """``outputs`` of the model (x_g | (z, b) | (z, b, x_g)), place ``labels`` [B],
        ``original``: the original model's outputs on the batch's images or their clean
        views (or None)."""
        if self.outputs == 'float':
            loss = self.float_loss(outputs, labels)
        else:
            loss = self.hash_loss(outputs[0], outputs[1], labels)
            if self.outputs == 'two_branch':
                loss = self.float_loss(outputs[2], labels) + self.hash_weight * loss
        if original is None or not self.distill_weight:
            return loss
        pairs = [(outputs, original)] if self.outputs == 'float' else \
            [(outputs[0], original[0])] + ([(outputs[2], original[2])]
                                           if self.outputs == 'two_branch' else [])
        drift = sum((1.0 - F.cosine_similarity(new, old, dim=1)).mean() for new, old in pairs)
        return loss + self.distill_weight * drift / len(pairs)


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
    cfg.check()
    torch.manual_seed(cfg.seed)
    device = select_device(cfg.device)
    model_path = Path(model_path) if model_path is not None else default_model_path()
    model = load_model(model_path, device=device)
    base_fingerprint = model.fingerprint
    size = tuple(model.config.preprocess.train_size)
    mined = mine_places([read_session(s, size) for s in sessions], cfg.mining)
    adapt_trainable(model, cfg.trainable)
    loader = _loader(model, mined, cfg)
    total = max(cfg.epochs * len(loader.batch_sampler), cfg.min_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total)
    original = copy.deepcopy(model).eval().requires_grad_(False) if cfg.distill_weight \
        else None
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    losses, steps = _train(model, original, loader, total,
                           AdaptCriterion(model.outputs, cfg), optimizer, scheduler, device,
                           cfg, progress, wall)
    model.eval()
    if cfg.interpolate != 1.0:
        interpolate_weights(model, initial, cfg.interpolate)
    result_meta = {'adapted': {'from': str(model_path), 'from_fingerprint': base_fingerprint,
                               'sessions': [s.name for s in sessions], 'places':
                               len(mined.places), 'frames': mined.frames,
                               'steps': steps, 'planned_steps': total,
                               'epoch_losses': losses,
                               'config': to_dict(cfg)}}
    fingerprint = save_model(model, out, metadata=result_meta)
    return AdaptResult(Path(out), fingerprint, base_fingerprint, tuple(losses),
                       len(mined.places), mined.frames, steps,
                       time.perf_counter() - wall, time.process_time() - cpu)


def interpolate_weights(model: VPRModel, initial: dict[str, torch.Tensor], alpha: float) -> None:
    """WiSE-FT: every parameter named in ``initial`` (its value before adapting) becomes
    (1 - ``alpha``) x initial + ``alpha`` x its current value, in place; others are left."""
    params = dict(model.named_parameters())
    unknown = sorted(set(initial) - set(params))
    if unknown:
        raise ConfigError(f'interpolation names parameters the model lacks: {unknown[:5]}')
    with torch.no_grad():
        for name, start in initial.items():
            params[name].copy_((1.0 - alpha) * start + alpha * params[name])
    logger.info('weights interpolated: %.2f x adapted + %.2f x original, %d tensors', alpha,
                1.0 - alpha, len(initial))


def _loader(model: VPRModel, mined: MinedPlaces, cfg: AdaptConfig) -> DataLoader:
    pre = model.config.preprocess
    kind = TwoViewTransform if cfg.distill_weight and cfg.distill_target == 'clean' \
        else TrainTransform
    transform = kind(pre.train_size, cfg.augment, pre.mean, pre.std, cfg.condition)
    sampler = SpacedBatchSampler(mined, cfg.places_per_batch, cfg.seed)
    dataset = PlaceImages(mined.places, transform, cfg.images_per_place)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_places)


def _train_mode(model: VPRModel, freeze_bn_stats: bool) -> None:
    train_mode(model, freeze_bn_stats=True)
    if freeze_bn_stats:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def _train(model, original, loader, total, criterion, optimizer, scheduler, device, cfg,
           progress, start) -> tuple[list[float], int]:
    """``total`` steps in passes over the places (each pass a new order and new draws), fewer
    where ``time_limit_min`` runs out; returns the mean loss of every pass and the steps run."""
    losses: list[float] = []
    means: list[float] = []
    with tqdm(total=total, desc='adapt', unit='step', disable=not progress) as bar:
        while len(losses) < total and not _out_of_time(cfg, start):
            loader.batch_sampler.set_epoch(len(means) + 1)
            _train_mode(model, cfg.freeze_bn_stats)
            first = len(losses)
            for batch in loader:
                losses.append(_step(model, original, batch, criterion, optimizer, device,
                                    cfg.grad_clip))
                scheduler.step()
                bar.update(1)
                bar.set_postfix(loss=f'{np.mean(losses[-10:]):.4f}', refresh=False)
                if len(losses) >= total or _out_of_time(cfg, start):
                    break
            if len(losses) == first:
                raise ConfigError('no batch of two or more places that are far enough apart: '
                                  'record a longer route or lower the negative radius')
            means.append(float(np.mean(losses[first:])))
            logger.info('pass %d: loss %.4f over %d steps', len(means), means[-1],
                        len(losses) - first)
    if len(losses) < total:
        logger.info('time limit: stopped after %d of %d steps', len(losses), total)
    return means, len(losses)


def _step(model, original, batch, criterion, optimizer, device, grad_clip) -> float:
    """Forward, loss, backward and optimizer step on one place-major batch: images
    [B, 3, H, W], or [B, 2, 3, H, W] (augmented, clean) where the original sees the clean."""
    images, labels, _ = batch
    images, labels = images.to(device), labels.to(device)
    teacher_view = images
    if images.dim() == 5:
        images, teacher_view = images[:, 0], images[:, 1]
    optimizer.zero_grad(set_to_none=True)
    outputs = model(images)
    reference = None
    if original is not None:
        with torch.no_grad():
            reference = original(teacher_view)
    loss = criterion(outputs, labels, reference)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g['params']],
                                       grad_clip)
    optimizer.step()
    return float(loss.detach())


def _out_of_time(cfg: AdaptConfig, start: float) -> bool:
    return cfg.time_limit_min is not None and \
        time.perf_counter() - start >= cfg.time_limit_min * 60.0
