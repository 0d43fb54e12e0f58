"""Map building from image folders (sequence, poses CSV, VG layout), keyframes and poses."""
import cv2
import numpy as np
import pytest

from vpr_core.errors import ConfigError, MapError
from vpr_core.mapdb.builder import build_map, BuildConfig
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.keyframe import KeyframeConfig, select_keyframes
from vpr_core.mapdb.pixel import PixelDescriptors
from vpr_core.mapdb.pose import (compose, geodetic_to_enu, interpolate_poses, invert, Pose,
                                 quaternions_from_yaw, yaw_from_quaternions)
from vpr_core.mapdb.source import ImageFolderSource

SOURCE = PixelDescriptors(size=(16, 32), patch=8, code_bits=64)


def write_images(folder, count, names=None, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = names or [f'frame_{i:03d}.png' for i in range(count)]
    for name in names:
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (24, 40, 3), dtype=np.uint8))
    return names


def test_sequence_folder_gets_synthetic_poses(tmp_path):
    write_images(tmp_path / 'images', 12)
    database = build_map(ImageFolderSource(tmp_path / 'images'), SOURCE,
                         BuildConfig(batch_size=5, thumbnail_size=(8, 16)),
                         out=tmp_path / 'map', progress=False)
    loaded = MapDatabase.load(tmp_path / 'map', expected_fingerprint=SOURCE.fingerprint)
    assert loaded.size == 12 == database.size
    assert loaded.manifest.synthetic_poses and loaded.manifest.source['layout'] == 'sequence'
    assert np.allclose(loaded.positions[:, 0], np.arange(12))
    assert loaded.thumbnails.shape == (12, 8, 16, 3)
    assert list(loaded.names[:2]) == ['frame_000.png', 'frame_001.png']
    assert loaded.manifest.descriptor_dim == 512 and loaded.manifest.code_bits == 64
    # an image is its own best match
    query = SOURCE.extract([cv2.cvtColor(cv2.imread(str(tmp_path / 'images' /
                                                        'frame_007.png')), cv2.COLOR_BGR2RGB)])
    assert loaded.search(query, k=1)[0][0].place_id == 7


def test_poses_csv_skips_frames_without_a_row_and_keyframes_by_distance(tmp_path):
    names = write_images(tmp_path / 'images', 10)
    lines = ['name,x,y,yaw,stamp']
    for i, name in enumerate(names[:8]):            # two images have no pose row
        x = 0.0 if i < 4 else float(i)              # parked for four frames, then moving
        lines.append(f'{name},{x},0.5,0.0,{100 + i}.25')
    (tmp_path / 'poses.csv').write_text('\n'.join(lines) + '\n')
    source = ImageFolderSource(tmp_path / 'images', tmp_path / 'poses.csv')
    config = BuildConfig(keyframes=KeyframeConfig(min_distance_m=1.0), float_dtype='float16',
                         store='floats')
    database = build_map(source, SOURCE, config, progress=False)
    assert database.manifest.source['frames_without_pose'] == 2
    assert list(database.names) == [names[0], names[4], names[5], names[6], names[7]]
    assert database.stamps_ns[1] == 104_250_000_000
    assert database.codes is None and database.floats.dtype == np.float16
    with pytest.raises(ConfigError, match='needs a header'):
        (tmp_path / 'bad.csv').write_text('a,b\n1,2\n')
        ImageFolderSource(tmp_path / 'images', tmp_path / 'bad.csv').table()


def test_vg_layout_reads_utm_from_names(tmp_path):
    names = ['@584000.50@4477000.25@17@T@40.4@-79.9@x@0@90@0@0@0@0@@.jpg',
             '@584010.00@4477005.00@17@T@40.4@-79.9@x@0@180@0@0@0@0@@.jpg']
    write_images(tmp_path / 'db', 2, names)
    database = build_map(ImageFolderSource(tmp_path / 'db'), SOURCE, progress=False)
    assert database.manifest.source['layout'] == 'vg' and database.manifest.frame_id == 'utm'
    assert np.allclose(database.positions[:, :2], [[584000.5, 4477000.25], [584010, 4477005]])
    # compass heading 90 (east) is yaw 0, heading 180 (south) is yaw -90 deg
    assert np.allclose(yaw_from_quaternions(database.orientations), [0.0, -np.pi / 2])


def test_keyframes_ignore_a_parked_robot_and_follow_turns_and_time():
    stamps = np.arange(100, dtype=np.int64) * 1_000_000_000
    positions = np.zeros((100, 3))
    yaw = np.zeros(100)
    yaw[50:] = np.radians(30)                         # one turn on the spot
    rotations = quaternions_from_yaw(yaw)
    assert list(select_keyframes(positions, rotations, stamps, KeyframeConfig())) == [0, 50]
    timed = select_keyframes(positions, rotations, stamps, KeyframeConfig(max_interval_s=30))
    assert list(timed) == [0, 30, 50, 80]
    positions[:, 0] = np.arange(100) * 0.5            # 0.5 m per frame
    moving = select_keyframes(positions, quaternions_from_yaw(np.zeros(100)), stamps,
                              KeyframeConfig(min_distance_m=2.0))
    assert list(moving[:3]) == [0, 4, 8]
    capped = select_keyframes(positions, quaternions_from_yaw(np.zeros(100)), stamps,
                              KeyframeConfig(min_distance_m=0.1, min_interval_s=10))
    assert list(capped[:3]) == [0, 10, 20]


def test_interpolation_and_tolerance():
    stamps = np.array([0, 2_000_000_000, 10_000_000_000])
    positions = np.array([[0.0, 0, 0], [2.0, 0, 0], [2.0, 8.0, 0]])
    rotations = quaternions_from_yaw(np.array([0.0, np.pi / 2, np.pi / 2]))
    query = np.array([1_000_000_000, 2_000_000_000, 6_000_000_000, 10_400_000_000, -2 * 10**9])
    pos, rot, valid = interpolate_poses(stamps, positions, rotations, query, tolerance_s=0.5)
    assert list(valid) == [False, True, False, True, False]
    pos, rot, valid = interpolate_poses(stamps, positions, rotations, query, tolerance_s=5.0)
    assert np.allclose(pos[0], [1, 0, 0]) and np.allclose(pos[2], [2, 4, 0])
    assert np.isclose(yaw_from_quaternions(rot)[0], np.pi / 4)
    assert np.allclose(pos[3], [2, 8, 0]) and list(valid) == [True, True, True, True, True]


def test_geodetic_to_enu_and_composition():
    enu = geodetic_to_enu(np.array([47.0, 47.0 + 1e-4, 47.0]), np.array([8.0, 8.0, 8.0 + 1e-4]),
                          np.array([400.0, 400.0, 401.0]), origin=(47.0, 8.0, 400.0))
    assert np.allclose(enu[0], 0, atol=1e-6)
    assert abs(enu[1, 1] - 11.12) < 0.05 and abs(enu[1, 0]) < 1e-3      # 1e-4 deg north
    assert abs(enu[2, 0] - 7.59) < 0.05 and abs(enu[2, 2] - 1.0) < 0.01
    base = Pose((1.0, 2.0, 0.0), tuple(quaternions_from_yaw(np.array([np.pi / 2]))[0]))
    camera_in_base = Pose((0.5, 0.0, 1.0), (0.0, 0.0, 0.0, 1.0))
    pos, rot = compose(np.array([base.position]), np.array([base.orientation]), camera_in_base)
    assert np.allclose(pos[0], [1.0, 2.5, 1.0])
    back, _ = compose(pos, rot, invert(camera_in_base))
    assert np.allclose(back[0], base.position)


def test_recorder_keeps_keyframes_and_saves_atomically_with_append(tmp_path):
    from vpr_core.mapdb.recorder import MapRecorder
    rng = np.random.default_rng(3)
    config = BuildConfig(keyframes=KeyframeConfig(min_distance_m=2.0),
                         thumbnail_size=(8, 16), camera_in_base=(0.5, 0, 1.0, 0, 0, 0, 1))
    recorder = MapRecorder(SOURCE, config, frame_id='odom')
    kept = []
    for i in range(30):
        x = 0.0 if i < 10 else float(i - 10)            # parked, then 1 m per frame
        image = rng.integers(0, 255, (24, 40, 3), dtype=np.uint8)
        kept.append(recorder.add(image, i * 10**8, Pose((x, 0.0, 0.0))))
    assert sum(kept) == len(recorder) == 10 and kept[0] and not any(kept[1:12])
    first = recorder.save(tmp_path / 'map')
    assert first.size == 10 and first.manifest.frame_id == 'odom'
    assert np.isclose(first.positions[1, 0], 2.0 + 0.5) and np.isclose(first.positions[1, 2], 1)
    assert recorder.save(tmp_path / 'map') is None      # nothing new: no duplicate places
    for i in range(30, 33):
        recorder.add(rng.integers(0, 255, (24, 40, 3), dtype=np.uint8), i * 10**8,
                     Pose((2.0 * i, 0.0, 0.0)))
    second = recorder.save(tmp_path / 'map')            # appends only the new keyframes
    loaded = MapDatabase.load(tmp_path / 'map', expected_fingerprint=SOURCE.fingerprint)
    assert loaded.size == second.size == 13 and loaded.thumbnails.shape == (13, 8, 16, 3)
    assert list(loaded.names[-3:]) == [f'camera0@{i * 10**8}' for i in range(30, 33)]
    with pytest.raises(MapError, match="frame 'map'"):
        other = MapRecorder(SOURCE, config, frame_id='map')
        other.add(image, 0, Pose())
        other.save(tmp_path / 'map')
    with pytest.raises(MapError, match="frame 'odom'.*set map_frame"):   # checked up front
        MapRecorder(SOURCE, config, frame_id='map', path=tmp_path / 'map')
