"""The CLI contract with a real tiny model: build-map (images, bag), map-info, query."""
from pathlib import Path
import shutil

import numpy as np
import pytest
import torch

from vpr_core.bags import BagWriter
from vpr_core.cli import main
from vpr_core.extractor import Extractor
from vpr_core.image import load_image_file
from vpr_core.localization.recognizer import PlaceRecognizer
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.pose import Pose
from vpr_core.model.checkpoint import save_model
from vpr_core.model.config import (BackboneConfig, HashingConfig, HeadConfig, ModelConfig,
                                   PreprocessConfig)
from vpr_core.model.factory import build_model

TINY = ModelConfig(backbone=BackboneConfig(embed_dim=64, depth=2, num_heads=2),
                   head=HeadConfig(kind='gem', out_dim=64), hashing=HashingConfig(bits=64),
                   preprocess=PreprocessConfig(test_size=(56, 56)))


def tiny_weights(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_model(build_model(TINY), path)
    return path


@pytest.fixture(scope='module')
def workspace(tmp_path_factory, nordland):
    root = tmp_path_factory.mktemp('cli')
    (root / 'summer').mkdir()
    for index in range(2000, 2010):
        name = f'images-{(index + 1) * 10:05d}.png'
        shutil.copy(nordland / 'summer' / name, root / 'summer' / name)
    return root, tiny_weights(root / 'a.safetensors', 0), tiny_weights(root / 'b.safetensors', 1)


def test_build_map_from_images_then_info_and_query(workspace, capsys):
    root, weights, other = workspace
    out = root / 'map'
    assert main(['build-map', '--images', str(root / 'summer'), '--out', str(out),
                 '--weights', str(weights), '--no-progress', '--thumbnails', '16x32']) == 0
    extractor = Extractor.from_weights(weights)
    database = MapDatabase.load(out, expected_fingerprint=extractor.fingerprint)
    assert database.size == 10 and database.manifest.synthetic_poses
    assert database.manifest.preprocess['test_size'] == [56, 56]
    assert database.manifest.model['head']['out_dim'] == 64
    assert main(['map-info', str(out)]) == 0
    assert 'places: 10' in capsys.readouterr().out
    assert main(['query', '--map', str(out), '--images', str(root / 'summer'), '-k', '3',
                 '--weights', str(weights)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith('query\trank\tplace_id') and len(lines) == 1 + 10 * 3
    top = [line.split('\t') for line in lines[1:] if line.split('\t')[1] == '0']
    assert [int(row[2]) for row in top] == list(range(10))     # every image finds itself
    # the map refuses the other model, naming both fingerprints
    assert main(['query', '--map', str(out), '--images', str(root / 'summer'),
                 '--weights', str(other)]) == 2
    error = capsys.readouterr().err
    assert extractor.fingerprint in error and Extractor.from_weights(other).fingerprint in error
    # the recognizer runs the model on images directly
    recognizer = PlaceRecognizer(database, extractor)
    image = load_image_file(sorted((root / 'summer').iterdir())[4])
    assert recognizer.process(image, 4.0).match.index == 4


def test_build_map_from_a_bag_and_append(workspace, capsys):
    root, weights, _ = workspace
    bag = root / 'bag'
    images = [load_image_file(p) for p in sorted((root / 'summer').iterdir())]
    with BagWriter(bag, 'sqlite3') as writer:
        for i, image in enumerate(images):
            writer.add_pose('/odom', i * 10**9, Pose((4.0 * i, 0.0, 0.0)))
            writer.add_image('/cam', i * 10**9 + 1000, image)
    out = root / 'bag_map'
    assert main(['build-map', '--bag', str(bag), '--image-topic', '/cam', '--pose-topic',
                 '/odom', '--out', str(out), '--weights', str(weights), '--no-progress',
                 '--set', 'keyframes.min_distance_m=7.5']) == 0
    database = MapDatabase.load(out)
    assert database.size == 5 and np.allclose(np.diff(database.positions[:, 0]), 8.0)
    assert '5 places from 10 frames (0 without a pose)' in capsys.readouterr().out
    # without --pose-topic the frames have no poses: refused, the map is untouched
    assert main(['build-map', '--bag', str(bag), '--image-topic', '/cam', '--out', str(out),
                 '--weights', str(weights), '--no-progress', '--append']) == 2
    assert 'without poses' in capsys.readouterr().err and MapDatabase.load(out).size == 5
    assert main(['build-map', '--bag', str(bag), '--image-topic', '/cam', '--pose-topic',
                 '/odom', '--out', str(out), '--weights', str(weights), '--no-progress',
                 '--append']) == 0
    assert '15 places (+10 appended) from 10 frames' in capsys.readouterr().out
    appended = MapDatabase.load(out)
    assert appended.size == 15 and len(set(appended.place_ids)) == 15
    assert main(['build-map', '--bag', str(bag), '--out', str(out), '--weights',
                 str(weights)]) == 2
    assert '--image-topic' in capsys.readouterr().err


def test_a_map_built_with_onnxruntime_serves_torch_queries(workspace, tmp_path, monkeypatch,
                                                           capsys):
    """--backend on the CLI: the map records the backend that computed it, and the other
    backend's queries find every place in it (descriptors agree to ~1e-5)."""
    monkeypatch.setenv('VPR_CACHE', str(tmp_path / 'cache'))
    root, weights, _ = workspace
    out = tmp_path / 'onnx-map'
    assert main(['build-map', '--images', str(root / 'summer'), '--out', str(out), '--weights',
                 str(weights), '--backend', 'onnxruntime', '--threads', '1',
                 '--no-progress']) == 0
    assert MapDatabase.load(out).manifest.model['backend'] == 'onnxruntime'
    assert list((tmp_path / 'cache' / 'onnx').glob('*.onnx'))          # exported once
    capsys.readouterr()
    assert main(['query', '--map', str(out), '--images', str(root / 'summer'), '-k', '1',
                 '--weights', str(weights), '--backend', 'torch']) == 0
    rows = [line.split('\t') for line in capsys.readouterr().out.strip().splitlines()[1:]]
    assert [int(row[2]) for row in rows] == list(range(10))


def test_the_ray_head_loads_the_model_on_cpu_with_torch(tmp_path, monkeypatch):
    """The head computes nothing: no ONNX export, no GPU memory; --backend goes to the actors
    (test_ray_build checks that their backend reaches the manifest)."""
    from vpr_core.errors import ConfigError
    from vpr_core.mapdb import commands
    asked = []

    def record(args, **kwargs):
        asked.append(kwargs)
        raise ConfigError('recorded')

    monkeypatch.setattr(commands, 'load_extractor', record)
    common = ['build-map', '--images', str(tmp_path), '--out', str(tmp_path / 'map'),
              '--device', 'cuda']
    assert main([*common, '--engine', 'ray']) == 2
    assert main(common) == 2
    assert asked == [{'backend': 'torch', 'device': 'cpu'}, {}]
