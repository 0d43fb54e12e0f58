"""``vpr evaluate`` end to end on tiny image folders with a tiny checkpoint."""
import json

import cv2
import numpy as np
import pytest
import torch

from vpr_core.bags import BagWriter
from vpr_core.cli import main
from vpr_core.image import load_image_file
from vpr_core.model.checkpoint import DEFAULT_MODEL, read_metadata, save_model
from vpr_core.model.config import (AdapterConfig, BackboneConfig, HashingConfig, HeadConfig,
                                   ModelConfig, PreprocessConfig)
from vpr_core.model.factory import build_model


@pytest.fixture
def tiny_weights(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(
        name='tiny-eval', backbone=BackboneConfig(embed_dim=64, depth=2, num_heads=2,
                                                  img_size=56),
        adapter=AdapterConfig(kind='mulconv'), head=HeadConfig(kind='gem', out_dim=32),
        hashing=HashingConfig(bits=32, rerank=True),
        preprocess=PreprocessConfig(train_size=(28, 56), test_size=(28, 56)))
    path = tmp_path / 'tiny.safetensors'
    save_model(build_model(cfg), path)
    return path


@pytest.fixture
def route(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(12):
        base = rng.integers(0, 255, size=(32, 64, 3), dtype=np.uint8)
        for season, shift in (('summer', 0), ('winter', 25)):
            folder = tmp_path / season
            folder.mkdir(exist_ok=True)
            image = np.clip(base.astype(np.int16) + shift, 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f'images-{i:05d}.png'), image)
    return tmp_path


@pytest.mark.parametrize('mode', ['float', 'binary', 'rerank', 'hash'])
def test_vpr_evaluate_writes_the_report_contract(route, tiny_weights, tmp_path, mode, capsys):
    out = tmp_path / f'out-{mode}'
    code = main(['evaluate', '--database', str(route / 'summer'), '--queries',
                 str(route / 'winter'), '--tolerance', '1', '--sequence-length', '3',
                 '--mode', mode, '--weights', str(tiny_weights), '--out', str(out),
                 '--no-progress', '--rerank-k', '5'])
    assert code == 0
    report = json.loads((out / 'report.json').read_text())
    assert set(report['recall_at']) == {'1', '5', '10', '20', '100'}
    assert set(report['sequence_recall_at']) == {'1', '5', '10'}     # up to the node's top_k
    assert all(0.0 <= v <= 1.0 for v in report['recall_at'].values())
    assert report['recall_at']['20'] == 1.0            # 12 frames: everything is in the top 20
    assert report['baseline']['recall_at']['1'] == 1.0  # brightness shift only
    assert report['mode'] == {'hash': 'binary'}.get(mode, mode)     # hash: the old name
    assert report['sequence_length'] == 3 and report['hubness_k'] == 0    # the node's default
    assert report['localization']['sequence']['length'] == 3
    assert report['localization']['sequence']['contrast_window'] == 20
    assert 0 <= report['accepted']['correct'] <= report['accepted']['count'] <= 12
    assert {'search', 'extract', 'decode', 'sequence'} <= set(report['latency_ms'])
    expected_bytes = {'float': 32 * 4, 'binary': 32 // 8, 'hash': 32 // 8,
                      'rerank': 32 * 4 + 32 // 8}
    assert report['descriptor_bytes_per_image'] == expected_bytes[mode]
    assert 'auc' in report['pr'] and 'recall_at_100_precision' in report['pr']
    for name in ('recall.csv', 'pr.csv', 'matches.csv', 'recall.png', 'pr.png', 'matches.png'):
        assert (out / name).stat().st_size > 0
    printed = capsys.readouterr().out
    assert 'R@1' in printed and "the node's localizer, last 3 frames" in printed
    assert 'accepted ' in printed and 'precision' in printed


def test_vpr_evaluate_needs_a_data_source(tiny_weights, tmp_path, capsys):
    code = main(['evaluate', '--weights', str(tiny_weights), '--out', str(tmp_path / 'x')])
    assert code == 2
    assert '--database, --queries and --tolerance' in capsys.readouterr().err


def test_vpr_evaluate_reads_index_aligned_bags(route, tiny_weights, tmp_path):
    bags = {}
    for season, storage in (('summer', 'mcap'), ('winter', 'sqlite3')):
        bags[season] = tmp_path / f'{season}_bag'
        with BagWriter(bags[season], storage=storage) as writer:
            for i, path in enumerate(sorted((route / season).glob('*.png'))):
                writer.add_image('/camera/image', (i + 1) * 10 ** 9, load_image_file(path))
    out = tmp_path / 'out-bags'
    code = main(['evaluate', '--database', str(bags['summer']), '--queries',
                 str(bags['winter']), '--tolerance', '1', '--weights', str(tiny_weights),
                 '--out', str(out), '--no-progress'])
    assert code == 0
    from_bags = json.loads((out / 'report.json').read_text())
    assert from_bags['dataset']['num_queries'] == 12
    main(['evaluate', '--database', str(route / 'summer'), '--queries', str(route / 'winter'),
          '--tolerance', '1', '--weights', str(tiny_weights), '--out', str(tmp_path / 'f'),
          '--no-progress'])
    from_files = json.loads((tmp_path / 'f' / 'report.json').read_text())
    assert from_bags['recall_at'] == from_files['recall_at']


def test_vpr_evaluate_defaults_to_the_bundled_model(route, tmp_path):
    out = tmp_path / 'default'
    assert main(['evaluate', '--database', str(route / 'summer'), '--queries',
                 str(route / 'winter'), '--tolerance', '1', '--mode', 'rerank', '--out',
                 str(out), '--no-progress', '--no-baseline']) == 0
    report = json.loads((out / 'report.json').read_text())
    bundled = read_metadata(DEFAULT_MODEL)
    assert report['model']['weights'] == 'bundled default'
    assert report['model']['fingerprint'] == bundled.fingerprint
    assert report['descriptor_bytes_per_image'] == bundled.descriptor_dim * 4 + \
        bundled.code_bits // 8
    assert 'baseline' not in report


def test_evaluate_and_bag_eval_share_the_ground_truth_flags():
    from vpr_core.cli import build_parser
    parser = build_parser()
    common = ['evaluate', '--database', 'a', '--queries', 'b', '--out', 'o']
    new = parser.parse_args(common + ['--gt-topic', '/odom', '--radius', '5'])
    old = parser.parse_args(common + ['--pose-topic', '/odom', '--radius-m', '5'])
    assert (new.pose_topic, new.radius_m) == (old.pose_topic, old.radius_m) == ('/odom', 5.0)
    bag = parser.parse_args(['bag-eval', '--bag', 'b', '--image-topic', '/i', '--map', 'm',
                             '--gt-topic', '/odom', '--radius', '5', '--out', 'o'])
    assert (bag.gt_topic, bag.radius) == ('/odom', 5.0)
