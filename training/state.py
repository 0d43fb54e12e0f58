"""Resumable training state without pickle: optimizer tensors (and the sampler's mining
proxies) in ``.safetensors``, the rest (param groups, scheduler, grad scaler, epoch, history)
as JSON metadata."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from vpr_core.errors import CheckpointError
from vpr_core.files import atomic_write_path


def save_train_state(path: str | Path, optimizer: torch.optim.Optimizer, scheduler,
                     scaler, progress: dict, proxies: np.ndarray | None = None) -> None:
    """Write optimizer, scheduler, scaler, torch RNG, ``progress`` (JSON-able) and the
    sampler's ``proxies`` (when mining) atomically."""
    state = optimizer.state_dict()
    tensors = {'rng.torch': torch.get_rng_state()}
    if proxies is not None:
        tensors['sampler.proxies'] = torch.from_numpy(np.ascontiguousarray(proxies))
    for index, values in state['state'].items():
        for key, value in values.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f'optimizer.{index}.{key}'] = tensor.detach().cpu().contiguous()
    meta = {'param_groups': json.dumps(state['param_groups']),
            'scheduler': json.dumps(scheduler.state_dict()),
            'scaler': json.dumps(scaler.state_dict()),
            'progress': json.dumps(progress)}
    path = Path(path)
    with atomic_write_path(path) as tmp:
        save_file(tensors, tmp, metadata=meta)


def load_train_state(path: str | Path, optimizer: torch.optim.Optimizer, scheduler,
                     scaler) -> tuple[dict, np.ndarray | None]:
    """Restore what :func:`save_train_state` wrote; returns ``(progress, proxies or None)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'training state not found: {path} (resume needs a run folder '
                              'written by python -m training)')
    with safe_open(path, framework='pt') as handle:
        meta = handle.metadata() or {}
    tensors = load_file(path)
    per_param: dict[int, dict] = {}
    for name, tensor in tensors.items():
        if name.startswith('optimizer.'):
            _, index, key = name.split('.', 2)
            per_param.setdefault(int(index), {})[key] = tensor
    try:
        optimizer.load_state_dict({'state': per_param,
                                   'param_groups': json.loads(meta['param_groups'])})
        scheduler.load_state_dict(json.loads(meta['scheduler']))
        scaler.load_state_dict(json.loads(meta['scaler']))
        progress = json.loads(meta['progress'])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f'{path} is not a complete training state: {exc}') from exc
    torch.set_rng_state(tensors['rng.torch'])
    proxies = tensors.get('sampler.proxies')
    return progress, None if proxies is None else proxies.numpy()
