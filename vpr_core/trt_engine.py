"""TensorRT engines from the model's ONNX graph: cache key, build or load, and I/O binding.

An engine is tied to the GPU model and the TensorRT version that built it, so it is built on
the machine that runs it, once, and kept next to the ONNX graph in the cache
(``$VPR_CACHE/onnx/<fingerprint>-<H>x<W>-<fp16|fp32>.plan``) with a JSON record of its
:class:`EngineKey` and the plan's sha256. A load whose key differs (another model, GPU,
TensorRT version, precision or batch range) or whose bytes do not match the record builds the
engine again and replaces both files (atomically, plan first, record last).

The pieces that need no GPU are plain functions over duck-typed engine and context objects
(TensorRT's name-based tensor API, 8.5 and later): :func:`bind_io` checks an engine's inputs
and outputs against the model, :func:`run_engine` feeds a batch in chunks of the engine's
largest batch. Only :func:`build_plan` imports ``tensorrt``.

fp32 engines are built without TF32 (as the torch float32 path on CUDA), so "fp32" means
float32 arithmetic; fp16 engines set TensorRT's FP16 flag (layers may run in fp16, the
engine's inputs and outputs stay float32).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from vpr_core.errors import ConfigError, VPRError

LOG = logging.getLogger(__name__)
INPUT = 'image'
WORKSPACE_BYTES = 1 << 30
ORT_PROVIDER = 'TensorrtExecutionProvider'
MISSING = (
    "backend 'tensorrt' needs TensorRT, which is not installed here: pip install tensorrt "
    "(x86-64 with a CUDA torch), JetPack's python3-libnvinfer on a Jetson, or onnxruntime-gpu "
    "with the TensorRT libraries (its TensorrtExecutionProvider builds the engine)")
_DTYPES = {'FLOAT': torch.float32, 'HALF': torch.float16}


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; a change of any field means a new build."""

    fingerprint: str
    input_size: tuple[int, int]
    gpu: str
    tensorrt: str
    precision: str          # 'fp16' | 'fp32'
    max_batch: int
    opt_batch: int = 1

    def record(self) -> dict[str, Any]:
        """The key as a JSON-able dict (what the engine's record stores)."""
        out = dataclasses.asdict(self)
        out['input_size'] = list(self.input_size)
        return out

    def digest(self) -> str:
        """A short stable hash of the key (for folder names of other engine caches)."""
        text = json.dumps(self.record(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def plan_path(onnx_path: str | os.PathLike, key: EngineKey) -> Path:
    """Where the engine of ``key`` for the graph ``onnx_path`` lives (its record: .json)."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f'{onnx_path.stem}-{key.precision}.plan')


def stale_reason(record: dict | None, key: EngineKey) -> str | None:
    """Why a stored engine with ``record`` cannot serve ``key`` (None: it can)."""
    if record is None:
        return 'no engine built yet'
    wanted = key.record()
    changed = [f'{name} {record.get(name)!r} -> {value!r}' for name, value in wanted.items()
               if record.get(name) != value]
    return ', '.join(changed) or None


def load_or_build(onnx_path: str | os.PathLike, key: EngineKey, *,
                  build: Callable[[Path, EngineKey], bytes],
                  deserialize: Callable[[bytes], Any]) -> Any:
    """The engine of ``key``: deserialized from the cache when its record and bytes match,
    else built by ``build(onnx_path, key)``, stored, and deserialized."""
    plan = plan_path(onnx_path, key)
    record = _read_record(plan.with_suffix('.json'))
    reason = stale_reason(record, key)
    if reason is None:
        data = plan.read_bytes() if plan.is_file() else b''
        if hashlib.sha256(data).hexdigest() != record.get('sha256'):
            reason = 'engine file missing or changed since it was built'
        else:
            engine = deserialize(data)
            if engine is not None:
                LOG.info('TensorRT engine loaded from %s', plan)
                return engine
            reason = 'TensorRT could not deserialize the stored engine'
    LOG.warning('building the TensorRT engine %s (%s); this takes minutes once', plan, reason)
    data = build(Path(onnx_path), key)
    _store(plan, data, key)
    engine = deserialize(data)
    if engine is None:
        raise VPRError(f'TensorRT built an engine it cannot deserialize: {plan}')
    return engine


@dataclass(frozen=True)
class EngineIO:
    """The checked inputs and outputs of an engine: ``outputs`` are (name, width, dtype)."""

    input_shape: tuple[int, int, int]
    outputs: tuple[tuple[str, int, torch.dtype], ...]


def bind_io(engine: Any, *, input_size: tuple[int, int], out_dim: int,
            code_bits: int) -> EngineIO:
    """Check that ``engine`` takes ``image`` [-1, 3, H, W] float32 and returns exactly the
    model's outputs (``descriptor`` [-1, out_dim], ``code`` [-1, code_bits]) as float32 or
    float16; a mismatch is a :class:`ConfigError` naming what differs."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n).name == 'INPUT']
    expected_in = (-1, 3, *input_size)
    if inputs != [INPUT]:
        raise ConfigError(f'the TensorRT engine takes inputs {inputs}, expected [{INPUT!r}]')
    shape = tuple(engine.get_tensor_shape(INPUT))
    if shape != expected_in or _dtype(engine, INPUT) != torch.float32:
        raise ConfigError(f'the TensorRT engine input is {shape} '
                          f'{engine.get_tensor_dtype(INPUT).name}, expected {expected_in} FLOAT')
    wanted = {name: width for name, width in (('descriptor', out_dim), ('code', code_bits))
              if width}
    found = [n for n in names if n not in inputs]
    if sorted(found) != sorted(wanted):
        raise ConfigError(f'the TensorRT engine returns {sorted(found)}, the model has '
                          f'{sorted(wanted)}')
    outputs = []
    for name in found:
        shape = tuple(engine.get_tensor_shape(name))
        if shape != (-1, wanted[name]):
            raise ConfigError(f'TensorRT engine output {name!r} is {shape}, expected '
                              f'{(-1, wanted[name])}')
        outputs.append((name, wanted[name], _dtype(engine, name)))
    return EngineIO((3, *input_size), tuple(outputs))


def run_engine(context: Any, io: EngineIO, batch: torch.Tensor, *, max_batch: int,
               stream: int) -> dict[str, torch.Tensor]:
    """[B, 3, H, W] float32 on the engine's device -> {output name: [B, width] tensor},
    enqueued on ``stream`` in chunks of at most ``max_batch`` images. The caller
    synchronizes the stream before reading the outputs."""
    if batch.dim() != 4 or tuple(batch.shape[1:]) != io.input_shape:
        raise ConfigError(f'the TensorRT engine takes [B, {", ".join(map(str, io.input_shape))}]'
                          f' images, got {list(batch.shape)}')
    batch = batch.to(torch.float32).contiguous()
    count = int(batch.shape[0])
    outputs = {name: torch.empty((count, width), dtype=dtype, device=batch.device)
               for name, width, dtype in io.outputs}
    for start in range(0, count, max_batch):
        chunk = batch[start:start + max_batch]
        rows = int(chunk.shape[0])
        if not context.set_input_shape(INPUT, tuple(chunk.shape)):
            raise ConfigError(f'the TensorRT engine refused a batch of {rows} '
                              f'(built for 1..{max_batch})')
        context.set_tensor_address(INPUT, chunk.data_ptr())
        for name, width, _ in io.outputs:
            shape = tuple(context.get_tensor_shape(name))
            if shape != (rows, width):
                raise VPRError(f'TensorRT output {name!r} has shape {shape}, expected '
                               f'{(rows, width)}')
            context.set_tensor_address(name, outputs[name][start:start + rows].data_ptr())
        if not context.execute_async_v3(stream):
            raise VPRError('TensorRT could not enqueue the engine')
    return outputs


def build_plan(onnx_path: Path, key: EngineKey) -> bytes:
    """Build a serialized engine of the graph ``onnx_path`` for ``key`` (needs tensorrt)."""
    import tensorrt as trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if int(trt.__version__.split('.')[0]) >= 10 else \
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConfigError(f'TensorRT {trt.__version__} cannot parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if key.precision == 'fp16':
        config.set_flag(trt.BuilderFlag.FP16)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)
    height, width = key.input_size
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, (1, 3, height, width), (key.opt_batch, 3, height, width),
                      (key.max_batch, 3, height, width))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise VPRError(f'TensorRT {trt.__version__} could not build an engine of {onnx_path}')
    return bytes(memoryview(plan))


def ort_options(key: EngineKey, folder: Path, device_id: int) -> dict:
    """onnxruntime TensorRT provider options: precision, engine cache and batch profile."""
    height, width = key.input_size

    def shape(batch: int) -> str:
        return f'{INPUT}:{batch}x3x{height}x{width}'
    return {'device_id': device_id, 'trt_fp16_enable': key.precision == 'fp16',
            'trt_engine_cache_enable': True, 'trt_engine_cache_path': str(folder),
            'trt_max_workspace_size': WORKSPACE_BYTES,
            'trt_profile_min_shapes': shape(1), 'trt_profile_opt_shapes': shape(key.opt_batch),
            'trt_profile_max_shapes': shape(key.max_batch)}


def ort_providers(available: list[str], options: dict) -> list:
    """TensorRT first (with ``options``), CUDA for what TensorRT leaves, then CPU."""
    if ORT_PROVIDER not in available:
        raise ConfigError(MISSING)
    return [(ORT_PROVIDER, options)] + \
        [(p, {'device_id': options['device_id']}) if p == 'CUDAExecutionProvider' else p
         for p in ('CUDAExecutionProvider', 'CPUExecutionProvider') if p in available]


def require_ort_provider(session_providers: list[str]) -> None:
    """onnxruntime lists its TensorRT provider even where the TensorRT libraries are missing,
    then falls back silently: refuse to run CUDA or the CPU under the name ``tensorrt``."""
    if ORT_PROVIDER not in session_providers:
        raise ConfigError("backend 'tensorrt': onnxruntime could not start its TensorRT "
                          f"execution provider (session has {', '.join(session_providers)}); "
                          'install the TensorRT libraries that this onnxruntime-gpu was built '
                          'with, or pip install tensorrt')


def _dtype(engine: Any, name: str) -> torch.dtype:
    kind = engine.get_tensor_dtype(name).name
    if kind not in _DTYPES:
        raise ConfigError(f'TensorRT engine tensor {name!r} is {kind}, expected FLOAT or HALF')
    return _DTYPES[kind]


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _store(plan: Path, data: bytes, key: EngineKey) -> None:
    from vpr_core.model.weights import atomic_write_path
    plan.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(plan) as tmp:
        tmp.write_bytes(data)
    record = dict(key.record(), sha256=hashlib.sha256(data).hexdigest())
    with atomic_write_path(plan.with_suffix('.json')) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + '\n')
