"""``vpr build-map --engine ray`` on a real Ray cluster of two nodes on this host (a head and
one worker node, one CPU each, both bound to 127.0.0.1), joined by address as ``--address``
does: the map equals the single-process map bit for bit, and a failing worker leaves no map.

The cluster is started here and shut down at the end of the module.
"""
import contextlib
import os
import signal

import cv2
import numpy as np
import pytest

from vpr_core.bags import BagWriter
from vpr_core.cli import main
from vpr_core.errors import ConfigError, MapError
from vpr_core.extractor import Extractor
from vpr_core.image import load_image_file
from vpr_core.mapdb.builder import build_map, BuildConfig
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.keyframe import KeyframeConfig
from vpr_core.mapdb.pose import Pose, quaternions_from_yaw
from vpr_core.mapdb.source import BagSource, ImageFolderSource

# Ray's single-machine mode: every Ray process binds to 127.0.0.1 (read at import).
os.environ.setdefault('RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER', '0')
os.environ.setdefault('RAY_USAGE_STATS_ENABLED', '0')
ray = pytest.importorskip('ray')
from vpr_core.mapdb.ray_build import build_map_ray, LOOPBACK_ONLY, RayConfig  # noqa: E402
from vpr_core.mapdb.ray_worker import ModelSpec  # noqa: E402

SECOND = 1_000_000_000
ARRAYS = ('floats', 'codes', 'positions', 'orientations', 'stamps_ns', 'thumbnails', 'names')


@contextlib.contextmanager
def deadline(seconds: int):
    """Raise TimeoutError in this (main) thread after ``seconds``: a stuck Ray fails the test
    instead of hanging the suite."""
    def expire(signum, frame):
        raise TimeoutError(f'Ray test step ran past {seconds} s')
    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def bounded():
    with deadline(180):
        yield


@pytest.fixture(scope='module')
def cluster() -> str:
    """Address of a two-node Ray cluster on 127.0.0.1 (one CPU per node)."""
    from ray.cluster_utils import Cluster
    if ray.is_initialized():
        ray.shutdown()
    with deadline(120):
        local = Cluster(initialize_head=True,
                        head_node_args={'num_cpus': 1, 'include_dashboard': False})
    try:
        with deadline(120):
            local.add_node(num_cpus=1)
            local.wait_for_nodes(timeout=60)
        yield local.address
    finally:
        local.shutdown()


@pytest.fixture
def two_workers(cluster) -> RayConfig:
    return RayConfig(address=cluster, workers=2)


@pytest.fixture(scope='module')
def extractor():
    return Extractor.from_weights(None, device='cpu', batch_size=8)


@pytest.fixture(scope='module')
def frames(nordland):
    """30 real Nordland summer thumbnails (frames 100..129)."""
    return [load_image_file(nordland / 'summer' / f'images-{(i + 1) * 10:05d}.png')
            for i in range(100, 130)]


def write_folder(folder, images):
    folder.mkdir()
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f'{i:04d}.png'), np.ascontiguousarray(image[:, :, ::-1]))
    return folder


def assert_same_map(single: MapDatabase, distributed: MapDatabase, single_dir, ray_dir):
    for name in ARRAYS:
        a, b = getattr(single, name), getattr(distributed, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype and np.array_equal(a, b), name
    saved = MapDatabase.load(single_dir), MapDatabase.load(ray_dir)
    assert saved[0].fingerprint == saved[1].fingerprint == single.fingerprint
    assert saved[0].manifest.map_id == saved[1].manifest.map_id     # sha256 of every array
    assert saved[0].manifest.source == saved[1].manifest.source
    assert saved[1].manifest.created['tool'] == 'vpr build-map --engine ray'


def test_image_folder_map_equals_the_single_process_map(extractor, frames, two_workers,
                                                        tmp_path):
    folder = write_folder(tmp_path / 'images', frames)
    (folder / '0011.png').write_bytes(b'\x89PNG\r\n\x1a\n truncated')   # undecodable: skipped
    source = ImageFolderSource(folder)
    config = BuildConfig(batch_size=8, thumbnail_size=(8, 16))
    single = build_map(source, extractor, config, out=tmp_path / 'single', progress=False)
    distributed = build_map_ray(source, extractor, config, out=tmp_path / 'ray',
                                ray_config=two_workers,
                                progress=False)
    assert distributed.size == single.size == len(frames) - 1
    assert distributed.manifest.source['undecodable'][0]['name'] == '0011.png'
    assert_same_map(single, distributed, tmp_path / 'single', tmp_path / 'ray')


def test_bag_map_equals_the_single_process_map(extractor, frames, two_workers, tmp_path):
    bag = tmp_path / 'bag'
    with BagWriter(bag, 'sqlite3') as writer:
        for k in range(2 * len(frames) + 2):
            yaw = quaternions_from_yaw(np.array([0.05 * k]))[0]
            writer.add_pose('/odom', k * SECOND // 2, Pose((2.0 * k, 0.0, 0.0), tuple(yaw)))
        for i, image in enumerate(frames):
            stamp = i * SECOND + SECOND // 4
            if i == 0:      # the first frame is always a keyframe
                writer.add_compressed('/camera/image', stamp, 'jpeg', b'\xff\xd8 broken')
            else:
                writer.add_image('/camera/image', stamp, image, compressed=True)
    source = BagSource(bag, '/camera/image', '/odom')
    config = BuildConfig(keyframes=KeyframeConfig(min_distance_m=6.0), batch_size=4)
    single = build_map(source, extractor, config, out=tmp_path / 'single', progress=False)
    distributed = build_map_ray(source, extractor, config, out=tmp_path / 'ray',
                                ray_config=two_workers,
                                progress=False)
    assert 8 < distributed.size < 20        # every other frame a keyframe, one undecodable
    assert distributed.manifest.source['frames_undecodable'] == 1
    assert_same_map(single, distributed, tmp_path / 'single', tmp_path / 'ray')


class FailingExtractor:
    # Ray workers cannot import this test module: ship the class by value (below).
    """The bundled model, except that the third batch a worker describes raises."""

    def __init__(self) -> None:
        self.inner = Extractor.from_weights(None, device='cpu', batch_size=4)
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def extract(self, images):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError('injected failure in the describing actor')
        return self.inner.extract(images)


def test_a_failing_worker_gives_a_clear_error_and_no_map(extractor, frames, two_workers,
                                                         tmp_path):
    import sys
    from ray import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    source = ImageFolderSource(write_folder(tmp_path / 'images', frames[:24]))
    out = tmp_path / 'map'
    with pytest.raises(MapError, match='a Ray worker failed, no map was written: '
                                       'RuntimeError: injected failure'):
        build_map_ray(source, extractor, BuildConfig(batch_size=4), out=out,
                      ray_config=two_workers,
                      worker_extractor=FailingExtractor, progress=False)
    assert not out.exists()


def test_strict_build_names_the_undecodable_frame(extractor, frames, two_workers, tmp_path):
    folder = write_folder(tmp_path / 'images', frames[:10])
    (folder / '0006.png').write_bytes(b'not a png at all')
    out = tmp_path / 'map'
    with pytest.raises(MapError, match=r'UnsupportedImageError: frame 0006\.png'):
        build_map_ray(ImageFolderSource(folder), extractor,
                      BuildConfig(batch_size=4, strict=True), out=out,
                      ray_config=two_workers, progress=False)
    assert not out.exists()


def test_build_map_command_with_the_ray_engine(frames, cluster, tmp_path, capsys):
    folder = write_folder(tmp_path / 'images', frames[:12])
    assert main(['build-map', '--images', str(folder), '--out', str(tmp_path / 'single'),
                 '--no-progress', '--batch-size', '4']) == 0
    assert main(['build-map', '--images', str(folder), '--out', str(tmp_path / 'ray'),
                 '--no-progress', '--batch-size', '4', '--engine', 'ray',
                 '--address', cluster, '--workers', '2']) == 0
    single, distributed = (MapDatabase.load(tmp_path / name) for name in ('single', 'ray'))
    assert single.manifest.map_id == distributed.manifest.map_id
    assert np.array_equal(single.floats, distributed.floats)
    # default --backend auto: the CPU actors ran onnxruntime, and the manifest says so (the
    # head, which computes nothing, runs torch)
    assert single.manifest.model['backend'] == distributed.manifest.model['backend'] == \
        'onnxruntime'
    assert main(['build-map', '--images', str(folder), '--out', str(tmp_path / 'x'),
                 '--address', 'auto']) == 2
    assert '--address and --workers need --engine ray' in capsys.readouterr().err


def test_ray_append_reads_the_source_table_once(frames, cluster, tmp_path, monkeypatch):
    """The append check and the Ray build share one read of the frame table (a bag's
    index is not read again for the build)."""
    folder = write_folder(tmp_path / 'images', frames[:8])
    assert main(['build-map', '--images', str(folder), '--out', str(tmp_path / 'map'),
                 '--no-progress', '--batch-size', '4']) == 0
    calls = []
    table = ImageFolderSource.table
    monkeypatch.setattr(ImageFolderSource, 'table',
                        lambda self: calls.append(1) or table(self))
    assert main(['build-map', '--images', str(folder), '--out', str(tmp_path / 'map'),
                 '--no-progress', '--batch-size', '4', '--engine', 'ray', '--append',
                 '--address', cluster, '--workers', '2']) == 0
    assert len(calls) == 1 and MapDatabase.load(tmp_path / 'map').size == 16


def test_more_workers_than_the_cluster_holds_is_a_clear_error(extractor, frames, cluster,
                                                              tmp_path):
    source = ImageFolderSource(write_folder(tmp_path / 'images', frames[:8]))
    out = tmp_path / 'map'
    expected = '5 Ray workers need 5 CPUs .* the cluster has 2: lower --workers'
    with deadline(60), pytest.raises(ConfigError, match=expected):
        build_map_ray(source, extractor, BuildConfig(batch_size=4), out=out,
                      ray_config=RayConfig(address=cluster, workers=5), progress=False)
    assert not out.exists() and not ray.is_initialized()


def test_local_ray_is_shut_down_and_the_process_state_restored(
        extractor, frames, tmp_path, monkeypatch):
    """address None: a local Ray is started, stopped afterwards; the loopback-only variable
    and Ray Data's global context are as before."""
    assert not ray.is_initialized()
    monkeypatch.delenv(LOOPBACK_ONLY, raising=False)
    context = ray.data.DataContext.get_current()
    before = context.execution_options.preserve_order, context.enable_progress_bars
    source = ImageFolderSource(write_folder(tmp_path / 'images', frames[:6]))
    config = BuildConfig(batch_size=4)
    single = build_map(source, extractor, config, progress=False)
    with deadline(120):
        local = build_map_ray(source, extractor, config, progress=False,
                              ray_config=RayConfig(workers=1, local_cpus=1))
    assert np.array_equal(single.floats, local.floats)
    assert not ray.is_initialized()
    assert LOOPBACK_ONLY not in os.environ
    context = ray.data.DataContext.get_current()
    assert (context.execution_options.preserve_order, context.enable_progress_bars) == before


def test_model_spec_carries_every_descriptor_setting(tmp_path):
    extractor = Extractor.from_weights(None, device='cpu', batch_size=3,
                                       crossimage_policy='fixed_batch')
    spec = ModelSpec.of(extractor, 'cpu', onnx_cache=tmp_path / 'onnx')
    assert (spec.batch_size, spec.crossimage_policy, spec.backend) == (3, 'fixed_batch', 'torch')
    assert spec.fp16 is None        # a CPU extractor: the workers' device default
    assert spec.onnx_cache == str(tmp_path / 'onnx')
    assert ModelSpec.of(extractor, fp16=False).fp16 is False
    worker = spec()
    assert worker.crossimage_policy == 'fixed_batch' and worker.batch_size == 3
    assert worker.fingerprint == extractor.fingerprint
    # auto is sent unresolved: a CUDA worker picks torch there, whatever the head resolved
    assert ModelSpec(spec.checkpoint).backend == 'auto'
    assert ModelSpec.of(Extractor.from_weights(None, device='cpu', backend='auto',
                                               onnx_cache=tmp_path / 'onnx')).backend == 'auto'
