"""Load-time verification: sha256 once per file version, size and stat checks every time."""
import os
import time

import numpy as np
import pytest

from vpr_core.errors import MapError
from vpr_core.mapdb import arrays, storage
from vpr_core.mapdb.database import MapDatabase

HASHED = ('floats.npy', 'codes.npy', 'positions.npy', 'orientations.npy', 'stamps.npy',
          'place_ids.npy')


@pytest.fixture
def hashes(monkeypatch, tmp_path):
    """Names of the files hashed, in order; a private verification cache; old map files."""
    monkeypatch.setenv('VPR_CACHE', str(tmp_path / 'cache'))
    calls = []
    original = arrays.sha256_file

    def counting(path):
        calls.append(path.name)
        return original(path)

    monkeypatch.setattr(arrays, 'sha256_file', counting)
    return calls


def saved_map(tmp_path, small_map):
    database, _ = small_map
    database.save(tmp_path / 'map')
    # files written in the same clock tick as a hash are never vouched for (racy-clean
    # rule); a real map is loaded long after it was written
    start_ns = time.time_ns() + int(10 * 1e9)
    return tmp_path / 'map', start_ns


def test_untouched_map_loads_without_hashing(tmp_path, small_map, hashes, monkeypatch):
    path, later_ns = saved_map(tmp_path, small_map)
    monkeypatch.setattr(arrays, '_now_ns', lambda: later_ns)
    first = MapDatabase.load(path)
    assert sorted(hashes) == sorted(HASHED)
    assert (tmp_path / 'cache' / storage.VERIFICATION_FILE).is_file()
    hashes.clear()
    second = MapDatabase.load(path)
    assert hashes == []
    np.testing.assert_array_equal(first.floats, second.floats)
    MapDatabase.load(path, verify='full')       # 'full' always hashes
    assert sorted(hashes) == sorted(HASHED)


def test_fresh_files_are_hashed_again(tmp_path, small_map, hashes, monkeypatch):
    path, _ = saved_map(tmp_path, small_map)
    written_ns = max(f.stat().st_ctime_ns for f in path.iterdir())
    # the hash begins right after the last write (pinned: a stalled CI must not age them)
    monkeypatch.setattr(arrays, '_now_ns', lambda: written_ns + 1_000_000)
    MapDatabase.load(path)
    MapDatabase.load(path)           # written moments ago: no stat vouches for them yet
    assert len(hashes) == 2 * len(HASHED)


def test_same_size_change_with_new_mtime_is_detected(tmp_path, small_map, hashes,
                                                     monkeypatch):
    path, later_ns = saved_map(tmp_path, small_map)
    monkeypatch.setattr(arrays, '_now_ns', lambda: later_ns)
    MapDatabase.load(path)
    floats = path / 'floats.npy'
    info = floats.stat()
    data = bytearray(floats.read_bytes())
    data[-7] ^= 0xFF
    floats.write_bytes(bytes(data))
    os.utime(floats, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
    assert floats.stat().st_size == info.st_size
    hashes.clear()
    with pytest.raises(MapError, match='floats.npy is corrupt'):
        MapDatabase.load(path)
    assert hashes == ['floats.npy']         # the untouched files are vouched for


def test_same_size_change_with_restored_mtime_is_detected(tmp_path, small_map, hashes,
                                                          monkeypatch):
    path, later_ns = saved_map(tmp_path, small_map)
    monkeypatch.setattr(arrays, '_now_ns', lambda: later_ns)
    MapDatabase.load(path)
    codes = path / 'codes.npy'
    info = codes.stat()
    time.sleep(0.05)            # past the file-time clock tick of the save
    data = bytearray(codes.read_bytes())
    data[-1] ^= 0xFF
    codes.write_bytes(bytes(data))
    os.utime(codes, ns=(info.st_atime_ns, info.st_mtime_ns))    # mtime put back: ctime moved
    with pytest.raises(MapError, match='codes.npy is corrupt'):
        MapDatabase.load(path)


def test_truncated_file_is_always_detected(tmp_path, small_map, hashes, monkeypatch):
    path, later_ns = saved_map(tmp_path, small_map)
    monkeypatch.setattr(arrays, '_now_ns', lambda: later_ns)
    MapDatabase.load(path)
    stamps = path / 'stamps.npy'
    stamps.write_bytes(stamps.read_bytes()[:-8])
    for verify in (True, 'full', False):
        with pytest.raises(MapError, match='stamps.npy.*truncated'):
            MapDatabase.load(path, verify=verify)


def test_damaged_or_unwritable_cache_only_costs_a_hash(tmp_path, small_map, hashes,
                                                       monkeypatch):
    path, later_ns = saved_map(tmp_path, small_map)
    monkeypatch.setattr(arrays, '_now_ns', lambda: later_ns)
    (tmp_path / 'cache').mkdir()
    (tmp_path / 'cache' / storage.VERIFICATION_FILE).write_text('{not json')
    MapDatabase.load(path)
    assert sorted(hashes) == sorted(HASHED)
    monkeypatch.setenv('VPR_CACHE', str(path / 'manifest.json' / 'not-a-dir'))
    hashes.clear()
    MapDatabase.load(path)
    assert sorted(hashes) == sorted(HASHED)
