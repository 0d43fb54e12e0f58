"""The ``tensorrt`` backend on a machine without a GPU: what to install, which runtime is
chosen, the engine cache (key, rebuild, corrupt files), and the engine I/O binding run against
fake engine and context objects that read and write the buffers' memory as TensorRT does.

None of this runs TensorRT; ``test_tensorrt_matches_torch`` (marked ``gpu``) does, where
there is a CUDA device and TensorRT.
"""
import ctypes
import importlib.util
import json
import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from io_tiny_models import tiny_model
from vpr_core import backends, trt_engine
from vpr_core.errors import ConfigError, VPRError
from vpr_core.extractor import Extractor
from vpr_core.model.checkpoint import model_fingerprint

CUDA = torch.device('cuda', 0)
KEY = trt_engine.EngineKey(fingerprint='f' * 64, input_size=(28, 28), gpu='NVIDIA L4 sm_89',
                           tensorrt='10.3.0', precision='fp16', max_batch=32)


def _ort_has_tensorrt() -> bool:
    if importlib.util.find_spec('onnxruntime') is None:
        return False
    import onnxruntime
    return trt_engine.ORT_PROVIDER in onnxruntime.get_available_providers()


@pytest.mark.skipif(importlib.util.find_spec('tensorrt') is not None or _ort_has_tensorrt(),
                    reason='TensorRT is installed here')
@pytest.mark.parametrize('device', ['cpu', 'auto'])
def test_without_tensorrt_the_error_names_what_to_install(device):
    with pytest.raises(ConfigError) as error:
        Extractor(tiny_model('float'), device=device, backend='tensorrt')
    for hint in ('pip install tensorrt', 'python3-libnvinfer', 'onnxruntime-gpu'):
        assert hint in str(error.value)


def test_runtime_choice():
    providers = ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']
    choose = backends.tensorrt_runtime
    assert choose(CUDA, native=True, ort_providers=providers) == 'native'
    assert choose(CUDA, native=True, ort_providers=[]) == 'native'
    assert choose(CUDA, native=False, ort_providers=providers) == 'onnxruntime'
    with pytest.raises(ConfigError, match='pip install tensorrt'):
        choose(CUDA, native=False, ort_providers=providers[1:])
    with pytest.raises(ConfigError, match='runs on a CUDA GPU; device is cpu'):
        choose(torch.device('cpu'), native=True, ort_providers=providers)


def test_onnxruntime_tensorrt_provider_options(tmp_path):
    options = trt_engine.ort_options(KEY, tmp_path, 0)
    assert options['trt_fp16_enable'] is True
    assert options['trt_engine_cache_enable'] is True
    assert options['trt_engine_cache_path'] == str(tmp_path)
    assert (options['trt_profile_min_shapes'], options['trt_profile_opt_shapes'],
            options['trt_profile_max_shapes']) == \
        ('image:1x3x28x28', 'image:1x3x28x28', 'image:32x3x28x28')
    every = ['CPUExecutionProvider', 'CUDAExecutionProvider', 'TensorrtExecutionProvider']
    assert trt_engine.ort_providers(every, options) == [
        ('TensorrtExecutionProvider', options), ('CUDAExecutionProvider', {'device_id': 0}),
        'CPUExecutionProvider']
    with pytest.raises(ConfigError, match='onnxruntime-gpu'):
        trt_engine.ort_providers(every[:2], options)
    # onnxruntime falls back silently when the TensorRT libraries are missing: refused
    trt_engine.require_ort_provider(every[::-1])
    with pytest.raises(ConfigError, match='could not start its TensorRT'):
        trt_engine.require_ort_provider(every[:2])


def test_engine_key_of_a_model():
    model = tiny_model('two_branch')
    key = backends.engine_key(model, gpu='Orin sm_87', tensorrt='8.6.2', fp16=False,
                              max_batch=8)
    assert key.fingerprint == model_fingerprint(model)
    assert (key.input_size, key.precision, key.max_batch, key.opt_batch) == \
        ((28, 28), 'fp32', 8, 1)
    assert key.digest() != backends.engine_key(model, gpu='Orin sm_87', tensorrt='10.3.0',
                                               fp16=False, max_batch=8).digest()
    with pytest.raises(ConfigError, match='max_batch >= 1'):
        backends.engine_key(model, gpu='x', tensorrt='10', fp16=True, max_batch=0)


class Builds:
    """A fake builder (counts builds, plan = key digest) and deserializer."""

    def __init__(self):
        self.built, self.loaded, self.refuse = [], [], False

    def build(self, onnx_path, key):
        self.built.append(key)
        return f'plan {key.digest()}'.encode()

    def deserialize(self, data):
        self.loaded.append(data)
        return None if self.refuse else SimpleNamespace(data=data)


def _load(onnx, key, fake):
    return trt_engine.load_or_build(onnx, key, build=fake.build, deserialize=fake.deserialize)


def test_engine_is_built_once_and_loaded_after(tmp_path):
    onnx, fake = tmp_path / 'model-28x28.onnx', Builds()
    first = _load(onnx, KEY, fake)
    plan = trt_engine.plan_path(onnx, KEY)
    assert plan.name == 'model-28x28-fp16.plan' and fake.built == [KEY]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model-28x28-fp16.json', plan.name]
    record = json.loads(plan.with_suffix('.json').read_text())
    assert record['gpu'] == KEY.gpu and record['tensorrt'] == KEY.tensorrt
    again = _load(onnx, KEY, fake)
    assert fake.built == [KEY] and again.data == first.data == plan.read_bytes()


@pytest.mark.parametrize('change', [{'gpu': 'NVIDIA H100 PCIe sm_90'}, {'tensorrt': '10.4.0'},
                                    {'fingerprint': 'e' * 64}, {'max_batch': 64}])
def test_engine_is_rebuilt_when_its_key_changes(tmp_path, change, caplog):
    onnx, fake = tmp_path / 'model-28x28.onnx', Builds()
    _load(onnx, KEY, fake)
    changed = trt_engine.EngineKey(**{**KEY.__dict__, **change})
    with caplog.at_level(logging.WARNING, logger='vpr_core.trt_engine'):
        engine = _load(onnx, changed, fake)
    assert fake.built == [KEY, changed]
    name, value = next(iter(change.items()))
    assert f'{name} {getattr(KEY, name)!r} -> {value!r}' in caplog.text
    assert engine.data == f'plan {changed.digest()}'.encode()
    assert trt_engine.stale_reason(json.loads(
        trt_engine.plan_path(onnx, changed).with_suffix('.json').read_text()), changed) is None


def test_fp16_and_fp32_engines_are_separate_files(tmp_path):
    onnx, fake = tmp_path / 'm.onnx', Builds()
    fp32 = trt_engine.EngineKey(**{**KEY.__dict__, 'precision': 'fp32'})
    _load(onnx, KEY, fake), _load(onnx, fp32, fake), _load(onnx, KEY, fake)
    assert fake.built == [KEY, fp32]


@pytest.mark.parametrize('damage', ['bytes', 'record', 'refused'])
def test_damaged_engine_is_rebuilt(tmp_path, damage):
    onnx, fake = tmp_path / 'm.onnx', Builds()
    _load(onnx, KEY, fake)
    plan = trt_engine.plan_path(onnx, KEY)
    if damage == 'bytes':
        plan.write_bytes(b'truncated')
    elif damage == 'record':
        plan.with_suffix('.json').write_text('{not json')
    else:                           # bytes as recorded, but TensorRT cannot read them
        fake.refuse = True
        with pytest.raises(VPRError, match='cannot deserialize'):
            _load(onnx, KEY, fake)
        assert len(fake.built) == 2
        return
    _load(onnx, KEY, fake)
    assert len(fake.built) == 2 and plan.read_bytes() == f'plan {KEY.digest()}'.encode()


class Enum(SimpleNamespace):
    """Stands for TensorRT's enum values (``DataType.FLOAT``, ``TensorIOMode.INPUT``)."""


class FakeEngine:
    """An engine as TensorRT's name-based API shows it: ``tensors`` name -> (mode, shape,
    dtype name)."""

    def __init__(self, tensors):
        self.tensors = tensors
        self.num_io_tensors = len(tensors)

    def get_tensor_name(self, i):
        return list(self.tensors)[i]

    def get_tensor_mode(self, name):
        return Enum(name=self.tensors[name][0])

    def get_tensor_shape(self, name):
        return self.tensors[name][1]

    def get_tensor_dtype(self, name):
        return Enum(name=self.tensors[name][2])


def engine(**change):
    tensors = {'image': ('INPUT', (-1, 3, 28, 28), 'FLOAT'),
               'descriptor': ('OUTPUT', (-1, 24), 'FLOAT'),
               'code': ('OUTPUT', (-1, 64), 'HALF')}
    for name, value in change.items():
        if value is None:
            del tensors[name]
        else:
            tensors[name] = value
    return FakeEngine(tensors)


def _bind(fake, **sizes):
    return trt_engine.bind_io(fake, **{'input_size': (28, 28), 'out_dim': 24, 'code_bits': 64,
                                       **sizes})


def test_bind_io_reads_the_outputs_the_model_has():
    io = _bind(engine())
    assert io.input_shape == (3, 28, 28)
    assert io.outputs == (('descriptor', 24, torch.float32), ('code', 64, torch.float16))
    assert _bind(engine(code=None), code_bits=0).outputs == (('descriptor', 24, torch.float32),)


@pytest.mark.parametrize('change, sizes, message', [
    ({'image': None, 'pixels': ('INPUT', (-1, 3, 28, 28), 'FLOAT')}, {}, "inputs \\['pixels'"),
    ({'image': ('INPUT', (-1, 3, 32, 32), 'FLOAT')}, {}, 'expected \\(-1, 3, 28, 28\\)'),
    ({'image': ('INPUT', (8, 3, 28, 28), 'FLOAT')}, {}, 'input is \\(8, 3, 28, 28\\)'),
    ({'image': ('INPUT', (-1, 3, 28, 28), 'HALF')}, {}, 'HALF, expected'),
    ({'code': None}, {}, "returns \\['descriptor'\\], the model has \\['code', 'descriptor'"),
    ({}, {'code_bits': 0}, "returns \\['code', 'descriptor'\\], the model has \\['descr"),
    ({'descriptor': ('OUTPUT', (-1, 32), 'FLOAT')}, {}, "'descriptor' is \\(-1, 32\\)"),
    ({'code': ('OUTPUT', (-1, 64), 'INT32')}, {}, "'code' is INT32"),
])
def test_bind_io_refuses_an_engine_of_another_model(change, sizes, message):
    with pytest.raises(ConfigError, match=message):
        _bind(engine(**change), **sizes)


def _memory(address: int, shape: tuple, dtype) -> np.ndarray:
    """The array at a raw address, as TensorRT reads and writes a tensor address."""
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_char * size).from_address(address), dtype=dtype).reshape(shape)


class FakeContext:
    """Computes descriptor[i, j] = mean(image i) + j and code = sign(mean(image i)) from the
    bound memory when executed, as an execution context would on the GPU."""

    def __init__(self, io, max_batch=3):
        self.io, self.max_batch, self.addresses, self.shapes = io, max_batch, {}, []
        self.fail = None

    def set_input_shape(self, name, shape):
        self.shape = shape
        self.shapes.append(shape)
        return shape[0] <= self.max_batch

    def get_tensor_shape(self, name):
        width = dict((n, w) for n, w, _ in self.io.outputs)[name]
        return (self.shape[0] + (self.fail == 'shape'), width)

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def execute_async_v3(self, stream):
        image = _memory(self.addresses['image'], self.shape, np.float32)
        means = image.reshape(len(image), -1).mean(axis=1)
        for name, width, dtype in self.io.outputs:
            out = _memory(self.addresses[name], (len(image), width),
                          torch.empty(0, dtype=dtype).numpy().dtype)
            out[:] = means[:, None] + np.arange(width) if name == 'descriptor' else \
                np.sign(means)[:, None]
        return self.fail != 'execute'


def test_run_engine_binds_every_chunk_and_its_outputs():
    io = _bind(engine())
    context = FakeContext(io)
    batch = torch.randn(7, 3, 28, 28)
    found = trt_engine.run_engine(context, io, batch, max_batch=3, stream=0)
    assert [shape[0] for shape in context.shapes] == [3, 3, 1]
    means = batch.reshape(7, -1).mean(dim=1, keepdim=True)
    assert torch.allclose(found['descriptor'], means + torch.arange(24), atol=1e-5)
    assert found['code'].dtype == torch.float16
    assert torch.equal(found['code'], torch.sign(means).half().expand(7, 64))
    floats, signs = backends.engine_outputs({'descriptor': found['descriptor'].half(),
                                             'code': found['code']})
    assert floats.dtype == signs.dtype == np.float32
    assert np.allclose(np.linalg.norm(floats, axis=1), 1.0, atol=1e-6)


def test_run_engine_errors():
    io = _bind(engine())
    with pytest.raises(ConfigError, match='takes \\[B, 3, 28, 28\\] images, got \\[2, 3, 32'):
        trt_engine.run_engine(FakeContext(io), io, torch.zeros(2, 3, 32, 32), max_batch=3,
                              stream=0)
    with pytest.raises(ConfigError, match='refused a batch of 4'):
        trt_engine.run_engine(FakeContext(io, max_batch=2), io, torch.zeros(4, 3, 28, 28),
                              max_batch=4, stream=0)
    for fail, error in (('execute', 'could not enqueue'), ('shape', 'has shape \\(3, 24\\)')):
        context = FakeContext(io)
        context.fail = fail
        with pytest.raises(VPRError, match=error):
            trt_engine.run_engine(context, io, torch.zeros(2, 3, 28, 28), max_batch=3,
                                  stream=0)


@pytest.mark.gpu
@pytest.mark.parametrize('fp16, tolerance', [(False, 1e-4), (True, 2e-2)])
def test_tensorrt_matches_torch(tmp_path, images, fp16, tolerance):
    if importlib.util.find_spec('tensorrt') is None and not _ort_has_tensorrt():
        pytest.skip('no TensorRT on this CUDA machine')
    model = tiny_model('two_branch')
    reference = Extractor(model, device='cpu').extract(images)
    engine_run = Extractor(tiny_model('two_branch'), device='cuda', backend='tensorrt',
                           fp16=fp16, onnx_cache=tmp_path)
    assert engine_run.backend == 'tensorrt'
    out = engine_run.extract(images)
    assert np.abs(out.floats - reference.floats).max() < tolerance
