"""Inference backends: what runs the model's forward pass for the :class:`Extractor`.

Every backend turns [B, 3, H, W] ImageNet-normalised float32 images into ``(floats, signs)``:
``floats`` [B, D] float32 L2-normalised (None without a float head) and ``signs`` [B, bits]
float32 in {-1, +1} (None without a hashing branch). Registered names:

- ``torch``: the PyTorch module on CPU or CUDA (fp16 autocast on CUDA by default);
- ``onnxruntime``: the model's ONNX graph (:mod:`vpr_core.model.export`) in an onnxruntime
  session: CPU, or CUDA / TensorRT execution providers where the installed onnxruntime has
  them. The graph is exported on first use into ``$VPR_CACHE/onnx`` (default
  ``~/.cache/vpr_ros/onnx``), keyed by the model fingerprint and input size, written
  atomically, and checked against the fingerprint whenever it is loaded;
- ``tensorrt``: reserved for a native TensorRT engine; an error names what is missing;
- ``auto``: ``onnxruntime`` on CPU where it is installed (2.5-2.7x faster per frame than
  torch eager at batch 1 for the bundled model on the 2-core development CPU, preprocessing
  included, ``bench/backends.py``), ``torch`` on CUDA (fp16 autocast; not measured against
  onnxruntime there, so an onnxruntime CUDA build is used only when asked for by name).

The descriptors do not depend on the backend beyond float rounding (onnxruntime on CPU
against torch: at most 1.1e-5 apart on 206 real images, one code bit of 47,104 different,
``test_io_backends.py``), so the model fingerprint stays the map's compatibility key; the
extractor's ``backend`` names the one in use, for the map manifest and diagnostics.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from vpr_core.devices import autocast, thread_count, use_fp16
from vpr_core.errors import ConfigError
from vpr_core.model.vpr_model import VPRModel

LOG = logging.getLogger(__name__)
BACKENDS = ('auto', 'torch', 'onnxruntime', 'tensorrt')
Outputs = tuple[np.ndarray | None, np.ndarray | None]


class InferenceBackend(Protocol):
    """[B, 3, H, W] normalised float32 -> (floats [B, D] unit rows, signs [B, bits] +-1)."""

    name: str

    def run(self, batch: torch.Tensor) -> Outputs:
        ...


class TorchBackend:
    """The PyTorch module itself, on ``device``; fp16 autocast where ``fp16`` (CUDA only)."""

    name = 'torch'

    def __init__(self, model: VPRModel, device: torch.device, fp16: bool | None) -> None:
        self.device = device
        self.model = model.to(device).eval()
        self.fp16 = use_fp16(device, fp16)

    @torch.inference_mode()
    def run(self, batch: torch.Tensor) -> Outputs:
        with autocast(self.device, self.fp16):
            values, signs = self.model.descriptors(batch.to(self.device))
        floats = None if values is None else \
            F.normalize(values.float(), dim=-1).cpu().numpy()
        return floats, None if signs is None else signs.float().cpu().numpy()


class OnnxRuntimeBackend:
    """The model's ONNX graph in one onnxruntime session (threads: the process policy)."""

    name = 'onnxruntime'

    def __init__(self, model: VPRModel, device: torch.device, *,
                 cache: str | os.PathLike | None = None) -> None:
        import onnxruntime
        self.device = device
        self.path = cached_onnx(model, cache=cache)
        self.providers = _providers(onnxruntime.get_available_providers(), device)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = thread_count()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # idle workers sleep instead of spinning: on a shared CPU a spinning thread takes the
        # core that another process (or the ROS executor) is waiting for
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
        self.session = onnxruntime.InferenceSession(str(self.path), options,
                                                    providers=self.providers)
        self.outputs = [output.name for output in self.session.get_outputs()]
        LOG.info('onnxruntime %s on %s (%d thread(s)): %s', onnxruntime.__version__,
                 ', '.join(self.session.get_providers()), thread_count(), self.path)

    def run(self, batch: torch.Tensor) -> Outputs:
        image = np.ascontiguousarray(batch.detach().to('cpu', torch.float32).numpy())
        found = dict(zip(self.outputs, self.session.run(None, {'image': image})))
        return found.get('descriptor'), found.get('code')


def create_backend(name: str, model: VPRModel, device: torch.device, *,
                   fp16: bool | None = None,
                   cache: str | os.PathLike | None = None) -> InferenceBackend:
    """The backend ``name`` (one of :data:`BACKENDS`) running ``model`` on ``device``."""
    if name not in BACKENDS:
        raise ConfigError(f'unknown inference backend {name!r}; valid: {", ".join(BACKENDS)}')
    if name == 'auto':
        name = resolve_auto(device)
    if name == 'torch':
        return TorchBackend(model, device, fp16)
    if name == 'onnxruntime':
        if importlib.util.find_spec('onnxruntime') is None:
            raise ConfigError("backend 'onnxruntime' needs the onnxruntime package "
                              '(pip install onnxruntime, or onnxruntime-gpu for CUDA)')
        if fp16:
            LOG.warning('fp16 is a torch/TensorRT setting; onnxruntime runs the float32 graph')
        return OnnxRuntimeBackend(model, device, cache=cache)
    raise ConfigError(_tensorrt_message())


def resolve_auto(device: torch.device) -> str:
    """``auto`` -> ``onnxruntime`` on CPU when installed, else ``torch``."""
    if device.type == 'cpu' and importlib.util.find_spec('onnxruntime') is not None:
        return 'onnxruntime'
    return 'torch'


def cached_onnx(model: VPRModel, *, cache: str | os.PathLike | None = None) -> Path:
    """The model's ONNX graph in the cache, exported (atomically) when absent or stale."""
    from vpr_core.model.checkpoint import model_fingerprint
    from vpr_core.model.export import export_onnx, onnx_fingerprint
    from vpr_core.model.weights import cache_dir
    fingerprint = getattr(model, 'fingerprint', None) or model_fingerprint(model)
    height, width = model.config.preprocess.test_size
    path = cache_dir(cache) / 'onnx' / f'{fingerprint[:32]}-{height}x{width}.onnx'
    if path.is_file() and onnx_fingerprint(path) == fingerprint:
        return path
    if path.exists():
        LOG.warning('cached ONNX graph %s does not carry fingerprint %s; exporting again',
                    path, fingerprint[:12])
    LOG.info('exporting the model to ONNX once: %s', path)
    export_onnx(model, path)
    return path


def _providers(available: list[str], device: torch.device) -> list[str]:
    """Execution providers for ``device``: TensorRT and CUDA first on CUDA where present."""
    if device.type != 'cuda':
        return ['CPUExecutionProvider']
    wanted = [p for p in ('TensorrtExecutionProvider', 'CUDAExecutionProvider')
              if p in available]
    if not wanted:
        raise ConfigError('device cuda with backend onnxruntime needs an onnxruntime build '
                          'with the CUDA execution provider (pip install onnxruntime-gpu); '
                          f'this one has {", ".join(available)}')
    return wanted + ['CPUExecutionProvider']


def _tensorrt_message() -> str:
    if importlib.util.find_spec('tensorrt') is None:
        return ("backend 'tensorrt' is not available on this machine (no tensorrt package); "
                "use backend 'onnxruntime' with onnxruntime-gpu, whose TensorRT execution "
                "provider builds the engine, or build one with trtexec (vpr export-onnx)")
    return ("backend 'tensorrt' (a native engine) is not implemented; use backend "
            "'onnxruntime' with onnxruntime-gpu, whose TensorRT execution provider is used "
            'when installed')
