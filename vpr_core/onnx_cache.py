"""The per-model ONNX graph cache of the onnxruntime and TensorRT backends.

A model's graph is exported once into ``$VPR_CACHE/onnx`` (default ``~/.cache/vpr_ros/onnx``),
named by the model fingerprint and input size, written atomically and checked against the
fingerprint whenever it is used. When a graph cannot be made or loaded, the ``auto`` backend
runs torch and leaves a ``.failed`` note beside the graph's name (the error and the versions
of torch, onnx, onnxscript, onnxruntime and vpr_ros), so the next start does not pay a
failing export again. The note is ignored after any of them changes or once a graph for the
model exists, and dropped when the graph works; deleting it makes the next start try again.
Failures that say nothing about the graph (memory, the file system, a missing package) are
not noted.
"""
from __future__ import annotations

import gc
from importlib import metadata
import json
import logging
import os
from pathlib import Path

from vpr_core.files import atomic_write_text
from vpr_core.model.vpr_model import VPRModel

LOG = logging.getLogger(__name__)
# failures that say nothing about the graph: never noted, the next start tries again
PASSING_ERRORS = (MemoryError, OSError, ImportError)
_LIBRARIES = ('torch', 'onnx', 'onnxscript', 'onnxruntime', 'vpr_ros')


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
    """The error of an earlier failed graph for ``model`` with these library versions;
    None without a note, or when a graph for the model has been made since."""
    try:
        note = _note_path(model, cache)
        data = json.loads(note.read_text())
        if graph_path(model, cache).is_file():
            return None
    except Exception:   # noqa: BLE001 - no home folder, unreadable note: nothing remembered
        return None
    if not isinstance(data, dict) or data.get('versions') != _versions():
        return None
    return f"{data.get('error', 'unknown error')} (noted in {note}; delete it to try again)"


def forget_failure(model: VPRModel, cache: str | os.PathLike | None = None) -> None:
    """Drop the note of ``model`` (its graph works now)."""
    try:
        _note_path(model, cache).unlink(missing_ok=True)
    except (OSError, RuntimeError) as exc:
        LOG.debug('could not drop the failure note: %s', exc)


def remember_failure(model: VPRModel, cache: str | os.PathLike | None, error: str) -> None:
    """Note that ``model``'s graph failed (best effort: an unwritable cache notes nothing)."""
    try:
        atomic_write_text(_note_path(model, cache),
                          json.dumps({'error': error, 'versions': _versions()}))
    except (OSError, RuntimeError) as exc:
        LOG.debug('could not note the failed graph: %s', exc)


def _note_path(model: VPRModel, cache: str | os.PathLike | None) -> Path:
    return graph_path(model, cache).with_suffix('.failed')


def _fingerprint(model: VPRModel) -> str:
    from vpr_core.model.checkpoint import model_fingerprint
    return getattr(model, 'fingerprint', None) or model_fingerprint(model)


def _versions() -> dict[str, str]:
    """What an export and its session depend on: a change in any of them tries again."""
    found = {}
    for name in _LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = 'none'
    return found
