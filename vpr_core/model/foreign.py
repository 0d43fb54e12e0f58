"""Loading weight files we did not write: official DINOv2 ``.pth`` and the seeds' checkpoints.

Files are read with ``torch.load(..., map_location='cpu', weights_only=True)`` only (no
arbitrary pickle); numpy arrays/scalars that training checkpoints carry next to the weights
(recalls, best scores) are allowed through ``torch.serialization.safe_globals``. A
``model_state_dict`` wrapper is unwrapped and ``module.`` (DataParallel) prefixes are stripped.
Every mismatch is a :class:`CheckpointError` naming the file and the offending keys.
"""
from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn, Tensor

from vpr_core.errors import CheckpointError, WeightsNotFoundError

logger = logging.getLogger(__name__)

_SHOWN = 10


def _numpy_safe_globals() -> list:
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    allowed = [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
    for prefix in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        allowed += [(multiarray._reconstruct, f'{prefix}._reconstruct'),
                    (multiarray.scalar, f'{prefix}.scalar')]
    allowed += [type(np.dtype(code)) for code in 'bBhHiIlLqQefdgFD?']
    return allowed


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a ``.pth`` file: ``model_state_dict`` unwrapped, ``module.`` stripped."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f'weight file not found: {path}')
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location='cpu', weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError,
            zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f'{path}: not a readable PyTorch weight file (truncated, corrupt or holding '
            f'non-tensor objects): {exc}') from exc
    if isinstance(obj, Mapping) and 'model_state_dict' in obj:
        obj = obj['model_state_dict']
    if not isinstance(obj, Mapping):
        raise CheckpointError(f'{path}: expected a state dict, found {type(obj).__name__}')
    state = {}
    for key, value in obj.items():
        if not isinstance(value, Tensor):
            raise CheckpointError(f'{path}: entry {key!r} is a {type(value).__name__}, '
                                  'expected a tensor')
        while key.startswith('module.'):
            key = key[len('module.'):]
        state[key] = value
    return state


def _listing(keys: list[str]) -> str:
    shown = ', '.join(keys[:_SHOWN])
    more = f', ... (+{len(keys) - _SHOWN} more)' if len(keys) > _SHOWN else ''
    return f'{len(keys)}: {shown}{more}'


def check_keys(module: nn.Module, state: Mapping[str, Tensor], source: str | Path, *,
               allow_missing: frozenset[str] = frozenset()) -> None:
    """CheckpointError unless ``state`` has exactly ``module``'s keys with the same shapes."""
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state and k not in allow_missing)
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f'{k} {list(state[k].shape)} vs {list(own[k].shape)}'
                    for k in own if k in state and state[k].shape != own[k].shape)
    problems = []
    if missing:
        problems.append(f'missing keys {_listing(missing)}')
    if unexpected:
        problems.append(f'unexpected keys {_listing(unexpected)}')
    if shapes:
        problems.append(f'shape mismatches (file vs model) {_listing(shapes)}')
    if problems:
        raise CheckpointError(f'{source} does not fit {type(module).__name__}: '
                              + '; '.join(problems))


def is_bare_dinov2(state: Mapping[str, Tensor]) -> bool:
    """True for a flat DINOv2 state dict (``cls_token``, ``blocks.0.*`` at the top level)."""
    return 'cls_token' in state and 'pos_embed' in state


def load_foundation_weights(backbone: nn.Module, path: str | Path) -> None:
    """Merge an official DINOv2 ``.pth`` into ``backbone`` as the seeds do.

    The backbone's own state dict is overwritten by the file's entries, so adapters keep their
    initialisation; every non-adapter key must come from the file and no file key may be
    unknown to the backbone.
    """
    state = read_state_dict(path)
    if not is_bare_dinov2(state):
        raise CheckpointError(f'{path}: not an official DINOv2 file (no top-level cls_token / '
                              'pos_embed); pass full-model checkpoints as weights=')
    adapter_keys = frozenset(k for k in backbone.state_dict() if 'adapter' in k)
    check_keys(backbone, state, path, allow_missing=adapter_keys)
    merged = backbone.state_dict()
    merged.update(state)
    backbone.load_state_dict(merged, strict=True)
    logger.info('loaded DINOv2 foundation weights from %s', path)


def load_foreign_weights(model: nn.Module, path: str | Path) -> None:
    """Strictly load a released checkpoint (or, for plain DINOv2, an official file).

    A flat DINOv2 file goes into ``model.backbone`` when the model is plain DINOv2 (no adapter
    and no head parameters outside the backbone); anything else must match the whole model.
    """
    state = read_state_dict(path)
    if is_bare_dinov2(state):
        plain = all(k.startswith('backbone.') and 'adapter' not in k for k in model.state_dict())
        if not plain:
            raise CheckpointError(f'{path}: is a bare DINOv2 backbone file but the model has '
                                  'adapters/heads; pass it as foundation_weights= instead')
        check_keys(model.backbone, state, path)
        model.backbone.load_state_dict(state, strict=True)
    else:
        check_keys(model, state, path)
        model.load_state_dict(state, strict=True)
    logger.info('loaded weights from %s', path)
