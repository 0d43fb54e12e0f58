"""One optimisation step and one validation pass; no file I/O (see ``training.run``)."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from training.config import TrainConfig
from training.losses import HashingLoss, MultiSimilarity
from training.sampler import ProxyBank
from vpr_core.evaluation import (EvalOptions, EvalSet, extract_timed, LoadedImages,
                                 score_descriptors)
from vpr_core.extractor import Extractor
from vpr_core.model import VPRModel

HASH_STAGES = ('hashing', 'rerank')


@dataclass
class Criterion:
    """The stage's loss: MS on x_g, the hashing loss on (z, b), plus HAM-VPR's mask term."""

    stage: str
    float_loss: MultiSimilarity
    hash_loss: HashingLoss
    mask_weight: float

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> 'Criterion':
        common = dict(alpha=cfg.loss.alpha, beta=cfg.loss.beta, base=cfg.loss.base,
                      epsilon=cfg.loss.epsilon, normalize=cfg.loss.normalize)
        return cls(cfg.stage, MultiSimilarity(**common),
                   HashingLoss(weight=cfg.loss.hash_weight, **common), cfg.loss.mask_weight)

    def __call__(self, outputs, labels: torch.Tensor, masks: torch.Tensor | None = None,
                 predicted_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.stage in HASH_STAGES:
            return self.hash_loss(outputs[0], outputs[1], labels)
        x_g = outputs[-1] if isinstance(outputs, tuple) else outputs
        loss = self.float_loss(x_g, labels)
        if self.stage == 'ham_mask' and masks is not None and predicted_mask is not None:
            target = F.interpolate(masks, size=predicted_mask.shape[-2:], mode='area')
            loss = loss + self.mask_weight * F.binary_cross_entropy(
                predicted_mask.float().clamp(1e-6, 1 - 1e-6), target.to(predicted_mask))
        return loss

    def embedding(self, outputs) -> torch.Tensor:
        """The descriptor the stage's metric loss mines on (codes b for hashing stages)."""
        if self.stage in HASH_STAGES:
            return outputs[1]
        return outputs[-1] if isinstance(outputs, tuple) else outputs


class MaskCapture:
    """Keeps the output of the HAM-VPR mask network of the last forward (a forward hook)."""

    def __init__(self, model: VPRModel) -> None:
        self.mask = None
        module = getattr(model, 'attention_unet', None)
        self.handle = module.register_forward_hook(self._keep) if module is not None else None

    def _keep(self, module, inputs, output) -> None:
        self.mask = output


def train_step(model: VPRModel, batch, criterion: Criterion, optimizer, scheduler,
               scaler, device: torch.device, amp: bool, capture: MaskCapture | None = None,
               grad_clip: float | None = None, bank: ProxyBank | None = None,
               gather: Callable | None = None) -> float:
    """Forward, loss, backward, optimizer and scheduler step on one place-major batch;
    ``bank`` (proxy mining) collects the batch's descriptors. Under torchrun, ``gather``
    (:meth:`training.distributed.Distributed.gather_batch`) joins every rank's outputs,
    labels and masks, so the loss is the global batch's on every rank."""
    images, labels, masks = batch
    images, labels = images.to(device, non_blocking=True), labels.to(device)
    masks = masks.to(device) if masks is not None else None
    optimizer.zero_grad(set_to_none=True)
    autocast = torch.autocast('cuda', dtype=torch.float16) if amp and device.type == 'cuda' \
        else contextlib.nullcontext()
    with autocast:
        outputs = model(images)
    predicted = capture.mask if capture is not None else None
    outputs = _to_float(outputs)
    if gather is not None:
        outputs, labels, masks, predicted = gather(outputs, labels, masks, predicted)
    loss = criterion(outputs, labels, masks, predicted)
    if bank is not None:
        bank.add(labels, criterion.embedding(outputs))
    scaler.scale(loss).backward()
    if grad_clip:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g['params']],
                                       grad_clip)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return float(loss.detach())


def _to_float(outputs):
    if isinstance(outputs, tuple):
        return tuple(o.float() for o in outputs)
    return outputs.float()


@dataclass
class Validation:
    """A validation set with its decoded images, scored with the model under training."""

    evalset: EvalSet
    images: LoadedImages
    options: EvalOptions
    metric: str

    def run(self, model: VPRModel, device: torch.device, batch_size: int) -> dict:
        """Recalls of ``model`` (left in eval mode) and the selection score."""
        extractor = Extractor(model, device=device, batch_size=batch_size)
        db, _ = extract_timed(extractor, self.images.database, batch_size, 'val database',
                              progress=False)
        queries, _ = extract_timed(extractor, self.images.queries, batch_size, 'val queries',
                                   progress=False)
        result = score_descriptors(db, queries, self.evalset, self.options)
        recalls = result['recall_at']
        score = recalls['1'] + (recalls.get('5', 0.0) if self.metric == 'r1+r5' else 0.0)
        return {'recall_at': recalls, 'score': score}
