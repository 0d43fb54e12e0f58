"""Our checkpoint format: one ``.safetensors`` file that carries its own architecture.

Layout: the model's ``state_dict`` tensors plus string metadata

- ``format`` = ``vpr_ros.model``, ``schema_version`` = ``1``;
- ``model_config``: the full :class:`ModelConfig` as canonical JSON (sorted keys);
- ``preprocess``: its preprocessing part again, for tools that only feed images;
- ``descriptor_dim``, ``code_bits``, ``outputs``: the descriptor contract;
- ``fingerprint``: sha256 over the canonical config JSON and every tensor (sorted names;
  name, dtype, shape and raw bytes of each), see :func:`model_fingerprint`;
- ``extra``: optional JSON object (training run, data, metrics).

Loading rebuilds the architecture from the metadata, strict-loads the tensors, re-computes the
fingerprint (a corrupted byte anywhere is caught) and returns the model in eval mode. No
pickle is read or written.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from vpr_core.config import from_dict, to_json
from vpr_core.errors import CheckpointError, ConfigError, WeightsNotFoundError
from vpr_core.model.architecture import build_model
from vpr_core.model.config import ModelConfig
from vpr_core.model.vpr_model import VPRModel
from vpr_core.model.weights import atomic_write_path

FORMAT = 'vpr_ros.model'
SCHEMA_VERSION = 1
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / 'assets' / 'default_model.safetensors'
_MAX_LISTED_KEYS = 12


@dataclass(frozen=True)
class CheckpointMetadata:
    """What a checkpoint says about itself (read without loading any tensor)."""

    path: Path
    schema_version: int
    config: ModelConfig
    descriptor_dim: int
    code_bits: int
    outputs: str
    fingerprint: str
    extra: dict[str, Any]
    config_json: str = ''   # the config as written: fields added later do not change its hash


def model_fingerprint(model: torch.nn.Module, config: ModelConfig | None = None) -> str:
    """sha256 hex over the canonical config JSON and every state-dict tensor (sorted names)."""
    config = config if config is not None else model.config
    return _fingerprint(to_json(config), model.state_dict())


def save_model(model: VPRModel, path: str | os.PathLike, *,
               metadata: Mapping[str, Any] | None = None) -> str:
    """Write ``model`` to ``path`` atomically; return its fingerprint.

    ``metadata`` is any JSON-serialisable mapping kept under ``extra`` (e.g. training info).
    """
    path = Path(path)
    tensors = _cpu_tensors(model.state_dict())
    config_json = to_json(model.config)
    fingerprint = _fingerprint(config_json, tensors)
    header = {
        'format': FORMAT,
        'schema_version': str(SCHEMA_VERSION),
        'model_config': config_json,
        'preprocess': to_json(model.config.preprocess),
        'descriptor_dim': str(int(model.out_dim)),
        'code_bits': str(int(model.code_bits)),
        'outputs': str(model.outputs),
        'fingerprint': fingerprint,
        'extra': json.dumps(dict(metadata or {}), sort_keys=True),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(path) as tmp:
        save_file(tensors, tmp, metadata=header)
    return fingerprint


def read_metadata(path: str | os.PathLike) -> CheckpointMetadata:
    """Parse the metadata of one of our checkpoints, with errors that name the file."""
    path = _existing(path)
    try:
        with safe_open(path, framework='pt') as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f'{path} is not a readable .safetensors file ({exc}); is it '
                              'truncated or a different format?') from exc
    return _parse_header(path, header)


def load_model(path: str | os.PathLike, *, device: torch.device | str = 'cpu') -> VPRModel:
    """Rebuild the architecture stored in ``path``, strict-load it, check the fingerprint.

    Returns the model in eval mode on ``device`` with ``model.fingerprint`` set.
    """
    meta = read_metadata(path)
    try:
        tensors = load_file(meta.path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f'cannot read the tensors of {meta.path}: {exc}') from exc
    model = build_model(meta.config)
    _strict_load(model, tensors, meta.path)
    actual = _fingerprint(meta.config_json, model.state_dict())
    if actual != meta.fingerprint:
        raise CheckpointError(f'{meta.path} is corrupt: its content hashes to {actual}, the '
                              f'file says {meta.fingerprint}')
    model.fingerprint = actual
    return model.to(device).eval()


def default_model_path() -> Path:
    """The bundled default model; raises :class:`WeightsNotFoundError` saying where it goes."""
    if not DEFAULT_MODEL.is_file():
        raise WeightsNotFoundError(
            f'no default model at {DEFAULT_MODEL}. Pass weights=PATH to one of our '
            '.safetensors checkpoints, or place one there (vpr_core/assets/'
            'default_model.safetensors in the source tree, then reinstall).')
    return DEFAULT_MODEL


def _existing(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(f'model file not found: {path}')
    return path


def _parse_header(path: Path, header: Mapping[str, str]) -> CheckpointMetadata:
    if header.get('format') != FORMAT:
        raise CheckpointError(
            f'{path} is a .safetensors file but not a vpr_ros model (metadata format='
            f'{header.get("format")!r}, expected {FORMAT!r}); official DINOv2 and the authors\' '
            '.pth files load through the model factories (weights=...)')
    version = _int_field(path, header, 'schema_version')
    if version > SCHEMA_VERSION:
        raise CheckpointError(f'{path} has schema version {version}; this vpr_core reads up '
                              f'to {SCHEMA_VERSION}: upgrade the package')
    try:
        config = from_dict(ModelConfig, json.loads(header['model_config']))
        extra = json.loads(header.get('extra') or '{}')
    except (KeyError, json.JSONDecodeError, ConfigError) as exc:
        raise CheckpointError(f'{path} has an unusable model_config: {exc}') from exc
    return CheckpointMetadata(path, version, config, _int_field(path, header, 'descriptor_dim'),
                              _int_field(path, header, 'code_bits'), header.get('outputs', ''),
                              header.get('fingerprint', ''), extra, header['model_config'])


def _int_field(path: Path, header: Mapping[str, str], key: str) -> int:
    try:
        return int(header[key])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f'{path}: metadata field {key!r} is missing or not an '
                              f'integer') from exc


def _strict_load(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor],
                 path: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(f'{k} {tuple(tensors[k].shape)} != {tuple(v.shape)}'
                   for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape)
    problems = [f'{label}: {_listed(keys)}' for label, keys in
                (('missing keys', missing), ('unexpected keys', unexpected),
                 ('shape mismatches', wrong)) if keys]
    if problems:
        raise CheckpointError(f'{path} does not fit the architecture in its own metadata; '
                              + '; '.join(problems))
    model.load_state_dict(tensors, strict=True)


def _listed(keys: list[str]) -> str:
    more = len(keys) - _MAX_LISTED_KEYS
    shown = ', '.join(keys[:_MAX_LISTED_KEYS])
    return f'{shown} (+{more} more)' if more > 0 else shown


def _cpu_tensors(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors; entries sharing storage get their own copy."""
    out, storages = {}, set()
    for name, tensor in state.items():
        tensor = tensor.detach().to('cpu').contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        out[name] = tensor.clone() if pointer in storages else tensor
        storages.add(pointer)
    return out


def _fingerprint(config_json: str, tensors: Mapping[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    digest.update(config_json.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().to('cpu').contiguous()
        digest.update(f'\n{name}|{str(tensor.dtype)}|{tuple(tensor.shape)}\n'.encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()
