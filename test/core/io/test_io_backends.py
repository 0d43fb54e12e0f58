"""Inference backends: onnxruntime against torch (tiny models and the bundled model on real
images), the fingerprint-keyed ONNX cache, the selection setting and its errors."""
from pathlib import Path

import numpy as np
import pytest
import torch

from io_tiny_models import tiny_model
from vpr_core import backends
from vpr_core.errors import ConfigError, MapError
from vpr_core.extractor import Extractor
from vpr_core.image import load_image_file
from vpr_core.model.checkpoint import model_fingerprint
from vpr_core.preprocess import preprocess_batch

pytest.importorskip('onnxruntime')
DATA = Path(__file__).resolve().parents[3] / '..' / 'shared' / 'data'


@pytest.fixture(scope='module')
def bundled_cache(tmp_path_factory):
    """One ONNX export of the bundled model for the module (about 30 s on a busy CPU)."""
    cache = tmp_path_factory.mktemp('onnx-cache')
    Extractor.from_weights(None, device='cpu', backend='onnxruntime', onnx_cache=cache)
    return cache


def _real_images():
    files = sorted((DATA / 'rtabmap_loop' / 'samples').glob('*.jpg')) + \
        sorted((DATA / 'vpr_methods_eval_toy').rglob('*.jpg')) + \
        sorted((DATA / 'nordland_64x32' / 'winter').glob('*.png'))[1800:1900]
    if len(files) < 150:
        pytest.skip(f'real images not found under {DATA}')
    return [load_image_file(path) for path in files]


def test_onnxruntime_matches_torch_on_real_images(bundled_cache):
    """206 real images through the bundled model. Measured on this CPU: max abs 1.1e-5
    (cosine >= 0.9999997), 1 code bit of 47,104 differs (a bit whose value is at rounding
    level); torch against itself at batch 1 and 16 differs by 2.6e-7."""
    images = _real_images()
    eager = Extractor.from_weights(None, device='cpu')
    graph = Extractor.from_weights(None, device='cpu', backend='onnxruntime',
                                   onnx_cache=bundled_cache)
    assert (eager.backend, graph.backend) == ('torch', 'onnxruntime')
    assert graph.fingerprint == eager.fingerprint == model_fingerprint(eager.model)
    a, b = eager.extract(images), graph.extract(images)
    assert np.abs(a.floats - b.floats).max() < 2e-5
    assert (a.floats * b.floats).sum(axis=1).min() > 0.99999
    flipped = np.unpackbits(a.codes ^ b.codes).sum()
    assert flipped <= 1e-4 * a.codes.size * 8


@pytest.mark.parametrize('kind', ['float', 'hash', 'two_branch'])
def test_tiny_models_agree_across_backends(kind, tmp_path, images):
    model = tiny_model(kind)
    eager = Extractor(model, device='cpu').extract(images)
    graph = Extractor(model, device='cpu', backend='onnxruntime', onnx_cache=tmp_path)
    out = graph.extract(images)
    if eager.floats is not None:
        assert np.abs(eager.floats - out.floats).max() < 1e-5
    if eager.codes is not None:
        # a bit may only flip where the code's pre-sign value is at float-noise level
        with torch.no_grad():
            z = model(preprocess_batch(images, model.config.preprocess))[0].numpy()
        flipped = np.unpackbits(eager.codes ^ out.codes, axis=1).astype(bool)
        assert np.all(np.abs(z[flipped]) < 1e-5)


def test_onnx_graph_is_cached_by_fingerprint(tmp_path, monkeypatch, images):
    model = tiny_model('two_branch')
    first = Extractor(model, device='cpu', backend='onnxruntime', onnx_cache=tmp_path)
    path = first._backend.path
    assert path.parent == tmp_path / 'onnx'
    assert path.name.startswith(model_fingerprint(model)[:32])
    assert [p.name for p in path.parent.iterdir()] == [path.name]      # no temporary left

    from vpr_core.model import export

    def no_export(*args, **kwargs):
        raise AssertionError('exported again although the cache holds the graph')

    monkeypatch.setattr(export, 'export_onnx', no_export)
    again = Extractor(model, device='cpu', backend='onnxruntime', onnx_cache=tmp_path)
    assert np.array_equal(again.extract(images).codes, first.extract(images).codes)


@pytest.mark.parametrize('damage', [b'not a graph', None])
def test_corrupt_or_foreign_cache_is_exported_again(tmp_path, damage, images):
    model = tiny_model('float')
    path = Extractor(model, device='cpu', backend='onnxruntime',
                     onnx_cache=tmp_path)._backend.path
    if damage is None:          # a valid graph of another model under this model's name
        other = Extractor(tiny_model('float', seed=1), device='cpu', backend='onnxruntime',
                          onnx_cache=tmp_path / 'other')._backend.path
        path.write_bytes(other.read_bytes())
    else:
        path.write_bytes(damage)
    rebuilt = Extractor(model, device='cpu', backend='onnxruntime', onnx_cache=tmp_path)
    expected = Extractor(model, device='cpu').extract(images)
    assert np.abs(rebuilt.extract(images).floats - expected.floats).max() < 1e-5


def test_auto_picks_onnxruntime_on_cpu_and_torch_on_cuda(tmp_path):
    assert backends.resolve_auto(torch.device('cpu')) == 'onnxruntime'
    assert backends.resolve_auto(torch.device('cuda')) == 'torch'
    extractor = Extractor(tiny_model('float'), device='cpu', backend='auto', onnx_cache=tmp_path)
    assert extractor.backend == 'onnxruntime' and extractor.fp16 is False


def test_auto_falls_back_to_torch_when_the_graph_cannot_be_written(tmp_path, caplog):
    """A read-only or broken cache folder must not stop a node: ``auto`` runs torch (and says
    so); ``onnxruntime`` asked for by name still fails."""
    blocker = tmp_path / 'not-a-folder'
    blocker.write_text('a file where the cache folder should be')
    model, images = tiny_model('float'), [np.full((40, 50, 3), 90, np.uint8)]
    with caplog.at_level('WARNING', logger='vpr_core.backends'):
        extractor = Extractor(model, device='cpu', backend='auto', onnx_cache=blocker / 'sub')
    assert extractor.backend == 'torch' and 'onnxruntime is not usable' in caplog.text
    expected = Extractor(model, device='cpu', backend='torch').extract(images)
    assert np.array_equal(extractor.extract(images).floats, expected.floats)
    with pytest.raises(OSError):
        Extractor(model, device='cpu', backend='onnxruntime', onnx_cache=blocker / 'sub')


def test_a_failed_graph_is_noted_so_the_next_start_goes_straight_to_torch(tmp_path, caplog,
                                                                          monkeypatch):
    import vpr_core.model.export
    from vpr_core import onnx_cache
    calls = []

    def failing(model, path, **kwargs):
        calls.append(path)
        raise RuntimeError('operator not supported by the exporter')

    monkeypatch.setattr(vpr_core.model.export, 'export_onnx', failing)
    model = tiny_model('float')
    first = Extractor(model, device='cpu', backend='auto', onnx_cache=tmp_path)
    assert first.backend == 'torch' and len(calls) == 1
    note = onnx_cache.graph_path(model, tmp_path).with_suffix('.failed')
    assert 'operator not supported' in note.read_text()
    with caplog.at_level('WARNING', logger='vpr_core.backends'):
        again = Extractor(model, device='cpu', backend='auto', onnx_cache=tmp_path)
    assert again.backend == 'torch' and len(calls) == 1        # not tried again
    assert 'delete it to try again' in caplog.text
    monkeypatch.setattr(onnx_cache, '_versions', lambda: {'torch': 'newer'})
    Extractor(model, device='cpu', backend='auto', onnx_cache=tmp_path)
    assert len(calls) == 2                      # another library version: tried again
    monkeypatch.undo()                          # the exporter works again
    assert Extractor(model, device='cpu', backend='auto',
                     onnx_cache=tmp_path).backend == 'onnxruntime'
    assert not note.exists()                    # a working graph drops the note
    onnx_cache.remember_failure(model, tmp_path, 'RuntimeError: noted by another process')
    assert Extractor(model, device='cpu', backend='auto',   # the graph exists: note ignored
                     onnx_cache=tmp_path).backend == 'onnxruntime' and not note.exists()


@pytest.mark.parametrize('library', ['torch', 'onnx', 'onnxscript', 'onnxruntime', 'vpr_ros'])
def test_a_noted_failure_is_retried_after_a_library_changes(tmp_path, monkeypatch, library):
    from vpr_core import onnx_cache
    model = tiny_model('float')
    onnx_cache.remember_failure(model, tmp_path, 'RuntimeError: the exporter failed')
    assert 'the exporter failed' in onnx_cache.remembered_failure(model, tmp_path)
    real = onnx_cache.metadata.version
    monkeypatch.setattr(onnx_cache.metadata, 'version',
                        lambda name: 'other' if name == library else real(name))
    assert onnx_cache.remembered_failure(model, tmp_path) is None


def test_a_passing_failure_is_not_noted(tmp_path, monkeypatch):
    import vpr_core.model.export
    from vpr_core import onnx_cache

    def out_of_memory(model, path, **kwargs):
        raise MemoryError('the export ran out of memory')

    monkeypatch.setattr(vpr_core.model.export, 'export_onnx', out_of_memory)
    model = tiny_model('float')
    assert Extractor(model, device='cpu', backend='auto', onnx_cache=tmp_path).backend == 'torch'
    assert onnx_cache.remembered_failure(model, tmp_path) is None
    assert not onnx_cache.graph_path(model, tmp_path).with_suffix('.failed').exists()


def test_a_checkpoint_run_by_onnxruntime_is_not_held_twice(tmp_path):
    """from_weights drops the torch weights once onnxruntime holds the graph; everything
    that needs the model still works (dimensions, fingerprint, shipping it to Ray actors)."""
    from vpr_core.mapdb.ray_worker import ModelSpec
    from vpr_core.model import save_model
    path = tmp_path / 'model.safetensors'
    save_model(tiny_model('two_branch'), path)
    images = [np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8)]
    eager = Extractor.from_weights(path, device='cpu', backend='torch')
    graph = Extractor.from_weights(path, device='cpu', backend='onnxruntime',
                                   onnx_cache=tmp_path / 'onnx')
    assert eager.holds_weights and not graph.holds_weights
    assert all(p.is_meta for p in graph.model.parameters())
    assert (graph.fingerprint, graph.descriptor_dim, graph.code_bits) == \
        (eager.fingerprint, eager.descriptor_dim, eager.code_bits)
    assert np.abs(graph.extract(images).floats - eager.extract(images).floats).max() < 1e-5
    spec = ModelSpec.of(graph, 'cpu', onnx_cache=tmp_path / 'onnx')
    assert spec.checkpoint == path.read_bytes() and spec().fingerprint == eager.fingerprint
    assert graph.weights_path.is_absolute()
    save_model(tiny_model('two_branch', seed=1), path)      # replaced on disk since
    with pytest.raises(MapError, match='changed since its model was loaded'):
        ModelSpec.of(graph, 'cpu')


@pytest.mark.parametrize('verb', [['build-map', '--images', 'x', '--out', 'm'],
                                  ['query', '--images', 'x', '--map', 'm'],
                                  ['evaluate', '--database', 'd', '--queries', 'q', '--out', 'o'],
                                  ['bag-eval', '--bag', 'b', '--image-topic', 't', '--map', 'm',
                                   '--index-tolerance', '1', '--out', 'o'],
                                  ['loops', '--images', 'x', '--out', 'o']])
def test_every_verb_that_runs_the_model_defaults_to_auto(verb):
    """One default everywhere (the node's ``backend`` parameter too: test_launch_file)."""
    from vpr_core.cli import build_parser
    args = build_parser().parse_args(verb)
    assert backends.DEFAULT_BACKEND == 'auto' and args.backend == 'auto'
    assert build_parser().parse_args([*verb, '--backend', 'torch']).backend == 'torch'


def test_unknown_and_unavailable_backends_say_what_to_do():
    with pytest.raises(ConfigError, match='valid: auto, torch, onnxruntime, tensorrt'):
        Extractor(tiny_model('float'), device='cpu', backend='openvino')


def test_onnxruntime_on_cuda_asks_for_the_cuda_provider_only():
    """TensorRT is the ``tensorrt`` backend's (engine cache, profile): never picked here."""
    cuda, cpu = torch.device('cuda', 1), torch.device('cpu')
    every = ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']
    assert backends._providers(every, cuda) == [('CUDAExecutionProvider', {'device_id': 1}),
                                                'CPUExecutionProvider']
    assert backends._providers(every, cpu) == ['CPUExecutionProvider']
    with pytest.raises(ConfigError, match='onnxruntime-gpu'):
        backends._providers(['TensorrtExecutionProvider', 'CPUExecutionProvider'], cuda)


@pytest.mark.gpu
def test_cuda_backends_agree_with_cpu(tmp_path, images):
    model = tiny_model('two_branch')
    reference = Extractor(model, device='cpu').extract(images)
    fp16 = Extractor(tiny_model('two_branch'), device='cuda').extract(images)
    assert (fp16.floats * reference.floats).sum(axis=1).min() > 0.999
    import onnxruntime
    if 'CUDAExecutionProvider' not in onnxruntime.get_available_providers():
        pytest.skip('onnxruntime without the CUDA execution provider')
    graph = Extractor(tiny_model('two_branch'), device='cuda', backend='onnxruntime',
                      onnx_cache=tmp_path)
    assert np.abs(graph.extract(images).floats - reference.floats).max() < 1e-4
