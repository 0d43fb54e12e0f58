"""``vpr bag-eval``: the recognizer over a rosbag2, scored against a map.

Bags are written here (sqlite3 and MCAP, raw and JPEG images) from 25 real Nordland summer
frames of the train part; the map is built from the same frames with pixel descriptors, so
the expected numbers can be worked out by hand.
"""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from vpr_core.bags import BagWriter
from vpr_core.cli import main
from vpr_core.errors import BagError, ConfigError
from vpr_core.evaluation.bag_commands import localization_config
from vpr_core.evaluation.bag_eval import BagEvalOptions, evaluate_bag
from vpr_core.image import encode_compressed, load_image_file
from vpr_core.localization.calibration import ScoreCalibration
from vpr_core.mapdb.builder import build_map, BuildConfig
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.keyframe import KeyframeConfig
from vpr_core.mapdb.pixel import PixelDescriptors
from vpr_core.mapdb.pose import Pose
from vpr_core.mapdb.source import BagSource

ROOT = Path(__file__).resolve().parents[3]
SOURCE = PixelDescriptors(code_bits=64)
FRAMES = range(300, 325)            # train part (17..1799)
SECOND = 1_000_000_000
SPACING_M = 10.0
TOPIC = '/camera/image'
# single-frame matching with every gate open: each frame's decision is its own top-1
OPEN_GATES = ['localization.sequence.length=1', 'localization.sequence.contrast_window=0',
              'localization.gate.min_frames=1', 'localization.gate.min_agreement=1',
              'localization.gate.min_margin=0', 'localization.gate.min_score=0']


@pytest.fixture(scope='module')
def summer(nordland):
    return [load_image_file(nordland / 'summer' / f'images-{(i + 1) * 10:05d}.png')
            for i in FRAMES]


def image_stamp(k):
    return SECOND + k * SECOND


def write_bag(path, storage, images, *, compressed=False, shift_from=None, shift_m=0.0,
              pose_frame='map'):
    """Images at 1 Hz; ground-truth Odometry at 2 Hz, 0.3 s off the image stamps (so poses
    are interpolated), moving 10 m per second along x (an image sits 10 m after the previous
    one); poses from image ``shift_from`` on are moved ``shift_m`` along x."""
    with BagWriter(path, storage) as bag:
        for k in range(2 * len(images) + 3):
            stamp = k * SECOND // 2 + 3 * SECOND // 10
            x = SPACING_M * stamp / SECOND
            if shift_from is not None and stamp >= image_stamp(shift_from) - SECOND // 4:
                x += shift_m
            bag.add_pose('/gt', stamp, Pose((x, 0.0, 0.0)), frame_id=pose_frame)
        for k, image in enumerate(images):
            bag.add_image(TOPIC, image_stamp(k), image, compressed=compressed)
    return path


def build(bag, out, source=SOURCE):
    config = BuildConfig(keyframes=KeyframeConfig(min_distance_m=5.0))
    return build_map(BagSource(bag, TOPIC, '/gt'), source, config, out=out, progress=False)


@pytest.mark.parametrize('storage, compressed', [('sqlite3', False), ('mcap', True)])
def test_the_mapped_sequence_is_recalled_and_localized(tmp_path, summer, storage, compressed):
    bag = write_bag(tmp_path / 'bag', storage, summer, compressed=compressed)
    map_db = build(bag, tmp_path / 'map')
    assert map_db.size == len(summer)
    options = BagEvalOptions(TOPIC, gt_topic='/gt', radius_m=5.0, progress=False)
    evaluation = evaluate_bag(bag, MapDatabase.load(tmp_path / 'map'), SOURCE, options)
    report = evaluation.report
    kind = 'CompressedImage' if compressed else 'Image'
    assert report['dataset']['image_type'] == f'sensor_msgs/msg/{kind}'
    assert report['dataset']['num_queries'] == report['dataset']['frames'] == len(summer)
    assert report['recall_at'] == {'1': 1.0, '5': 1.0, '10': 1.0}
    accepted = report['accepted']
    assert accepted['count'] >= len(summer) - 5 and accepted['precision'] == 1.0
    assert report['rejections'].get('warming up', 0) >= 1      # default gates: min_frames 3
    error = report['localization_error']
    assert error['count'] == accepted['count'] and error['max_m'] < 1e-6
    assert [r.result.match.index for r in evaluation.records] == list(range(len(summer)))
    assert report['map']['map_id'] == map_db.manifest.map_id
    assert report['model']['fingerprint'] == SOURCE.fingerprint
    assert set(report['latency_ms']) == {'decode', 'extract', 'localize', 'total'}
    with_odometry = BagEvalOptions(TOPIC, gt_topic='/gt', radius_m=5.0, odom_topic='/gt',
                                   progress=False)
    again = evaluate_bag(bag, MapDatabase.load(tmp_path / 'map'), SOURCE, with_odometry)
    assert again.report['matches'] == report['matches']                # deterministic
    assert again.report['accepted'] == accepted


def test_shifted_ground_truth_gives_the_hand_computed_scores(tmp_path, summer):
    build(write_bag(tmp_path / 'map_bag', 'mcap', summer), tmp_path / 'map')
    # the last 10 of 25 frames are said to be 30 m further on: only place k + 3 is within
    # 5 m, while the image (and so the match) is place k; frames 22..24 then lie past the
    # map's end (no positive: recall@N counts them as failures, accepted recall leaves them out)
    bag = write_bag(tmp_path / 'query', 'mcap', summer, shift_from=15, shift_m=30.0)
    options = BagEvalOptions(TOPIC, gt_topic='/gt', radius_m=5.0, progress=False)
    config = localization_config(None, OPEN_GATES)
    report = evaluate_bag(bag, MapDatabase.load(tmp_path / 'map'), SOURCE, options,
                          config).report
    assert report['recall_at']['1'] == pytest.approx(15 / 25)
    assert report['recall_at']['10'] >= report['recall_at']['5'] >= 15 / 25
    assert report['dataset']['queries_without_positive'] == 3
    assert report['accepted'] == {'count': 25, 'correct': 15, 'precision': pytest.approx(0.6),
                                  'recall': pytest.approx(15 / 22), 'rate': 1.0}
    error = report['localization_error']
    assert error['median_m'] == pytest.approx(0.0, abs=1e-6)
    assert error['max_m'] == pytest.approx(30.0) and error['p95_m'] == pytest.approx(30.0)
    assert error['mean_m'] == pytest.approx(30.0 * 10 / 25)
    assert report['match_correct'] == [True] * 15 + [False] * 10
    assert report['pr']['recall'][-1] == pytest.approx(15 / 22)


def test_cli_index_alignment_writes_the_report(tmp_path, summer, capsys):
    map_bag = write_bag(tmp_path / 'map_bag', 'sqlite3', summer)
    assert main(['build-map', '--bag', str(map_bag), '--image-topic', TOPIC, '--pixels',
                 '--out', str(tmp_path / 'map'), '--no-progress']) == 0
    # frames 0..11 show places 0..11, frames 12..19 show places 14..21 (2 ahead, tolerance 1)
    shown = list(range(12)) + list(range(14, 22))
    bag = write_bag(tmp_path / 'query', 'sqlite3', [summer[i] for i in shown])
    out = tmp_path / 'out'
    sets = [arg for text in OPEN_GATES for arg in ('--set', text)]
    assert main(['bag-eval', '--bag', str(bag), '--image-topic', TOPIC, '--map',
                 str(tmp_path / 'map'), '--index-tolerance', '1', '--pixels', *sets,
                 '--fit-calibration', '--out', str(out), '--no-progress']) == 0
    assert 'R@1' in capsys.readouterr().out
    report = json.loads((out / 'report.json').read_text())
    assert report['recall_at']['1'] == pytest.approx(12 / 20)
    assert report['accepted']['precision'] == pytest.approx(12 / 20)
    error = report['localization_error']
    assert error['median_places'] == 0 and error['max_places'] == 2
    assert error['max_m'] == pytest.approx(2.0)        # no poses: places sit 1 m apart
    assert report['dataset']['ground_truth'] == {'kind': 'index', 'index_tolerance': 1}
    assert {'recall_at', 'pr', 'pr_score', 'accepted', 'rejections', 'localization_error',
            'latency_ms', 'model', 'map', 'dataset', 'config', 'mode', 'created',
            'calibration'} <= set(report)
    assert {'auc', 'recall_at_100_precision', 'precision', 'recall'} <= set(report['pr'])
    assert report['model']['weights'] == 'pixels' and report['map']['places'] == 25
    assert report['config']['sequence']['length'] == 1
    assert 'matches' not in report                          # per-query lists go to CSV
    for name in ('per_frame.csv', 'matches.csv', 'recall.csv', 'pr.csv', 'recall.png',
                 'pr.png', 'matches.png', 'error_cdf.png', 'latency.png'):
        assert (out / name).stat().st_size > 0, name
    with open(out / 'per_frame.csv', newline='') as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r['match']) for r in rows] == shown
    assert [r['correct'] for r in rows] == ['1'] * 12 + ['0'] * 8
    calibration = ScoreCalibration.load(out / 'calibration.json')
    assert calibration.samples == 2 * 20


def test_navsatfix_tracks_with_different_origins_share_the_map_frame(tmp_path, summer):
    north_deg = SPACING_M / 111_200.0           # about 10 m of latitude at 63 degrees north

    def fix_bag(path, first):
        with BagWriter(path, 'sqlite3') as bag:
            for k in range(first, 10):
                bag.add_fix('/fix', image_stamp(k), 65.0 + k * north_deg, 13.0)
                bag.add_image(TOPIC, image_stamp(k), summer[k])
        return path

    map_bag = fix_bag(tmp_path / 'map_bag', 0)
    map_db = build_map(BagSource(map_bag, TOPIC, '/fix'), SOURCE,
                       BuildConfig(keyframes=KeyframeConfig(min_distance_m=5.0)), out=None,
                       progress=False)
    assert map_db.size == 10 and map_db.manifest.geo_origin is not None
    # the query's east-north-up origin is its own first fix, 40 m north of the map's
    options = BagEvalOptions(TOPIC, gt_topic='/fix', radius_m=3.0, progress=False)
    report = evaluate_bag(fix_bag(tmp_path / 'query', 4), map_db, SOURCE, options,
                          localization_config(None, OPEN_GATES)).report
    assert report['recall_at']['1'] == 1.0
    assert report['localization_error']['max_m'] < 0.5


def test_cli_with_model_weights_checks_the_maps_model(tmp_path, summer, capsys):
    torch = pytest.importorskip('torch')
    from vpr_core.model.checkpoint import save_model
    from vpr_core.model.config import BackboneConfig, HeadConfig, ModelConfig, PreprocessConfig
    from vpr_core.model.factory import build_model
    torch.manual_seed(0)
    weights = tmp_path / 'tiny.safetensors'
    save_model(build_model(ModelConfig(
        name='tiny-bag', backbone=BackboneConfig(embed_dim=64, depth=2, num_heads=2,
                                                 img_size=56),
        head=HeadConfig(kind='gem', out_dim=32),
        preprocess=PreprocessConfig(train_size=(28, 56), test_size=(28, 56)))), weights)
    bag = write_bag(tmp_path / 'bag', 'mcap', summer[:8])
    common = ['--bag', str(bag), '--image-topic', TOPIC, '--no-progress']
    assert main(['build-map', *common, '--weights', str(weights), '--out',
                 str(tmp_path / 'map')]) == 0
    assert main(['build-map', *common, '--pixels', '--out', str(tmp_path / 'pixel_map')]) == 0
    evaluate = ['bag-eval', *common, '--index-tolerance', '0', '--weights', str(weights),
                '--device', 'cpu']
    assert main([*evaluate, '--map', str(tmp_path / 'map'), '--out', str(tmp_path / 'a')]) == 0
    report = json.loads((tmp_path / 'a' / 'report.json').read_text())
    assert report['model']['name'] == 'tiny-bag' and report['model']['weights'] == str(weights)
    assert report['model']['fingerprint'] == report['map']['model_fingerprint']
    assert report['dataset']['num_queries'] == 8
    capsys.readouterr()
    assert main([*evaluate, '--map', str(tmp_path / 'pixel_map'), '--out',
                 str(tmp_path / 'b')]) == 2
    assert 'built by model' in capsys.readouterr().err


def test_a_missing_topic_lists_the_bags_topics(tmp_path, summer, capsys):
    bag = write_bag(tmp_path / 'bag', 'mcap', summer[:5])
    map_db = build(bag, None)
    for options in (BagEvalOptions('/nope', gt_topic='/gt', progress=False),
                    BagEvalOptions(TOPIC, gt_topic='/ground_truth', progress=False)):
        with pytest.raises(BagError, match='/camera/image .*/gt'):
            evaluate_bag(bag, map_db, SOURCE, options)
    code = main(['bag-eval', '--bag', str(bag), '--image-topic', '/nope', '--map',
                 str(tmp_path), '--index-tolerance', '0', '--pixels', '--out',
                 str(tmp_path / 'out')])
    assert code == 2
    assert 'bag-eval' in capsys.readouterr().err


def test_ground_truth_in_another_frame_is_refused(tmp_path, summer):
    map_db = build(write_bag(tmp_path / 'map_bag', 'mcap', summer[:5]), None)
    bag = write_bag(tmp_path / 'odom', 'mcap', summer[:5], pose_frame='odom')
    options = BagEvalOptions(TOPIC, gt_topic='/gt', radius_m=5.0, progress=False)
    with pytest.raises(ConfigError, match="frame 'odom'.*'map'"):
        evaluate_bag(bag, map_db, SOURCE, options)
    same = BagEvalOptions(TOPIC, gt_topic='/gt', radius_m=5.0, same_frame=True,
                          progress=False)
    assert evaluate_bag(bag, map_db, SOURCE, same).report['dataset']['num_queries'] == 5


def test_an_undecodable_frame_is_recorded_and_skipped(tmp_path, summer):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_typestore, Stores
    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    path = tmp_path / 'corrupt'
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connection = writer.add_connection(TOPIC, 'sensor_msgs/msg/CompressedImage',
                                           typestore=store)
        for k in range(6):
            fmt, data = encode_compressed(summer[k], 'jpeg')
            if k == 3:
                data = b'not a jpeg'
            stamp = types['builtin_interfaces/msg/Time'](k + 1, 0)
            header = types['std_msgs/msg/Header'](stamp, 'camera')
            msg = types['sensor_msgs/msg/CompressedImage'](header, fmt,
                                                           np.frombuffer(data, np.uint8))
            writer.write(connection, image_stamp(k),
                         store.serialize_cdr(msg, 'sensor_msgs/msg/CompressedImage'))
    map_db = build(write_bag(tmp_path / 'map_bag', 'mcap', summer[:6], compressed=True), None)
    options = BagEvalOptions(TOPIC, index_tolerance=0, progress=False)
    config = localization_config(None, OPEN_GATES)
    evaluation = evaluate_bag(path, map_db, SOURCE, options, config)
    assert [r.result is None for r in evaluation.records] == [False] * 3 + [True] + [False] * 2
    report = evaluation.report
    assert report['dataset']['frames_bad_image'] == 1 and report['dataset']['num_queries'] == 5
    assert report['rejections'] == {'bad image': 1}
    assert report['recall_at']['1'] == 1.0


def test_config_from_a_node_parameter_file_and_prefixed_overrides():
    config = localization_config(ROOT / 'config' / 'vpr_node.yaml',
                                 ['localization.gate.min_score=2.5', 'top_k=7'])
    assert config.top_k == 7 and config.gate.min_score == 2.5
    assert config.sequence.length == 10
    assert localization_config(None, []).top_k == 10
    with pytest.raises(ConfigError, match='min_score'):
        localization_config(None, ['localization.gate.min_scor=1'])
