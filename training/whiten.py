"""Stage ``whiten``: fit the learned whitening of the float descriptor on the training places
(closed form, no gradient steps; :mod:`vpr_core.model.whitening`).

The model must declare ``model.whitening: true`` and start from a trained checkpoint
(``init_from``). The whitening is kept only when it raises the validation score (model
selection on the validation split, as for epochs); otherwise the identity stays.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from training import factory
from training.config import TrainConfig
from training.datasets import PlaceSet
from training.record import RunRecord
from vpr_core.devices import select_device
from vpr_core.errors import ConfigError
from vpr_core.extractor import Extractor
from vpr_core.model import fit_whitening, read_metadata, save_model, VPRModel

logger = logging.getLogger(__name__)


def run_whitening(cfg: TrainConfig, run_dir: Path) -> dict:
    """Fit, validate and save; returns the progress dict written to ``run.json``."""
    if not cfg.model.whitening:
        raise ConfigError("stage whiten needs model.whitening: true")
    if not cfg.init_from:
        raise ConfigError('stage whiten starts from a trained model: set '
                          'init_from=<run>/best.safetensors')
    built = read_metadata(cfg.init_from).config     # the header only; build() loads weights
    if replace(built, whitening=True, whitening_input=cfg.model.whitening_input,
               whitening_strips=cfg.model.whitening_strips) != cfg.model:
        raise ConfigError(f'init_from {cfg.init_from} holds a different architecture than '
                          f'model (only the whitening may differ): {built} vs {cfg.model}')
    device = select_device(cfg.device)
    model = factory.build(cfg).to(device).eval()
    shape = model.whiten.weight.shape
    set_whitening(model, np.eye(*shape), np.zeros(shape[0]))   # refit: not init_from's
    places = factory.places(cfg)
    validation = factory.validation(cfg)
    record = RunRecord(run_dir, cfg)
    start = time.perf_counter()
    before = validation.run(model, device, cfg.validation.batch_size) if validation else None
    descriptors, groups = place_descriptors(model, places, device, cfg.validation.batch_size)
    weight, bias = fit_whitening(descriptors, groups, cfg.whitening_shrinkage,
                                 out_dim=model.whiten.weight.shape[0])
    set_whitening(model, weight, bias)
    after = validation.run(model, device, cfg.validation.batch_size) if validation else None
    if before is not None:
        logger.info('validation score %.3f without whitening, %.3f with it', before['score'],
                    after['score'])
    kept = before is None or after['score'] > before['score']
    if not kept:
        logger.warning('whitening did not raise the validation score: identity kept')
        set_whitening(model, np.eye(*shape), np.zeros(shape[0]))
    metrics = after if kept else before
    extra = record.checkpoint_metadata(0, metrics)
    for name in ('last.safetensors', 'best.safetensors'):
        save_model(model, run_dir / name, metadata=extra)
    progress = {'epoch': 0, 'best_epoch': 0, 'seconds': time.perf_counter() - start,
                'best_score': None if metrics is None else metrics['score'],
                'whitening': {'kept': kept, 'images': len(descriptors), 'places': len(groups),
                              'shrinkage': cfg.whitening_shrinkage,
                              'score_without': None if before is None else before['score'],
                              'score_with': None if after is None else after['score']}}
    record.finish(progress)
    return progress


def place_descriptors(model: VPRModel, places: PlaceSet, device: torch.device,
                      batch_size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Whitening inputs (``Whitening.inputs`` in :mod:`vpr_core.model.whitening`: the float
    descriptor, or it beside the hashing code) of distinct training images and, per place,
    its rows.

    A sequence place uses only its exact frames (one per traversal, ``places.leading``): the
    neighbouring frames it also trains on differ by viewpoint, and whitening that away blurs
    neighbouring places (on the Nordland validation split, an earlier model scored R@1 + R@5
    1.36 whitened with them, 1.44 without them, 1.36 not whitened).
    """
    members = [files[:places.leading] if places.leading >= 2 else files
               for files in places.places]
    rows: dict[Path, int] = {}
    for files in members:
        for path in files:
            rows.setdefault(path, len(rows))
    # What ``whiten`` reads, taken on the inference path itself (preprocessing, AMP).
    inputs: list[torch.Tensor] = []
    hook = model.whiten.register_forward_hook(
        lambda module, args, output: inputs.append(args[0].detach().float().cpu()))
    try:
        Extractor(model, device=device, batch_size=batch_size, progress=True).extract(
            [places.image(path) for path in rows])
    finally:
        hook.remove()
    groups = [np.array([rows[path] for path in files]) for files in members]
    return torch.cat(inputs).numpy(), groups


@torch.no_grad()
def set_whitening(model: VPRModel, weight: np.ndarray, bias: np.ndarray) -> None:
    """Load a fitted ``(weight, bias)`` into ``model.whiten``."""
    model.whiten.weight.copy_(torch.as_tensor(weight, dtype=model.whiten.weight.dtype))
    model.whiten.bias.copy_(torch.as_tensor(bias, dtype=model.whiten.bias.dtype))
