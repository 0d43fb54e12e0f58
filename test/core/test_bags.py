"""rosbag2 I/O (sqlite3 and MCAP) and map building from bags with Odometry / NavSatFix poses.

The bags are written here, with ``rosbags``, from real Nordland frames in ``../shared/data``.
"""

import numpy as np
import pytest

from vpr_core.bags import BagWriter, iter_images, list_topics, read_image_stamps, read_pose_track
from vpr_core.errors import BagError
from vpr_core.image import load_image_file
from vpr_core.mapdb.builder import build_map, BuildConfig
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.keyframe import KeyframeConfig
from vpr_core.mapdb.pixel import PixelDescriptors
from vpr_core.mapdb.pose import Pose, quaternions_from_yaw
from vpr_core.mapdb.source import BagSource

SOURCE = PixelDescriptors(code_bits=64)
FRAMES = range(1000, 1012)
SECOND = 1_000_000_000


@pytest.fixture(scope='module')
def summer(nordland):
    return [load_image_file(nordland / 'summer' / f'images-{(i + 1) * 10:05d}.png')
            for i in FRAMES]


def write_odometry_bag(path, storage, images, compressed=False):
    """Images at 1 Hz (+0.5 s), odometry at 2 Hz along x at 3 m/s, two images have no pose."""
    with BagWriter(path, storage) as bag:
        for k in range(2 * len(images) + 2):
            stamp = k * SECOND // 2
            if 4 * SECOND <= stamp <= 6 * SECOND:   # odometry drop-out around image 5
                continue
            yaw = quaternions_from_yaw(np.array([0.1]))[0]
            bag.add_pose('/odom', stamp, Pose((1.5 * k, 0.0, 0.0), tuple(yaw)))
        for i, image in enumerate(images):
            bag.add_image('/camera/image', i * SECOND + SECOND // 2, image,
                          compressed=compressed)


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_map_from_bag_with_odometry(tmp_path, summer, storage):
    bag = tmp_path / f'odom_{storage}'
    write_odometry_bag(bag, storage, summer)
    topics = list_topics(bag)
    assert topics['/odom'][0] == 'nav_msgs/msg/Odometry'
    assert topics['/camera/image'] == ('sensor_msgs/msg/Image', len(summer))
    stamps = read_image_stamps(bag, '/camera/image')
    assert list(stamps[:2]) == [SECOND // 2, 3 * SECOND // 2]
    images = dict(iter_images(bag, '/camera/image', [0, 3]))
    assert np.array_equal(images[3], summer[3])
    source = BagSource(bag, '/camera/image', '/odom', tolerance_s=0.3)
    config = BuildConfig(keyframes=KeyframeConfig(min_distance_m=5.0), batch_size=4)
    database = build_map(source, SOURCE, config, out=tmp_path / 'map', progress=False)
    loaded = MapDatabase.load(tmp_path / 'map', expected_fingerprint=SOURCE.fingerprint)
    manifest = loaded.manifest
    assert manifest.source['frames'] == len(summer)
    assert manifest.source['frames_without_pose'] == 2      # images at 4.5 s and 5.5 s
    assert manifest.source['pose_type'] == 'nav_msgs/msg/Odometry'
    # poses interpolated at the image stamps: 3 m/s, images at 0.5 s + i
    assert np.allclose(loaded.positions[0], [1.5, 0, 0])
    steps = np.diff(loaded.positions[:, 0])
    assert np.all(steps >= 5.0 - 1e-9) and loaded.size == database.size < len(summer)
    query = SOURCE.extract([summer[0]])
    assert loaded.search(query, k=1)[0][0].index == 0


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_map_from_bag_with_navsatfix_and_compressed_images(tmp_path, summer, storage):
    bag = tmp_path / f'gps_{storage}'
    with BagWriter(bag, storage) as writer:
        for k in range(len(summer) + 1):
            status = -1 if k == 2 else 0                       # one fix is missing
            writer.add_fix('/gps/fix', k * SECOND, 63.0 + k * 1e-4, 10.0, 5.0, status=status)
        for i, image in enumerate(summer):
            writer.add_image('/camera/image/compressed', i * SECOND + SECOND // 4, image,
                             compressed=True)
    track = read_pose_track(bag, '/gps/fix')
    assert track.skipped == 1 and track.orientation_source == 'track'
    assert track.geo_origin[0] == pytest.approx(63.0)
    assert np.allclose(np.diff(track.positions[:2, 1]), 11.13, atol=0.05)   # north, metres
    source = BagSource(bag, '/camera/image/compressed', '/gps/fix', tolerance_s=0.5)
    database = build_map(source, SOURCE, BuildConfig(keyframes=KeyframeConfig(enabled=False)),
                         progress=False)
    manifest = database.manifest
    assert manifest.frame_id == 'enu' and manifest.geo_origin[0] == pytest.approx(63.0)
    assert manifest.orientation_source == 'track'
    assert manifest.source['frames_without_pose'] == 1     # 2.25 s: no fix within 0.5 s
    assert database.size == len(summer) - 1
    assert np.allclose(database.positions[1, 1], 11.13 * 1.25, atol=0.1)
    # heading north: yaw +90 deg
    assert np.allclose(database.orientations[1], [0, 0, np.sin(np.pi / 4), np.cos(np.pi / 4)],
                       atol=1e-3)


def test_bag_errors_name_topics(tmp_path, summer):
    bag = tmp_path / 'bag'
    write_odometry_bag(bag, 'mcap', summer[:2])
    with pytest.raises(BagError, match="no topic '/nope'.*/camera/image"):
        read_image_stamps(bag, '/nope')
    with pytest.raises(BagError, match='expected one of sensor_msgs/msg/Image'):
        read_image_stamps(bag, '/odom')
    with pytest.raises(BagError, match='bag not found'):
        list_topics(tmp_path / 'missing')
    (tmp_path / 'junk').mkdir()
    with pytest.raises(BagError, match='cannot open bag'):
        list_topics(tmp_path / 'junk')
