"""The per-model ONNX graph cache of the onnxruntime and TensorRT backends.

A model's graph is exported once into ``$VPR_CACHE/onnx`` (default ``~/.cache/vpr_ros/onnx``),
named by the model fingerprint and input size, written atomically and checked against the
fingerprint whenever it is used. When a graph cannot be made or loaded, the ``auto`` backend
runs torch and leaves a ``.failed`` note beside the graph's name (the error and the torch and
onnxruntime versions), so the next start does not pay a failing export again; the note is
ignored after either library changes, and deleting it makes the next start try again.
"""
from __future__ import annotations

import gc
import json
import logging
import os
from pathlib import Path

import torch

from vpr_core.files import atomic_write_text
from vpr_core.model.vpr_model import VPRModel

LOG = logging.getLogger(__name__)


def graph_path(model: VPRModel, cache: str | os.PathLike | None = None) -> Path:
    """Where ``model``'s graph lives in the cache (it may not exist yet)."""
    from vpr_core.model.weights import cache_dir
    height, width = model.config.preprocess.test_size
    return cache_dir(cache) / 'onnx' / f'{_fingerprint(model)[:32]}-{height}x{width}.onnx'


def cached_onnx(model: VPRModel, *, cache: str | os.PathLike | None = None) -> Path:
    """The model's ONNX graph in the cache, exported (atomically) when absent or stale."""
    from vpr_core.model.export import export_onnx, onnx_fingerprint
    fingerprint = _fingerprint(model)
    path = graph_path(model, cache)
    if path.is_file() and onnx_fingerprint(path) == fingerprint:
        return path
    if path.exists():
        LOG.warning('cached ONNX graph %s does not carry fingerprint %s; exporting again',
                    path, fingerprint[:12])
    LOG.info('exporting the model to ONNX once: %s', path)
    export_onnx(model, path)
    gc.collect()                # the exporter's traced program holds copies of the weights
    return path


def remembered_failure(model: VPRModel, cache: str | os.PathLike | None = None
                       ) -> str | None:
    """The error of an earlier failed graph for ``model`` with these library versions."""
    note = _note_path(model, cache)
    try:
        data = json.loads(note.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get('versions') != _versions():
        return None
    return f"{data.get('error', 'unknown error')} (noted in {note}; delete it to try again)"


def remember_failure(model: VPRModel, cache: str | os.PathLike | None, error: str) -> None:
    """Note that ``model``'s graph failed (best effort: an unwritable cache notes nothing)."""
    note = _note_path(model, cache)
    try:
        note.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(note, json.dumps({'error': error, 'versions': _versions()}))
    except OSError as exc:
        LOG.debug('could not note the failed graph in %s: %s', note, exc)


def _note_path(model: VPRModel, cache: str | os.PathLike | None) -> Path:
    return graph_path(model, cache).with_suffix('.failed')


def _fingerprint(model: VPRModel) -> str:
    from vpr_core.model.checkpoint import model_fingerprint
    return getattr(model, 'fingerprint', None) or model_fingerprint(model)


def _versions() -> dict[str, str]:
    try:
        import onnxruntime
        runtime = onnxruntime.__version__
    except ImportError:
        runtime = 'none'
    return {'torch': torch.__version__, 'onnxruntime': runtime}
