"""Map store safety: the writers' lock, concurrent appends, stale temporaries, posed and
unposed places, teach maps and built maps extending each other, undecodable bag frames."""
from contextlib import contextmanager
import json
import os
from pathlib import Path
import subprocess
import sys
import textwrap
import threading
import time

import cv2
import numpy as np
import pytest
from synthetic_maps import clustered_descriptors, make_map

from vpr_core.bags import BagWriter, iter_image_frames, iter_images
from vpr_core.cli import main
from vpr_core.errors import IncompatibleMapError, MapError, UnsupportedImageError
from vpr_core.mapdb import map_dir, storage
from vpr_core.mapdb.builder import build_map, BuildConfig
from vpr_core.mapdb.database import append_to_map, MapDatabase
from vpr_core.mapdb.keyframe import KeyframeConfig
from vpr_core.mapdb.lock import lock_path, map_write_lock, MapLockedError
from vpr_core.mapdb.pixel import PixelDescriptors
from vpr_core.mapdb.pose import Pose
from vpr_core.mapdb.recorder import MapRecorder
from vpr_core.mapdb.source import BagSource, ImageFolderSource

SOURCE = PixelDescriptors()         # what ``vpr build-map --pixels`` uses
SECOND = 1_000_000_000
ROOT = Path(__file__).resolve().parents[3]

# One appending process: waits for the start file, then appends ``count`` places named
# ``<tag>-<i>``. The read-modify-write window is widened to 0.3 s (a sleep after the load),
# so two appends without the lock would overlap in every round.
APPENDER = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[5])
    import numpy as np
    from synthetic_maps import clustered_descriptors, make_map
    from vpr_core.mapdb import database
    path, start, tag, count = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    load = database.MapDatabase.load
    def slow_load(*args, **kwargs):
        loaded = load(*args, **kwargs)
        time.sleep(0.3)
        return loaded
    database.MapDatabase.load = slow_load
    addition = make_map(clustered_descriptors(count, seed=ord(tag[0]))[0])
    addition.names = np.array([f'{tag}-{i}' for i in range(count)])
    while not start.exists():
        time.sleep(0.005)
    database.append_to_map(path, addition)
''')


def named_map(count, tag, seed=0):
    database = make_map(clustered_descriptors(count, seed=seed)[0])
    database.names = np.array([f'{tag}-{i}' for i in range(count)])
    return database


def test_two_concurrent_appends_keep_every_place_five_rounds_of_five(tmp_path):
    lost = []
    for round_ in range(5):
        path = tmp_path / f'map{round_}'
        named_map(10, 'base').save(path)
        start = tmp_path / f'start{round_}'
        children = [subprocess.Popen([sys.executable, '-c', APPENDER, str(path), str(start),
                                      tag, '7', str(Path(__file__).parent)], cwd=ROOT)
                    for tag in ('a', 'b')]
        time.sleep(0.5)
        start.touch()
        assert all(child.wait(60) == 0 for child in children)
        names = set(MapDatabase.load(path).names)
        expected = {f'{tag}-{i}' for tag, count in (('base', 10), ('a', 7), ('b', 7))
                    for i in range(count)}
        lost.append(len(expected - names))
        assert MapDatabase.load(path).size == 24 and len(names) == 24
    assert lost == [0] * 5


@contextmanager
def lock_held_by_another_thread(path, purpose):
    """The map's write lock, held by another thread until the block ends."""
    holding, release = threading.Event(), threading.Event()

    def hold():
        with map_write_lock(path, purpose=purpose):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        yield
    finally:
        release.set()
        holder.join()


def test_a_held_lock_times_out_naming_its_holder(tmp_path):
    path = tmp_path / 'map'
    with lock_held_by_another_thread(path, 'teach save'):
        tic = time.monotonic()
        with pytest.raises(MapLockedError) as error:
            named_map(3, 'x').save(path, lock_timeout_s=0.3)
        assert 0.3 <= time.monotonic() - tic < 5
        message = str(error.value)
        assert f'pid {os.getpid()}' in message and 'teach save' in message
        assert str(lock_path(path)) in message and not path.exists()
    named_map(3, 'x').save(path, lock_timeout_s=0.3)      # free again
    assert lock_path(path) == tmp_path / '.map.lock' and lock_path(path).read_text() == ''
    with map_write_lock(path):                              # re-entrant within a thread
        append_to_map(path, named_map(2, 'y'))
    assert MapDatabase.load(path).size == 5


def test_stale_temporaries_are_removed_at_the_next_write(tmp_path):
    path = tmp_path / 'map'
    named_map(4, 'base').save(path)
    finished = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                              capture_output=True, text=True, check=True)
    host = map_dir._host()
    dead = tmp_path / f'.map.tmp-{finished.stdout.strip()}@{host}-0123456789ab'
    old = tmp_path / '.map.tmp-ba9876543210'                # older naming, no owner
    live = tmp_path / f'.map.tmp-{os.getppid()}@{host}-aaaaaaaaaaaa'
    other_map = tmp_path / '.other.tmp-1@x-bbbbbbbbbbbb'
    for folder in (dead, old, live, other_map):
        folder.mkdir()
        (folder / 'floats.npy').write_bytes(b'partial')
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    append_to_map(path, named_map(2, 'more'))
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(['.map.lock', 'map', live.name, other_map.name])
    os.utime(live, (two_hours_ago, two_hours_ago))           # a live writer's, but 2 h old
    assert storage.remove_stale_temporaries(path) == [live]


def test_unposed_places_are_refused_on_a_posed_map_and_the_reverse(tmp_path):
    posed = named_map(5, 'posed')
    unposed = named_map(3, 'unposed')
    unposed.manifest = unposed.manifest.with_changes(synthetic_poses=True)
    with pytest.raises(MapError, match='3 places without poses.*--poses'):
        posed.append(unposed)
    with pytest.raises(MapError, match='5 posed places.*synthetic'):
        unposed.append(posed)
    more = named_map(4, 'more')
    more.manifest = more.manifest.with_changes(synthetic_poses=True)
    more.positions[:, 0] = np.arange(4)                      # 1 m per image from 0
    unposed.positions[:, 0] = np.arange(3)
    joined = unposed.append(more)                            # the index continues: 0..6 m
    assert joined.manifest.synthetic_poses and np.allclose(joined.positions[:, 0], range(7))


def write_folder(folder, count, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        cv2.imwrite(str(folder / f'{i:03d}.png'), rng.integers(0, 255, (32, 48, 3), np.uint8))


def test_cli_append_of_an_unposed_folder_onto_a_posed_map_is_refused(tmp_path, capsys):
    write_folder(tmp_path / 'posed', 4)
    (tmp_path / 'poses.csv').write_text('name,x,y,yaw\n' + ''.join(
        f'{i:03d}.png,{10.0 * i},5.0,0.0\n' for i in range(4)))
    write_folder(tmp_path / 'plain', 5, seed=1)
    out = tmp_path / 'map'
    assert main(['build-map', '--images', str(tmp_path / 'posed'), '--poses',
                 str(tmp_path / 'poses.csv'), '--out', str(out), '--pixels',
                 '--no-progress']) == 0
    before = MapDatabase.load(out)
    assert main(['build-map', '--images', str(tmp_path / 'plain'), '--out', str(out),
                 '--pixels', '--no-progress', '--append']) == 2
    error = capsys.readouterr().err
    assert '5 places without poses' in error and "frame 'map'" in error
    after = MapDatabase.load(out)
    assert after.manifest.map_id == before.manifest.map_id and after.size == 4
    assert not after.manifest.synthetic_poses and np.allclose(after.positions[:, 0],
                                                              [0, 10, 20, 30])


def write_drive_bag(path, count, start_s=100.0, broken=()):
    """``count`` frames 1 m and 1 s apart on /cam with Odometry on /odom (frame 'map');
    the frames in ``broken`` carry garbage instead of a JPEG."""
    rng = np.random.default_rng(7)
    with BagWriter(path, 'mcap') as writer:
        for i in range(count):
            stamp = int((start_s + i) * SECOND)
            writer.add_pose('/odom', stamp, Pose((float(i), 0.0, 0.0)))
            if i in broken:
                writer.add_compressed('/cam', stamp, 'jpeg', rng.bytes(300))
            else:
                writer.add_image('/cam', stamp, rng.integers(0, 255, (32, 48, 3), np.uint8),
                                 compressed=True)


def test_teach_extends_a_built_map_and_build_map_extends_a_taught_one(tmp_path, capsys):
    bag = tmp_path / 'bag'
    write_drive_bag(bag, 6)
    built = tmp_path / 'built'
    assert main(['build-map', '--bag', str(bag), '--image-topic', '/cam', '--pose-topic',
                 '/odom', '--out', str(built), '--pixels', '--no-progress']) == 0
    rng = np.random.default_rng(3)
    config = BuildConfig(keyframes=KeyframeConfig(min_distance_m=2.0))
    recorder = MapRecorder(SOURCE, config, 'map', path=built)
    for i in range(6):
        recorder.add(rng.integers(0, 255, (32, 48, 3), np.uint8), (200 + i) * SECOND,
                     Pose((50.0 + i, 0.0, 0.0)))
    assert recorder.save().size == 9
    extended = MapDatabase.load(built)
    assert list(extended.positions[6:, 0]) == [50.0, 52.0, 54.0]
    assert list(extended.names[:2]) == ['/cam#0', '/cam#1'] and extended.names[6] == \
        f'camera0@{200 * SECOND}'
    assert extended.manifest.source['appended'][0]['kind'] == 'teach'
    # the reverse: a map made by teach mode alone, extended by build-map --append
    taught = tmp_path / 'taught'
    recorder = MapRecorder(SOURCE, config, 'map', path=taught)
    for i in range(4):
        recorder.add(rng.integers(0, 255, (32, 48, 3), np.uint8), i * SECOND,
                     Pose((-10.0 - 2 * i, 0.0, 0.0)))
    recorder.save()
    capsys.readouterr()
    assert main(['build-map', '--bag', str(bag), '--image-topic', '/cam', '--pose-topic',
                 '/odom', '--out', str(taught), '--pixels', '--no-progress', '--append']) == 0
    assert '10 places (+6 appended)' in capsys.readouterr().out
    both = MapDatabase.load(taught, expected_fingerprint=SOURCE.fingerprint)
    assert both.size == 10 and both.manifest.source['kind'] == 'teach'
    assert list(both.names[4:6]) == ['/cam#0', '/cam#1']


def test_teach_checks_an_existing_map_when_it_starts(tmp_path):
    path = tmp_path / 'map'
    build_map(ImageFolderSource(_folder(tmp_path / 'images')), SOURCE, out=path,
              progress=False)                              # synthetic poses, frame 'map'
    with pytest.raises(MapError, match='synthetic poses'):
        MapRecorder(SOURCE, BuildConfig(), 'map', path=path)
    with pytest.raises(IncompatibleMapError, match="frame 'map'.*frame 'odom'"):
        MapRecorder(SOURCE, BuildConfig(), 'odom', path=path)
    with pytest.raises(IncompatibleMapError, match='model'):
        MapRecorder(PixelDescriptors(code_bits=64), BuildConfig(), 'map', path=path)
    with pytest.raises(MapError, match='not a map directory'):
        MapRecorder(SOURCE, BuildConfig(), 'map', path=tmp_path / 'images')
    (tmp_path / 'empty').mkdir()
    assert MapRecorder(SOURCE, BuildConfig(), 'map', path=tmp_path / 'empty').pending == 0


def _folder(folder):
    write_folder(folder, 3)
    return folder


def test_build_map_bag_skips_an_undecodable_frame_and_names_it(tmp_path, capsys, caplog):
    bag = tmp_path / 'bag'
    write_drive_bag(bag, 8, broken={3})
    frames = list(iter_image_frames(bag, '/cam'))
    assert [f.index for f in frames] == list(range(8)) and frames[3].image is None
    assert isinstance(frames[3].error, UnsupportedImageError) and frames[4].image is not None
    with pytest.raises(UnsupportedImageError):               # the old iterator still raises
        list(iter_images(bag, '/cam'))
    out = tmp_path / 'map'
    command = ['build-map', '--bag', str(bag), '--image-topic', '/cam', '--pose-topic',
               '/odom', '--out', str(out), '--pixels', '--no-progress']
    assert main(command) == 0
    printed = capsys.readouterr().out
    assert '7 places from 8 frames' in printed
    assert '1 undecodable skipped: /cam#3 at 103.000 s' in printed
    assert any('/cam#3' in r.getMessage() and 'skipping' in r.getMessage()
               for r in caplog.records)
    database = MapDatabase.load(out)
    assert 3.0 not in database.positions[:, 0] and database.size == 7
    source = database.manifest.source
    assert source['frames_undecodable'] == 1 and source['undecodable'][0]['name'] == '/cam#3'
    assert json.loads(database.manifest.to_json())['source']['undecodable'][0]['index'] == 3
    # --strict aborts, naming the frame; the map already there is untouched
    assert main([*command, '--strict']) == 2
    error = capsys.readouterr().err
    assert '/cam#3' in error and '103.000000000 s' in error
    assert MapDatabase.load(out).manifest.map_id == database.manifest.map_id


def test_build_map_from_a_bag_source_reports_skips_through_the_api(tmp_path):
    bag = tmp_path / 'bag'
    write_drive_bag(bag, 5, broken={0, 4})
    database = build_map(BagSource(bag, '/cam', '/odom'), SOURCE,
                         BuildConfig(keyframes=KeyframeConfig(enabled=False)),
                         progress=False)
    assert list(database.positions[:, 0]) == [1.0, 2.0, 3.0]
    assert [s['name'] for s in database.manifest.source['undecodable']] == ['/cam#0', '/cam#4']


def test_keyframes_that_cannot_be_saved_are_kept_then_rescued_beside_the_map(tmp_path):
    path = tmp_path / 'map'
    recorder = MapRecorder(SOURCE, BuildConfig(), 'map', path=path, lock_timeout_s=0.2)
    rng = np.random.default_rng(5)
    for i in range(3):
        recorder.add(rng.integers(0, 255, (32, 48, 3), np.uint8), i * SECOND,
                     Pose((3.0 * i, 0.0, 0.0)))
    with lock_held_by_another_thread(path, 'vpr build-map --append'):
        with pytest.raises(MapLockedError, match='vpr build-map --append'):
            recorder.save()
        assert recorder.pending == 3 and not path.exists()    # kept for a retry
        rescued = recorder.rescue()
    assert rescued.parent == tmp_path and rescued.name.startswith('map.unsaved-')
    assert recorder.pending == 0 and list(MapDatabase.load(rescued).positions[:, 0]) == \
        [0.0, 3.0, 6.0]
    assert recorder.save() is None and not path.exists()


def test_an_unreadable_image_file_is_skipped_and_named_or_aborts_when_strict(tmp_path):
    write_folder(tmp_path / 'images', 4)
    (tmp_path / 'images' / '002.png').write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(40))
    database = build_map(ImageFolderSource(tmp_path / 'images'), SOURCE, progress=False)
    assert list(database.names) == ['000.png', '001.png', '003.png']
    assert database.manifest.source['undecodable'][0]['name'] == '002.png'
    with pytest.raises(UnsupportedImageError, match=r'frame 002\.png \(index 2'):
        build_map(ImageFolderSource(tmp_path / 'images'), SOURCE, BuildConfig(strict=True),
                  progress=False)
