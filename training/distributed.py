"""Data-parallel training under ``torchrun``: one process per GPU (or CPU share), one global
place-major batch per step.

``torchrun`` sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; with ``WORLD_SIZE`` > 1 every rank joins one process group (NCCL on CUDA,
gloo on CPU), reads its contiguous share of the places of each global batch
(:class:`RankShare`), and the model runs under DistributedDataParallel. The metric losses mine
pairs across the whole batch, so each rank gathers every rank's descriptors and labels (the
gather passes gradients back to the rank that made them) and computes the loss of the global
batch; BatchNorms in train mode normalise with the statistics of the global batch
(:class:`GlobalBatchNorm`). Each rank thus computes the single-process loss and DDP's mean of
the ranks' gradients is the single-process gradient: one process and N ranks with the same
global batch follow the same loss curve up to float rounding.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torch.utils.data import Sampler

from vpr_core.devices import select_device
from vpr_core.errors import ConfigError

logger = logging.getLogger(__name__)

TORCHRUN_VARIABLES = ('RANK', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')
TIMEOUT_VARIABLE = 'VPR_DIST_TIMEOUT_MIN'
DEFAULT_TIMEOUT_MIN = 120.0     # rank 0 validates and saves while the others wait in a collective


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ''

    @property
    def active(self) -> bool:
        """More than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that validates, writes checkpoints and logs progress."""
        return self.rank == 0

    def device(self, requested: str) -> torch.device:
        """This rank's device: its local GPU under NCCL, the CPU under gloo."""
        if not self.active:
            return select_device(requested)
        if self.backend == 'nccl':
            return torch.device('cuda', self.local_rank)
        return torch.device('cpu')

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """``model`` with global-batch BatchNorms under DistributedDataParallel (itself when
        alone). Call after loading any weights: DDP copies rank 0's weights to every rank."""
        if not self.active:
            return model
        swapped = use_global_batch_norms(model)
        if swapped:
            logger.info('%d BatchNorm layers normalise with global-batch statistics', swapped)
        ids = [device.index] if device.type == 'cuda' else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                   find_unused_parameters=True)

    def agree(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (stopping decisions must be collective)."""
        if not self.active:
            return bool(flag)
        return bool(self.broadcast(bool(flag)))

    def broadcast(self, value: Any) -> Any:
        """Rank 0's picklable ``value`` on every rank."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather_batch(self, *items):
        """Every rank's rows of each item (a tensor, a tuple of tensors or None), concatenated
        in rank order; gradients flow back to the rank that computed them."""
        if not self.active:
            return items
        first = next(t for t in _tensors(items))
        count = torch.tensor([first.shape[0]], device=first.device)
        counts = [torch.zeros_like(count) for _ in range(self.world_size)]
        dist.all_gather(counts, count)
        sizes = [int(c) for c in counts]
        return tuple(_map(item, lambda t: _gather_rows(t, sizes)) for item in items)

    def close(self) -> None:
        """Leave the process group."""
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def world_size() -> int:
    """The process count torchrun set (``WORLD_SIZE``; 1 without torchrun)."""
    value = os.environ.get('WORLD_SIZE', '1')
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f'WORLD_SIZE must be an integer, got {value!r}') from None


def collective_timeout() -> datetime.timedelta:
    """How long a rank waits in a collective before the job fails: ``VPR_DIST_TIMEOUT_MIN``
    minutes (default 120). Rank 0 validates and writes checkpoints while the other ranks wait,
    so it must exceed the longest validation (torch's default, 10 minutes under NCCL, does
    not)."""
    value = os.environ.get(TIMEOUT_VARIABLE)
    if value is None:
        return datetime.timedelta(minutes=DEFAULT_TIMEOUT_MIN)
    try:
        minutes = float(value)
    except ValueError:
        minutes = float('nan')
    if not minutes > 0:
        raise ConfigError(f'{TIMEOUT_VARIABLE} must be a positive number of minutes, got '
                          f'{value!r}')
    return datetime.timedelta(minutes=minutes)


def from_environment(requested_device: str = 'auto') -> Distributed:
    """The job torchrun describes in the environment; joins its process group, whose
    collectives wait up to :func:`collective_timeout`."""
    world = world_size()
    if world <= 1:
        return Distributed()
    missing = [k for k in TORCHRUN_VARIABLES if k not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={world} but {', '.join(missing)} unset: launch with "
                          'torchrun (python -m torch.distributed.run)')
    rank, local = int(os.environ['RANK']), int(os.environ['LOCAL_RANK'])
    cuda = requested_device != 'cpu' and torch.cuda.is_available()
    backend = 'nccl' if cuda else 'gloo'
    if cuda:
        torch.cuda.set_device(local)
    timeout = collective_timeout()
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timeout)
    logger.info('rank %d of %d (local %d), %s, collective timeout %.0f min', rank, world,
                local, backend, timeout.total_seconds() / 60)
    return Distributed(rank, world, local, backend)


class RankShare(Sampler):
    """This rank's contiguous share of the places of each global batch of ``batches`` (a
    :class:`training.sampler.PlaceBatchSampler`); a batch with fewer places than ranks is
    left out on every rank."""

    def __init__(self, batches: Sampler, rank: int, world_size: int) -> None:
        self.batches, self.rank, self.world_size = batches, rank, world_size

    def __iter__(self) -> Iterator[list]:
        for batch in self.batches:
            if len(batch) < self.world_size:
                logger.warning('a batch of %d places for %d ranks is left out', len(batch),
                               self.world_size)
                continue
            share = np.array_split(np.arange(len(batch)), self.world_size)[self.rank]
            yield [batch[i] for i in share.tolist()]

    def __len__(self) -> int:
        return len(self.batches)


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """A BatchNorm whose train-mode statistics are those of the global batch, over any
    process-group backend (``nn.SyncBatchNorm`` runs on GPUs only). Sums go through a
    differentiable all-reduce, so gradients reach every rank's inputs; eval mode uses the
    running statistics like any BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f'expected at least 2-d input, got {input.dim()}-d')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, ...] -> [B, C, ...]."""
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        # statistics in float32 whatever autocast made x (as torch's own BatchNorm does)
        xf = x.float()
        count = torch.full((1,), x.numel() / channels, dtype=xf.dtype, device=x.device)
        sums = dist_nn.all_reduce(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        total = sums[-1]
        mean = sums[:channels] / total
        var = (sums[channels:2 * channels] / total - mean * mean).clamp_min(0.0)
        self._track(mean.detach(), var.detach(), float(total.detach()))
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.float().view(shape) + self.bias.float().view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _track(self, mean: torch.Tensor, var: torch.Tensor, total: float) -> None:
        if not self.track_running_stats:
            return
        self.num_batches_tracked += 1
        momentum = self.momentum if self.momentum is not None else \
            1.0 / float(self.num_batches_tracked)
        unbiased = var * (total / max(total - 1.0, 1.0))
        self.running_mean.mul_(1 - momentum).add_(momentum * mean)
        self.running_var.mul_(1 - momentum).add_(momentum * unbiased)


def use_global_batch_norms(module: nn.Module) -> int:
    """Swap every BatchNorm below ``module`` for a :class:`GlobalBatchNorm` sharing its
    parameters and buffers (names unchanged); returns how many."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and \
                not isinstance(child, GlobalBatchNorm):
            module._modules[name] = _global_copy(child)
            count += 1
        else:
            count += use_global_batch_norms(child)
    return count


def _global_copy(norm: nn.modules.batchnorm._BatchNorm) -> GlobalBatchNorm:
    copy = GlobalBatchNorm(norm.num_features, norm.eps, norm.momentum, norm.affine,
                           norm.track_running_stats)
    copy.weight, copy.bias = norm.weight, norm.bias
    for buffer in ('running_mean', 'running_var', 'num_batches_tracked'):
        setattr(copy, buffer, getattr(norm, buffer))
    copy.train(norm.training)
    return copy


def _gather_rows(tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    top = max(sizes)
    pad = top - tensor.shape[0]
    if pad:
        tensor = torch.cat([tensor, tensor.new_zeros((pad, *tensor.shape[1:]))])
    if tensor.requires_grad:
        parts = dist_nn.all_gather(tensor)
    else:
        parts = [torch.empty_like(tensor) for _ in sizes]
        dist.all_gather(parts, tensor.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)])


def _tensors(items) -> Iterator[torch.Tensor]:
    for item in items:
        if isinstance(item, torch.Tensor):
            yield item
        elif isinstance(item, tuple):
            yield from _tensors(item)


def _map(item, fn):
    if item is None:
        return None
    if isinstance(item, tuple):
        return tuple(_map(part, fn) for part in item)
    return fn(item)
