"""Inference backends: what runs the model's forward pass for the :class:`Extractor`.

Every backend turns [B, 3, H, W] ImageNet-normalised float32 images into ``(floats, signs)``:
``floats`` [B, D] float32 L2-normalised (None without a float head) and ``signs`` [B, bits]
float32 in {-1, +1} (None without a hashing branch). Registered names:

- ``torch``: the PyTorch module on CPU or CUDA (fp16 autocast on CUDA by default);
- ``onnxruntime``: the model's ONNX graph (:mod:`vpr_core.model.export`) in an onnxruntime
  session: CPU, or CUDA where the installed onnxruntime has that execution provider. The
  graph is exported on first use into ``$VPR_CACHE/onnx`` (:mod:`vpr_core.onnx_cache`);
- ``tensorrt``: a TensorRT engine built from that ONNX graph on the GPU that runs it
  (CUDA only; fp16 by default as torch): through the ``tensorrt`` Python package when
  installed (engine cached next to the graph, keyed by fingerprint, GPU, TensorRT version,
  precision and batch range: :mod:`vpr_core.trt_engine`), else through onnxruntime's
  TensorRT execution provider (its engine cache in a folder named by the same key). Without
  either, an error names what to install. Never run on a GPU yet (``docs/gpu.md``);
- ``auto``: ``onnxruntime`` on CPU where it is installed (2.5-2.7x faster per frame than
  torch eager at batch 1 for the bundled model on the 2-core development CPU, preprocessing
  included, ``bench/backends.py``), ``torch`` on CUDA (fp16 autocast; not measured against
  onnxruntime there, so an onnxruntime CUDA build is used only when asked for by name). When
  the graph cannot be exported or loaded on CPU (read-only cache folder, full disk), ``auto``
  runs torch with a warning instead of failing (a failure of the graph itself is noted, so
  the next start does not try again); the default of the node and of every CLI.

The descriptors do not depend on the backend beyond float rounding (onnxruntime on CPU
against torch: at most 1.1e-5 apart on 206 real images, one code bit of 47,104 different,
``test_io_backends.py``), so the model fingerprint stays the map's compatibility key; the
extractor's ``backend`` names the one in use, for the map manifest and diagnostics.
"""
from __future__ import annotations

import importlib.util
import logging
import os
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from vpr_core import trt_engine
from vpr_core.devices import autocast, thread_count, use_fp16
from vpr_core.errors import ConfigError
from vpr_core.model.vpr_model import VPRModel
from vpr_core.onnx_cache import (cached_onnx, forget_failure, PASSING_ERRORS, remember_failure,
                                 remembered_failure)

LOG = logging.getLogger(__name__)
BACKENDS = ('auto', 'torch', 'onnxruntime', 'tensorrt')
# What the node and every CLI run unless told otherwise (bench/backends.py: onnxruntime is
# 2.5-2.7x faster per frame than torch eager on CPU; its one-off export is cached per model).
DEFAULT_BACKEND = 'auto'
BACKEND_HELP = ('inference backend: auto (onnxruntime on CPU, its graph exported into '
                '$VPR_CACHE/onnx at the first start with a model, which then takes longer; '
                'torch on CUDA, or where the graph fails), torch, onnxruntime or tensorrt '
                '(CUDA only)')
TENSORRT_MAX_BATCH = 32     # an engine's largest batch; bigger batches run in chunks
Outputs = tuple[np.ndarray | None, np.ndarray | None]


def add_backend_argument(parser) -> None:
    """``--backend`` of every verb that runs the model (one default, one help text)."""
    parser.add_argument('--backend', choices=BACKENDS, default=DEFAULT_BACKEND,
                        help=BACKEND_HELP)


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


class TensorRTBackend:
    """A TensorRT engine of the model's ONNX graph, run through the ``tensorrt`` package on a
    CUDA stream of its own, in torch-allocated buffers (no pycuda)."""

    name = 'tensorrt'

    def __init__(self, model: VPRModel, device: torch.device, fp16: bool, *,
                 cache: str | os.PathLike | None = None,
                 max_batch: int = TENSORRT_MAX_BATCH) -> None:
        import tensorrt
        self.device = device
        self.fp16 = fp16
        self.max_batch = max_batch
        onnx_path = cached_onnx(model, cache=cache)
        key = engine_key(model, gpu=gpu_name(device), tensorrt=tensorrt.__version__,
                         fp16=fp16, max_batch=max_batch)
        self.path = trt_engine.plan_path(onnx_path, key)
        self._runtime = tensorrt.Runtime(tensorrt.Logger(tensorrt.Logger.WARNING))
        with torch.cuda.device(device):
            self.engine = trt_engine.load_or_build(
                onnx_path, key, build=trt_engine.build_plan,
                deserialize=self._runtime.deserialize_cuda_engine)
            self.io = trt_engine.bind_io(self.engine, input_size=key.input_size,
                                         out_dim=int(model.out_dim),
                                         code_bits=int(model.code_bits))
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(device)
        LOG.info('TensorRT %s engine (%s) on %s: %s', tensorrt.__version__, key.precision,
                 key.gpu, self.path)

    def run(self, batch: torch.Tensor) -> Outputs:
        # its own stream: TensorRT syncs extra around the legacy default stream; the copy
        # in, the engine and the outputs are all ordered on it
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            image = batch.to(self.device)       # referenced until the stream is done
            found = trt_engine.run_engine(self.context, self.io, image,
                                          max_batch=self.max_batch,
                                          stream=self.stream.cuda_stream)
            self.stream.synchronize()
        return engine_outputs(found)


class OnnxRuntimeBackend:
    """The model's ONNX graph in one onnxruntime session (threads: the process policy)."""

    name = 'onnxruntime'

    def __init__(self, model: VPRModel, device: torch.device, *,
                 cache: str | os.PathLike | None = None, providers: list | None = None,
                 name: str = 'onnxruntime', max_batch: int | None = None) -> None:
        import onnxruntime
        self.name = name
        self.device = device
        self.fp16 = False
        self.max_batch = max_batch
        self.path = cached_onnx(model, cache=cache)
        self.providers = providers or _providers(onnxruntime.get_available_providers(), device)
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
        step = self.max_batch or max(1, len(image))
        parts = [dict(zip(self.outputs, self.session.run(None, {'image': image[i:i + step]})))
                 for i in range(0, len(image), step)]
        return tuple(np.concatenate([part[name] for part in parts])
                     if name in self.outputs else None for name in ('descriptor', 'code'))


def create_backend(name: str, model: VPRModel, device: torch.device, *,
                   fp16: bool | None = None,
                   cache: str | os.PathLike | None = None) -> InferenceBackend:
    """The backend ``name`` (one of :data:`BACKENDS`) running ``model`` on ``device``."""
    if name not in BACKENDS:
        raise ConfigError(f'unknown inference backend {name!r}; valid: {", ".join(BACKENDS)}')
    if name == 'auto':
        name = resolve_auto(device)
        if name == 'onnxruntime':
            return _onnxruntime_or_torch(model, device, fp16, cache)
    if name == 'torch':
        return TorchBackend(model, device, fp16)
    if name == 'onnxruntime':
        if importlib.util.find_spec('onnxruntime') is None:
            raise ConfigError("backend 'onnxruntime' needs the onnxruntime package "
                              '(pip install onnxruntime, or onnxruntime-gpu for CUDA)')
        if fp16:
            LOG.warning('fp16 is a torch/TensorRT setting; onnxruntime runs the float32 graph')
        return OnnxRuntimeBackend(model, device, cache=cache)
    return create_tensorrt(model, device, fp16=fp16, cache=cache)


def _onnxruntime_or_torch(model: VPRModel, device: torch.device, fp16: bool | None,
                          cache: str | os.PathLike | None) -> InferenceBackend:
    """``auto`` on CPU: onnxruntime, or torch when the graph cannot be exported or loaded
    here (a read-only cache folder, a full disk, an operator the exporter does not know): an
    acceleration that is not available must not stop a node from starting. A failure of the
    graph itself is noted in the cache (:mod:`vpr_core.onnx_cache`), so later starts go
    straight to torch; a passing one (memory, the file system, a missing package) is not."""
    failed = remembered_failure(model, cache)
    if failed is None:
        try:
            backend = OnnxRuntimeBackend(model, device, cache=cache)
            forget_failure(model, cache)
            return backend
        except Exception as exc:    # noqa: BLE001 - any failure: the torch path still works
            failed = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
            if not isinstance(exc, PASSING_ERRORS):
                remember_failure(model, cache, failed)
    LOG.warning('backend auto: onnxruntime is not usable for this model here (%s); running '
                'torch', failed)
    return TorchBackend(model, device, fp16)


def resolve_auto(device: torch.device) -> str:
    """``auto`` -> ``onnxruntime`` on CPU when installed, else ``torch``."""
    if device.type == 'cpu' and importlib.util.find_spec('onnxruntime') is not None:
        return 'onnxruntime'
    return 'torch'


def create_tensorrt(model: VPRModel, device: torch.device, *, fp16: bool | None = None,
                    cache: str | os.PathLike | None = None,
                    max_batch: int = TENSORRT_MAX_BATCH) -> InferenceBackend:
    """The ``tensorrt`` backend: the native engine where the ``tensorrt`` package is
    installed, else onnxruntime's TensorRT execution provider; else a ConfigError."""
    providers: list[str] = []
    if importlib.util.find_spec('onnxruntime') is not None:
        import onnxruntime
        providers = onnxruntime.get_available_providers()
    runtime = tensorrt_runtime(device, native=importlib.util.find_spec('tensorrt') is not None,
                               ort_providers=providers)
    fp16 = use_fp16(device, fp16)
    if runtime == 'native':
        return TensorRTBackend(model, device, fp16, cache=cache, max_batch=max_batch)
    return _ort_tensorrt(model, device, fp16, cache, max_batch)


def _ort_tensorrt(model: VPRModel, device: torch.device, fp16: bool,
                  cache: str | os.PathLike | None, max_batch: int) -> OnnxRuntimeBackend:
    """onnxruntime's TensorRT provider, its engine cache in a folder named by the key."""
    import onnxruntime
    key = engine_key(model, gpu=gpu_name(device), fp16=fp16, max_batch=max_batch,
                     tensorrt=f'onnxruntime {onnxruntime.__version__}')
    onnx_path = cached_onnx(model, cache=cache)
    folder = onnx_path.with_name(f'{onnx_path.stem}-ort-trt-{key.digest()}')
    folder.mkdir(parents=True, exist_ok=True)
    options = trt_engine.ort_options(key, folder, device.index or 0)
    providers = trt_engine.ort_providers(onnxruntime.get_available_providers(), options)
    backend = OnnxRuntimeBackend(model, device, cache=cache, name='tensorrt',
                                 max_batch=max_batch, providers=providers)
    trt_engine.require_ort_provider(backend.session.get_providers())
    backend.fp16 = fp16
    return backend


def tensorrt_runtime(device: torch.device, *, native: bool, ort_providers: list[str]) -> str:
    """Which runtime serves ``tensorrt``: ``native`` (the tensorrt package, preferred) or
    ``onnxruntime`` (its TensorRT execution provider). Neither, or a device that is not
    CUDA: a ConfigError that says what to install or change."""
    if not native and trt_engine.ORT_PROVIDER not in ort_providers:
        raise ConfigError(trt_engine.MISSING)
    if device.type != 'cuda':
        raise ConfigError(f"backend 'tensorrt' runs on a CUDA GPU; device is {device} "
                          "(use device cuda, or backend onnxruntime / torch on the CPU)")
    return 'native' if native else 'onnxruntime'


def engine_key(model: VPRModel, *, gpu: str, tensorrt: str, fp16: bool,
               max_batch: int) -> trt_engine.EngineKey:
    """The :class:`~vpr_core.trt_engine.EngineKey` of ``model`` on ``gpu``."""
    from vpr_core.model.checkpoint import model_fingerprint
    if max_batch < 1:
        raise ConfigError(f'a TensorRT engine needs max_batch >= 1, got {max_batch}')
    fingerprint = getattr(model, 'fingerprint', None) or model_fingerprint(model)
    return trt_engine.EngineKey(fingerprint=fingerprint,
                                input_size=tuple(model.config.preprocess.test_size),
                                gpu=gpu, tensorrt=tensorrt,
                                precision='fp16' if fp16 else 'fp32', max_batch=int(max_batch))


def gpu_name(device: torch.device) -> str:
    """The GPU's name and compute capability, e.g. ``NVIDIA H100 PCIe sm_90``."""
    major, minor = torch.cuda.get_device_capability(device)
    return f'{torch.cuda.get_device_name(device)} sm_{major}{minor}'


def engine_outputs(found: dict[str, torch.Tensor]) -> Outputs:
    """An engine's output tensors -> (unit float32 descriptors, float32 signs) on the host."""
    floats, signs = found.get('descriptor'), found.get('code')
    return (None if floats is None else F.normalize(floats.float(), dim=-1).cpu().numpy(),
            None if signs is None else signs.float().cpu().numpy())


def _providers(available: list[str], device: torch.device) -> list:
    """Execution providers of the ``onnxruntime`` backend: CUDA then CPU on a CUDA device.

    Never TensorRT: its engine build takes minutes at every session start without a cache;
    the ``tensorrt`` backend sets one up (:func:`create_tensorrt`).
    """
    if device.type != 'cuda':
        return ['CPUExecutionProvider']
    if 'CUDAExecutionProvider' not in available:
        raise ConfigError('device cuda with backend onnxruntime needs an onnxruntime build '
                          'with the CUDA execution provider (pip install onnxruntime-gpu); '
                          f'this one has {", ".join(available)}')
    return [('CUDAExecutionProvider', {'device_id': device.index or 0}), 'CPUExecutionProvider']
