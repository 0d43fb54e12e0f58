"""Builders of a run's parts from its :class:`TrainConfig`: model, data, optimiser, validation."""
from __future__ import annotations

import logging
from pathlib import Path

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from training.augment import TrainTransform
from training.config import TrainConfig
from training.datasets import load_places, PlaceSet
from training.loop import Validation
from training.stage import (copy_float_adapters_to_hashing, enable_grad_checkpointing,
                            load_matching, reinit_adapter_convs, set_trainable)
from vpr_core.errors import ConfigError
from vpr_core.evaluation import (EvalOptions, EvalSet, load_images, load_index_aligned,
                                 load_vg_benchmark)
from vpr_core.model import build_model, load_foundation_weights, load_model, VPRModel
from vpr_core.preprocess import preprocess_batch

logger = logging.getLogger(__name__)


def build(cfg: TrainConfig) -> VPRModel:
    """The model of ``cfg.model``, initialised from ``init_from`` when given, with the
    stage's trainable parameters (stage ``rerank`` copies float adapters to the hashing
    stream)."""
    model = build_model(cfg.model)
    if cfg.foundation_weights:
        load_foundation_weights(model.backbone, cfg.foundation_weights)
        logger.info('backbone weights from %s', cfg.foundation_weights)
    if cfg.adapter_init == 'kaiming' and not cfg.init_from:
        logger.info('adapter convs re-drawn (kaiming): %d', reinit_adapter_convs(model))
    if cfg.init_from:
        copied = load_matching(model, load_model(cfg.init_from))
        logger.info('initialised %d tensors from %s', len(copied), cfg.init_from)
    if cfg.stage == 'rerank':
        if not cfg.init_from:
            raise ConfigError('stage rerank starts from a trained float model: set '
                              'init_from=<run>/best.safetensors')
        copy_float_adapters_to_hashing(model)
    if cfg.stage == 'whiten':
        model.requires_grad_(False)          # fitted in closed form: nothing trains
    else:
        set_trainable(model, cfg.stage, cfg.trainable)
    if cfg.grad_checkpoint:
        logger.info('gradient checkpointing on %d modules', enable_grad_checkpointing(model))
    return model


def places(cfg: TrainConfig) -> PlaceSet:
    """Training places of ``cfg.data``."""
    return load_places(cfg.data, cfg.seed)


def transform(cfg: TrainConfig, model: VPRModel) -> TrainTransform:
    """Resize to the model's train size, augment, normalise with its mean / std."""
    pre = model.config.preprocess
    return TrainTransform(pre.train_size, cfg.augment, pre.mean, pre.std)


def mask_size(model: VPRModel) -> tuple[int, int]:
    """Patch grid of the train size: the resolution of HAM-VPR's predicted mask."""
    height, width = model.config.preprocess.train_size
    patch = model.config.backbone.patch_size
    return height // patch, width // patch


def optimizer(model: VPRModel, cfg: TrainConfig, steps_per_epoch: int):
    """Adam over the trainable parameters (SuperVLAD's encoder at ``encoder_lr``) and a StepLR
    stepped every iteration, multiplying the rate by ``gamma`` every ``step_epochs`` epochs."""
    main, encoder = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (encoder if name.startswith('encoder.') and cfg.optim.encoder_lr else main).append(
                param)
    groups = [{'params': main, 'lr': cfg.optim.lr}]
    if encoder:
        groups.append({'params': encoder, 'lr': cfg.optim.encoder_lr})
    adam = torch.optim.Adam(groups, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    step_size = max(1, int(round(cfg.optim.step_epochs * steps_per_epoch)))
    return adam, torch.optim.lr_scheduler.StepLR(adam, step_size=step_size,
                                                 gamma=cfg.optim.gamma)


def validation(cfg: TrainConfig) -> Validation | None:
    """The validation set (images decoded once), or None."""
    val = cfg.validation
    if val.kind == 'none':
        return None
    if val.kind == 'sequence':
        root = Path(val.root)
        if val.query_ranges and val.database_range is None:
            raise ConfigError('validation.query_ranges needs a database_range: every stretch '
                              'is searched against one database')
        parts = [load_index_aligned(root / val.database, root / val.queries, val.tolerance,
                                    index_range, val.database_range)
                 for index_range in (val.query_ranges or (val.index_range,))]
        evalset = parts[0] if len(parts) == 1 else merge_queries(parts)
    elif val.kind == 'vg_benchmark':
        evalset = load_vg_benchmark(val.root, val.split, val.radius_m)
    else:
        raise ConfigError(f"unknown validation kind {val.kind!r} (valid: none, sequence, "
                          "vg_benchmark)")
    logger.info('validation: %d queries vs %d database images', len(evalset.queries),
                len(evalset.database))
    options = EvalOptions(mode=val.mode, recall_values=(1, 5, 10), progress=False)
    return Validation(evalset, load_images(evalset, progress=False), options, val.metric)


def merge_queries(parts: list[EvalSet]) -> EvalSet:
    """One validation set from query stretches searched against the same database (the
    stretches are not one route, so it is not sequential)."""
    return EvalSet(name=parts[0].name, database=parts[0].database,
                   queries=tuple(q for part in parts for q in part.queries),
                   positives=tuple(p for part in parts for p in part.positives))


@torch.no_grad()
def kmeans_init(model: VPRModel, places: PlaceSet, cfg: TrainConfig,
                device: torch.device) -> float:
    """SuperVLAD: k-means (K + G centroids) on random normalised patch tokens of training
    images, then the assignment conv = alpha x normalised centroids. Returns alpha."""
    head = model.float_head
    if not hasattr(head, 'init_from_centroids'):
        raise ConfigError(f'k-means initialisation needs a SuperVLAD head, not '
                          f'{model.config.head.kind!r}')
    rng = np.random.default_rng(cfg.seed)
    chosen = rng.permutation(len(places))[:cfg.kmeans.images]
    samples = []
    model.eval()
    for start in tqdm(range(0, len(chosen), 16), desc='k-means descriptors', unit='batch'):
        images = [places.image(places.places[int(i)][0]) for i in chosen[start:start + 16]]
        batch = preprocess_batch(images, model.config.preprocess, device=device)
        tokens = F.normalize(model.stream_tokens(batch)['float'].patch.float(), dim=-1)
        for row in tokens.cpu().numpy():
            keep = rng.choice(len(row), size=min(cfg.kmeans.descriptors_per_image, len(row)),
                              replace=False)
            samples.append(row[keep])
    descriptors = np.ascontiguousarray(np.concatenate(samples), dtype=np.float32)
    count = model.config.head.clusters + model.config.head.ghost_clusters
    kmeans = faiss.Kmeans(descriptors.shape[1], count, niter=cfg.kmeans.iterations,
                          seed=cfg.seed, verbose=False)
    kmeans.train(descriptors)
    alpha = head.init_from_centroids(torch.from_numpy(kmeans.centroids),
                                     torch.from_numpy(descriptors))
    logger.info('SuperVLAD k-means init on %d descriptors: alpha %.3f', len(descriptors), alpha)
    return alpha
