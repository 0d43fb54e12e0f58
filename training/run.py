"""A training run: set up from a :class:`TrainConfig`, train, validate, select, save, resume.

Everything lands in ``<out_dir>/<run_name>/``: ``config.yaml`` (the resolved config),
``run.json`` (git revision, command, device, timings), ``last.safetensors`` and
``best.safetensors`` (our checkpoint format), ``train_state.safetensors`` (to resume),
``history.csv`` and ``curves.png`` (loss and validation recall).
"""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from training import distributed, factory
from training.config import TrainConfig
from training.distributed import Distributed, RankShare
from training.loop import Criterion, MaskCapture, train_step
from training.record import RunRecord
from training.sampler import collate_places, PlaceBatchSampler, PlaceImages, ProxyBank
from training.stage import train_mode
from training.state import load_train_state, save_train_state
from training.whiten import run_whitening
from vpr_core.errors import ConfigError
from vpr_core.model import save_model

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch; deterministic cuDNN."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def train(cfg: TrainConfig, run_dir: Path, resume: bool = False) -> dict:
    """Run (or resume) training; returns the final progress dict (best score, epochs, ...).

    Launched by ``torchrun`` with more than one process, the ranks train one model with
    DistributedDataParallel (``training.distributed``); rank 0 validates and writes the run
    folder, and every rank returns rank 0's progress. The ``whiten`` stage runs in one process
    only (ConfigError under torchrun).
    """
    seed_everything(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
        cv2.setNumThreads(cfg.threads)
    if cfg.stage == 'whiten':
        if distributed.world_size() > 1:
            raise ConfigError('the whiten stage runs in one process (every rank would whiten '
                              'on one device and write the same files): run it without '
                              'torchrun, e.g. python -m training --config FILE')
        return run_whitening(cfg, run_dir)
    job = distributed.from_environment(cfg.device)
    try:
        return _train(cfg, Path(run_dir), resume, job)
    finally:
        job.close()


def _train(cfg: TrainConfig, run_dir: Path, resume: bool, job: Distributed) -> dict:
    device = job.device(cfg.device)
    model = factory.build(cfg).to(device)
    places = factory.places(cfg)
    if cfg.stage == 'supervlad' and cfg.init_from is None and not resume:
        factory.kmeans_init(model, places, cfg, device)
    sampler = PlaceBatchSampler(places, cfg.sampler.places_per_batch, cfg.sampler.shuffle,
                                cfg.seed, cfg.sampler.block_frames, cfg.sampler.proxy_group)
    dataset = PlaceImages(places, factory.transform(cfg, model), cfg.sampler.images_per_place,
                          factory.mask_size(model) if cfg.stage == 'ham_mask' else None)
    batches = RankShare(sampler, job.rank, job.world_size) if job.active else sampler
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate_places,
                        num_workers=cfg.data.workers, pin_memory=device.type == 'cuda')
    steps = cfg.steps_per_epoch or len(sampler)
    optimizer, scheduler = factory.optimizer(model, cfg, steps)
    scaler = torch.amp.GradScaler('cuda', enabled=cfg.amp and device.type == 'cuda')
    record = RunRecord(run_dir, cfg) if job.is_main else None
    progress = {'epoch': 0, 'best_score': None, 'best_epoch': None, 'stale': 0,
                'seconds': 0.0}
    if resume:
        progress, proxies = load_train_state(run_dir / 'train_state.safetensors', optimizer,
                                             scheduler, scaler)
        sampler.set_proxies(proxies)
        if record is not None:
            record.load_history()
        model.load_state_dict(_last_weights(run_dir))
        logger.info('resuming %s after epoch %d', run_dir, progress['epoch'])
    network = job.wrap(model, device)
    validation = factory.validation(cfg) if job.is_main else None
    validated = cfg.validation.kind != 'none'
    criterion = Criterion.from_config(cfg)
    capture = MaskCapture(model) if cfg.stage == 'ham_mask' else None
    start = time.perf_counter() - progress['seconds']
    for epoch in range(progress['epoch'] + 1, cfg.epochs + 1):
        sampler.set_epoch(epoch)
        train_mode(network, cfg.freeze_bn_stats)
        bank = ProxyBank(places) if cfg.sampler.proxy_group else None
        losses = _epoch(network, loader, steps, criterion, optimizer, scheduler, scaler,
                        device, cfg, capture, epoch, start, bank, job)
        proxies = bank.proxies() if bank is not None else None
        sampler.set_proxies(proxies)
        progress['seconds'] = time.perf_counter() - start
        out_of_time = job.agree(_out_of_time(cfg, start))
        if job.is_main:
            metrics = None
            if validation is not None and (epoch % cfg.validation.every_epochs == 0 or
                                           epoch == cfg.epochs or out_of_time):
                metrics = validation.run(model, device, cfg.validation.batch_size)
            improved = _select(progress, metrics, epoch, validated)
            progress['epoch'] = epoch
            _save(model, optimizer, scheduler, scaler, progress, record, epoch, metrics,
                  improved, proxies)
            record.add_epoch(epoch, losses, scheduler.get_last_lr()[0], metrics,
                             progress['seconds'])
        progress['epoch'] = epoch
        if job.agree(out_of_time or _patience_over(cfg, progress)):
            logger.info('stopping after epoch %d (%s)', epoch,
                        'time limit' if out_of_time else 'no improvement')
            break
    if record is not None:
        record.finish(progress)
    return job.broadcast(progress)


def _epoch(model, loader, steps, criterion, optimizer, scheduler, scaler, device, cfg,
           capture, epoch, start, bank, job) -> list[float]:
    losses = []
    gather = job.gather_batch if job.active else None
    bar = tqdm(total=steps, desc=f'epoch {epoch}/{cfg.epochs}', unit='step', leave=False,
               disable=not job.is_main)
    with bar:
        while len(losses) < steps:
            for batch in loader:
                losses.append(train_step(model, batch, criterion, optimizer, scheduler, scaler,
                                         device, cfg.amp, capture, cfg.optim.grad_clip, bank,
                                         gather))
                bar.update(1)
                bar.set_postfix(loss=f'{np.mean(losses[-cfg.log_every:]):.4f}')
                if len(losses) >= steps or (cfg.time_limit_min is not None and
                                            job.agree(_out_of_time(cfg, start))):
                    return losses
    return losses


def _out_of_time(cfg: TrainConfig, start: float) -> bool:
    return cfg.time_limit_min is not None and \
        time.perf_counter() - start >= cfg.time_limit_min * 60.0


def _select(progress: dict, metrics: dict | None, epoch: int, validated: bool) -> bool:
    """Update the best score; return True when this epoch's model is the new best.

    Without a validation set the latest model is the selected one.
    """
    if not validated:
        progress['best_epoch'] = epoch
        return True
    if metrics is None:
        return False
    best = progress['best_score']
    if best is None or metrics['score'] > best:
        progress.update(best_score=metrics['score'], best_epoch=epoch, stale=0)
        return True
    progress['stale'] += 1
    return False


def _patience_over(cfg: TrainConfig, progress: dict) -> bool:
    return cfg.validation.patience > 0 and progress['stale'] >= cfg.validation.patience


def _save(model, optimizer, scheduler, scaler, progress, record, epoch, metrics,
          improved, proxies) -> None:
    extra = record.checkpoint_metadata(epoch, metrics)
    save_model(model, record.run_dir / 'last.safetensors', metadata=extra)
    if improved:
        save_model(model, record.run_dir / 'best.safetensors', metadata=extra)
    save_train_state(record.run_dir / 'train_state.safetensors', optimizer, scheduler, scaler,
                     progress, proxies)


def _last_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file
    return load_file(run_dir / 'last.safetensors')
