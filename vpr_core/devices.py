"""Where models run: device choice, thread policy, fp16, the faiss GPU probe, memory release.

Nothing here touches CUDA at import time; every probe runs when it is called.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import re

import torch

from vpr_core.errors import ConfigError

LOG = logging.getLogger(__name__)
VALID_DEVICES = ('auto', 'cpu', 'cuda', 'cuda:N')
_THREADS: int | None = None
_INTEROP_SET = False


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


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:          # not on Linux
        return max(1, os.cpu_count() or 1)


def default_threads(workers: int = 1) -> int:
    """Threads per worker that do not oversubscribe the CPU.

    One thread when the process sees two cores or fewer, or runs more than one worker that
    computes at once. On the 2-core development host, shared with other processes, a second
    thread did not pay: per frame of the bundled model torch was 1.1-1.2x slower on two and
    onnxruntime within 8% either way (``bench/backends.py``); under heavier load torch was
    3-5x slower and ``vpr build-map`` ran 5.6x faster on one thread (a reviewer's runs),
    because OpenMP threads spin-wait for a core another process holds. Otherwise the cores
    shared among the workers, at most 8 (a cap not measured here).
    """
    cores = available_cores()
    if cores <= 2 or workers > 1:
        return 1
    return max(1, min(cores // max(1, int(workers)), 8))


def apply_thread_policy(threads: int | None = None, *, workers: int = 1) -> int:
    """Set every compute library of this process to ``threads`` (None: default_threads).

    torch intra-op threads, torch inter-op threads (settable once per process, before any
    parallel work: later calls keep the first value), faiss's OpenMP threads and OpenCV's
    pool. onnxruntime sessions made afterwards read it through :func:`thread_count`.
    Returns the thread count applied.
    """
    global _THREADS, _INTEROP_SET
    if threads is not None and int(threads) < 1:
        raise ConfigError(f'threads must be >= 1 (or None for the default), got {threads}')
    count = int(threads) if threads is not None else default_threads(workers)
    torch.set_num_threads(count)
    if not _INTEROP_SET:
        _INTEROP_SET = True
        try:
            torch.set_num_interop_threads(count)
        except RuntimeError:        # parallel work already ran: torch keeps its first value
            LOG.debug('torch inter-op threads already fixed at %d',
                      torch.get_num_interop_threads())
    try:
        import faiss
        faiss.omp_set_num_threads(count)
    except ImportError:
        pass
    import cv2
    cv2.setNumThreads(count)
    _THREADS = count
    LOG.info('thread policy: %d thread(s) per worker (%d core(s) available)', count,
             available_cores())
    return count


def thread_count() -> int:
    """The thread count of :func:`apply_thread_policy`, or the default when never applied."""
    return _THREADS if _THREADS is not None else default_threads()
