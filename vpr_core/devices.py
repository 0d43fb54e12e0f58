"""Where models run: device choice, fp16 policy, the faiss GPU probe and memory release.

Nothing here touches CUDA at import time; every probe runs when it is called.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import re

import torch

from vpr_core.errors import ConfigError

LOG = logging.getLogger(__name__)
VALID_DEVICES = ('auto', 'cpu', 'cuda', 'cuda:N')


def select_device(spec: str | torch.device = 'auto') -> torch.device:
    """'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N' -> torch.device.

    Asking for CUDA on a machine without it is an error, not a silent CPU fallback: a robot
    configured for the GPU should say so loudly.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    text = str(spec).strip().lower()
    if text == 'auto':
        device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
        LOG.debug('device auto -> %s', device)
        return device
    if text == 'cpu':
        return torch.device('cpu')
    match = re.fullmatch(r'cuda(?::(\d+))?', text)
    if match is None:
        raise ConfigError(f'unknown device {spec!r}; valid: {", ".join(VALID_DEVICES)}')
    if not torch.cuda.is_available():
        raise ConfigError(f'device {spec!r} asked for CUDA, but this torch build sees no CUDA '
                          'device; use device=auto or cpu')
    index = int(match.group(1) or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(f'device {spec!r}: only {count} CUDA device(s), valid indices '
                          f'0..{count - 1}')
    return torch.device('cuda', index)


def use_fp16(device: torch.device, requested: bool | None = None) -> bool:
    """fp16 autocast policy: on by default on CUDA, never on CPU.

    ``requested`` True on a CPU device is ignored with a warning (CPU fp16 matmuls are slow
    and not what the published numbers used).
    """
    if device.type != 'cuda':
        if requested:
            LOG.warning('fp16 requested on %s; running in float32 instead', device)
        return False
    return True if requested is None else bool(requested)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA when ``enabled``; a no-op context otherwise."""
    if enabled and device.type == 'cuda':
        return torch.autocast(device_type='cuda', dtype=torch.float16)
    return contextlib.nullcontext()


def release_memory(device: torch.device | str) -> None:
    """Free what a dropped model held: garbage-collect, then empty CUDA's cached allocator."""
    gc.collect()
    if torch.device(device).type == 'cuda' and torch.cuda.is_available():
        torch.cuda.empty_cache()


def faiss_gpu_available() -> bool:
    """True when the installed faiss has GPU support and sees at least one GPU."""
    try:
        import faiss
    except ImportError:
        return False
    if not hasattr(faiss, 'StandardGpuResources'):
        return False
    return int(faiss.get_num_gpus()) > 0
