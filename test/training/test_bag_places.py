"""Places mined from poses and from unposed sequences; sessions read by the map sources."""
import cv2
import numpy as np
import pytest

from teach_bag import PLACE_STEP_M, place_image, teach_positions, write_teach_bag
from training.bag_places import (choose_centres, conflicting_places, heading_difference,
                                 mine_places, MiningConfig, place_members, read_session,
                                 Session, SessionSpec, SpacedBatchSampler)
from vpr_core.errors import BagError, ConfigError
from vpr_core.mapdb.pose import quaternions_from_yaw
from vpr_core.mapdb.source import FrameTable


def posed_session(name, xs, yaws, ys=None) -> Session:
    count = len(xs)
    positions = np.zeros((count, 3))
    positions[:, 0] = xs
    if ys is not None:
        positions[:, 1] = ys
    table = FrameTable(np.arange(count, dtype=np.int64), positions,
                       quaternions_from_yaw(np.asarray(yaws, float)), np.ones(count, bool),
                       np.array([f'{name}{i}' for i in range(count)]), 'map')
    images = [place_image(i, i) for i in range(count)]
    return Session(name, table, np.arange(count, dtype=np.int64), images)


def test_positives_within_radius_and_heading_limit():
    positions = np.array([[0, 0, 0], [1.5, 0, 0], [2.5, 0, 0], [0.5, 0, 0], [0, 1, 0.]])
    yaw = np.radians([0.0, 10.0, 0.0, 180.0, 50.0])
    members = place_members(positions, yaw, np.array([0]), 2.0, np.radians(45.0))[0]
    # frame 2 is too far, frame 3 faces the other way, frame 4 turned more than 45 degrees
    assert members.tolist() == [0, 1]
    loose = place_members(positions, yaw, np.array([0]), 2.0, None)[0]
    assert sorted(loose.tolist()) == [0, 1, 3, 4]
    assert heading_difference(np.radians(350.0), np.radians(10.0)) == pytest.approx(
        np.radians(20.0))


def test_centres_are_spaced_but_opposite_headings_are_separate_places():
    positions = np.zeros((6, 3))
    positions[:, 0] = [0.0, 0.5, 1.2, 3.0, 3.1, 0.1]
    yaw = np.radians([0, 0, 0, 0, 0, 180])
    centres = choose_centres(positions, yaw, spacing=1.0, heading_limit_rad=np.radians(45))
    assert centres.tolist() == [0, 2, 3, 5]


def test_places_closer_than_the_negative_gap_never_share_a_batch():
    # Two sessions of one straight route, 0.5 m between frames, the second shifted 0.2 m.
    xs = np.arange(0.0, 60.0, 0.5)
    sessions = [posed_session('a', xs, np.zeros(len(xs))),
                posed_session('b', xs + 0.2, np.zeros(len(xs)))]
    cfg = MiningConfig(positive_radius_m=1.0, negative_radius_m=5.0)
    mined = mine_places(sessions, cfg)
    places, positions = mined.places, np.concatenate([xs, xs + 0.2])
    index = {path: i for i, path in enumerate(places.cache)}
    for files in places.places:
        rows = [index[f] for f in files]
        assert np.ptp(positions[rows]) <= 2.0
        assert {str(f)[0] for f in files} == {'a', 'b'}     # both sessions in every place
    sampler = SpacedBatchSampler(mined, places_per_batch=4, seed=1)
    sampler.set_epoch(1)
    batches = [[p for p, _ in batch] for batch in sampler]
    assert batches and all(len(b) >= 2 for b in batches)
    for batch in batches:
        for i, first in enumerate(batch):
            for second in batch[i + 1:]:
                a = positions[[index[f] for f in places.places[first]]]
                b = positions[[index[f] for f in places.places[second]]]
                assert np.abs(a[:, None] - b[None, :]).min() >= cfg.negative_radius_m


def test_conflicts_are_symmetric_and_exclude_the_place_itself():
    centres = np.array([[0, 0, 0], [3, 0, 0], [0, 3.9, 0], [10, 10, 0.]])
    conflicts = conflicting_places(centres, 5.0)
    assert [c.tolist() for c in conflicts] == [[1, 2], [0, 2], [0, 1], []]


@pytest.fixture
def unposed_folder(tmp_path):
    folder = tmp_path / 'run'
    folder.mkdir()
    for i in range(10):
        cv2.imwrite(str(folder / f'{i:04d}.png'), place_image(i, i))
    return folder


def test_unposed_folder_places_are_index_windows(unposed_folder):
    session = read_session(SessionSpec(images=str(unposed_folder)), size=(28, 28))
    assert not session.posed and session.images[0].shape == (28, 28, 3)
    mined = mine_places([session], MiningConfig(window_frames=1, negative_frames=3))
    names = [[f.name.split('#')[1] for f in files] for files in mined.places.places]
    assert names[0] == ['0', '1'] and names[4] == ['4', '3', '5'] and names[9] == ['9', '8']
    assert mined.conflicts[4].tolist() == [0, 1, 2, 3, 5, 6, 7, 8]   # 9 is 5 frames away
    assert not mined.posed


def test_two_unposed_sessions_align_by_index(unposed_folder, tmp_path):
    spec = SessionSpec(images=str(unposed_folder))
    sessions = [read_session(spec), read_session(spec)]
    sessions[1].name = 'second'
    mined = mine_places(sessions, MiningConfig(window_frames=1, negative_frames=3))
    assert len(mined.places) == 10
    assert sum(1 for f in mined.places.places[4] if str(f).startswith('second')) == 3


def test_one_session_given_twice_keeps_every_frame_and_its_own_image():
    xs = np.arange(0.0, 10.0, 0.5)
    first = posed_session('run', xs, np.zeros(len(xs)))
    second = posed_session('run', xs + 0.1, np.zeros(len(xs)))
    second.images = [place_image(i, 100 + i) for i in range(len(xs))]
    mined = mine_places([first, second], MiningConfig(positive_radius_m=1.0,
                                                      negative_radius_m=3.0))
    cache = mined.places.cache
    assert mined.frames == len(cache) == 2 * len(xs)
    images = first.images + second.images
    for k, (path, image) in enumerate(cache.items()):
        assert image is images[k], path
    assert {str(p).split('#')[0] for p in cache} == {'run@0', 'run@1'}


def test_bag_sessions_combine_by_pose(tmp_path):
    write_teach_bag(tmp_path / 'a', storage='sqlite3')
    write_teach_bag(tmp_path / 'b', seed=1, pose_kind='pose', compressed=True)
    specs = [SessionSpec(bag=str(tmp_path / n), image_topic='/camera/image',
                         pose_topic='/odom') for n in ('a', 'b')]
    sessions = [read_session(s, size=(28, 28)) for s in specs]
    assert [len(s.images) for s in sessions] == [36, 36] and sessions[0].posed
    mined = mine_places(sessions, MiningConfig(positive_radius_m=1.0, negative_radius_m=3.0))
    assert len(mined.places) == 12 and all(len(p) == 6 for p in mined.places.places)
    xs = teach_positions(12)
    assert xs[3] - xs[0] == PLACE_STEP_M
    assert [c.tolist() for c in mined.conflicts[:2]] == [[1], [0, 2]]


def test_bad_inputs_are_named(tmp_path, unposed_folder):
    write_teach_bag(tmp_path / 'no_images', images=False)
    with pytest.raises(BagError, match='no topic'):
        read_session(SessionSpec(bag=str(tmp_path / 'no_images'),
                                 image_topic='/camera/image', pose_topic='/odom'))
    write_teach_bag(tmp_path / 'no_poses', poses=False)
    with pytest.raises(BagError, match="no topic '/odom'"):
        read_session(SessionSpec(bag=str(tmp_path / 'no_poses'),
                                 image_topic='/camera/image', pose_topic='/odom'))
    with pytest.raises(ConfigError, match='image topic'):
        SessionSpec(bag=str(tmp_path / 'no_poses')).source()
    with pytest.raises(ConfigError, match='no images'):
        SessionSpec(images=str(tmp_path / 'no_images')).source()
    write_teach_bag(tmp_path / 'posed')
    posed = read_session(SessionSpec(bag=str(tmp_path / 'posed'), image_topic='/camera/image',
                                     pose_topic='/odom'))
    with pytest.raises(ConfigError, match='mix'):
        mine_places([posed, read_session(SessionSpec(images=str(unposed_folder)))],
                    MiningConfig())
    with pytest.raises(ConfigError, match='positive_radius_m'):
        mine_places([posed], MiningConfig(positive_radius_m=30.0))
    with pytest.raises(ConfigError, match='no place'):
        mine_places([posed], MiningConfig(positive_radius_m=0.1, negative_radius_m=1.0))
