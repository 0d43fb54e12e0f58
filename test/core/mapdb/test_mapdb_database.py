"""Map storage: round trips, named errors, atomic save / replace / append, no pickle."""
import json
import os

import numpy as np
import pytest
from synthetic_maps import clustered_descriptors, make_map

from vpr_core.descriptors import Descriptors
from vpr_core.errors import IncompatibleMapError, MapError
from vpr_core.mapdb import map_dir, storage
from vpr_core.mapdb.database import append_to_map, MapDatabase
from vpr_core.mapdb.index import SearchConfig

MODES = ('float', 'binary', 'rerank')


def results(database, queries, mode):
    hits = database.search_hits(queries, 10, SearchConfig(mode=mode, rerank_k=40))
    return hits.indices, hits.scores


@pytest.mark.parametrize('float_dtype', ['float32', 'float16'])
def test_save_load_gives_identical_search_results(tmp_path, float_dtype):
    places, queries = clustered_descriptors(150)
    database = make_map(places, float_dtype=float_dtype)
    database.save(tmp_path / 'map')
    loaded = MapDatabase.load(tmp_path / 'map', expected_fingerprint='model-a')
    assert loaded.floats.dtype == np.dtype(float_dtype)
    for mode in MODES:
        before, after = results(database, queries, mode), results(loaded, queries, mode)
        assert np.array_equal(before[0], after[0]) and np.array_equal(before[1], after[1])
    assert np.array_equal(loaded.positions, database.positions)
    assert np.array_equal(loaded.stamps_ns, database.stamps_ns)
    assert loaded.search(queries[:1], k=3)[0][0].place_id == \
        database.search(queries[:1], k=3)[0][0].place_id
    mmapped = MapDatabase.load(tmp_path / 'map', mmap=True)
    assert np.array_equal(results(mmapped, queries, 'rerank')[0], results(loaded, queries,
                                                                          'rerank')[0])


def test_records_are_named_and_ranked(small_map):
    database, queries = small_map
    matches = database.search(queries[5:6], k=3)[0]
    assert [m.rank for m in matches] == [0, 1, 2]
    assert matches[0].place_id == 5 and matches[0].position == (10.0, 0.0, 0.0)
    assert matches[0].stamp_ns == 5_000_000_000 and matches[0].stamp == 5.0
    assert matches[0].score >= matches[1].score >= matches[2].score
    assert matches[0].pose.position == matches[0].position


def test_another_models_map_is_refused_naming_both(tmp_path, small_map):
    database, _ = small_map
    database.save(tmp_path / 'map')
    with pytest.raises(IncompatibleMapError, match='model-a.*model-b'):
        MapDatabase.load(tmp_path / 'map', expected_fingerprint='model-b')
    with pytest.raises(IncompatibleMapError, match='code_bits 64, the model gives 128'):
        database.check_compatible('model-a', 32, 128)


def test_truncated_file_is_named(tmp_path, small_map):
    database, _ = small_map
    database.save(tmp_path / 'map')
    codes = tmp_path / 'map' / 'codes.npy'
    codes.write_bytes(codes.read_bytes()[:-100])
    with pytest.raises(MapError, match='codes.npy.*truncated'):
        MapDatabase.load(tmp_path / 'map')


def test_corrupt_file_is_named(tmp_path, small_map):
    database, _ = small_map
    database.save(tmp_path / 'map')
    floats = tmp_path / 'map' / 'floats.npy'
    data = bytearray(floats.read_bytes())
    data[-7] ^= 0xFF
    floats.write_bytes(bytes(data))
    with pytest.raises(MapError, match='floats.npy is corrupt'):
        MapDatabase.load(tmp_path / 'map')
    MapDatabase.load(tmp_path / 'map', verify=False)      # size and header still fine


def test_broken_or_newer_manifest_is_named(tmp_path, small_map):
    database, _ = small_map
    database.save(tmp_path / 'map')
    manifest = tmp_path / 'map' / 'manifest.json'
    text = manifest.read_text()
    manifest.write_text(text[:len(text) // 2])
    with pytest.raises(MapError, match='manifest.json is not valid JSON'):
        MapDatabase.load(tmp_path / 'map')
    data = json.loads(text)
    data['format_version'] = 99
    manifest.write_text(json.dumps(data))
    with pytest.raises(MapError, match='format_version 99'):
        MapDatabase.load(tmp_path / 'map')
    with pytest.raises(MapError, match='not found'):
        MapDatabase.load(tmp_path / 'nothing')


def test_saved_map_honours_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        make_map(clustered_descriptors(20, seed=1)[0]).save(tmp_path / 'map')
    finally:
        os.umask(old)
    assert (tmp_path / 'map').stat().st_mode & 0o777 == 0o755     # mkdtemp would give 0700
    assert all(f.stat().st_mode & 0o777 == 0o644 for f in (tmp_path / 'map').iterdir())


def test_interrupted_save_leaves_the_previous_map_unchanged(tmp_path, monkeypatch):
    old_places, queries = clustered_descriptors(100, seed=1)
    old = make_map(old_places)
    old.save(tmp_path / 'map')
    expected = results(MapDatabase.load(tmp_path / 'map'), queries, 'rerank')
    written = []
    real_write = storage.write_array

    def failing_write(directory, name, array):
        if len(written) == 3:
            raise OSError(28, 'No space left on device')
        written.append(name)
        return real_write(directory, name, array)

    monkeypatch.setattr(storage, 'write_array', failing_write)
    new = make_map(clustered_descriptors(300, seed=2)[0])
    with pytest.raises(OSError, match='No space left'):
        new.save(tmp_path / 'map')
    assert len(written) == 3
    # temporary dir removed; the lock file stays (deleting a flock file is a race)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.map.lock', 'map']
    reloaded = MapDatabase.load(tmp_path / 'map')
    assert reloaded.size == 100
    got = results(reloaded, queries, 'rerank')
    assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


@pytest.mark.parametrize('exchange', [True, False])
def test_replacing_a_map_swaps_it_whole(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(map_dir, '_rename_exchange', lambda a, b: False)
    make_map(clustered_descriptors(100, seed=1)[0]).save(tmp_path / 'map')
    make_map(clustered_descriptors(50, seed=2)[0], fingerprint='model-b').save(tmp_path / 'map')
    loaded = MapDatabase.load(tmp_path / 'map', expected_fingerprint='model-b')
    assert loaded.size == 50
    assert sorted(p.name for p in tmp_path.iterdir()) == ['.map.lock', 'map']


def test_crash_between_the_two_renames_still_finds_a_map(tmp_path, monkeypatch):
    make_map(clustered_descriptors(100, seed=1)[0]).save(tmp_path / 'map')
    monkeypatch.setattr(map_dir, '_rename_exchange', lambda a, b: False)
    real_rename = map_dir.os.rename
    calls = []

    def crash_on_second(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt('power cut')
        real_rename(src, dst)

    monkeypatch.setattr(map_dir.os, 'rename', crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        make_map(clustered_descriptors(50, seed=2)[0]).save(tmp_path / 'map')
    monkeypatch.setattr(map_dir.os, 'rename', real_rename)
    assert not (tmp_path / 'map').exists()
    assert MapDatabase.load(tmp_path / 'map').size == 100     # read from the backup


def test_refuses_to_replace_a_directory_that_is_not_a_map(tmp_path, small_map):
    database, _ = small_map
    (tmp_path / 'photos').mkdir()
    (tmp_path / 'photos' / 'keep.jpg').write_bytes(b'x')
    with pytest.raises(MapError, match='not a map directory'):
        database.save(tmp_path / 'photos')
    assert (tmp_path / 'photos' / 'keep.jpg').exists()


def test_append_is_atomic_and_renumbers_clashing_ids(tmp_path):
    first, queries = clustered_descriptors(60, seed=3)
    make_map(first[:40]).save(tmp_path / 'map')
    merged = append_to_map(tmp_path / 'map', make_map(first[40:]))
    loaded = MapDatabase.load(tmp_path / 'map')
    assert loaded.size == 60 == merged.size
    assert list(loaded.place_ids) == list(range(60))
    assert loaded.search(queries[50:51], k=1)[0][0].place_id == 50
    with pytest.raises(IncompatibleMapError):
        append_to_map(tmp_path / 'map', make_map(first[:5], fingerprint='model-b'))
    assert MapDatabase.load(tmp_path / 'map').size == 60


def test_duplicate_stamps_are_kept_and_duplicate_ids_refused(tmp_path):
    places, queries = clustered_descriptors(10)
    database = make_map(places)
    stamps = np.zeros(10, dtype=np.int64)
    twin = MapDatabase(database.manifest, places, database.positions, database.orientations,
                       stamps)
    twin.save(tmp_path / 'map')
    loaded = MapDatabase.load(tmp_path / 'map')
    assert loaded.size == 10 and np.all(loaded.stamps_ns == 0)
    assert loaded.search(queries[3:4], k=1)[0][0].index == 3
    with pytest.raises(MapError, match='unique'):
        MapDatabase(database.manifest, places, database.positions, database.orientations,
                    stamps, place_ids=np.zeros(10))
    # unordered ids: a repeat far apart is found, distinct ones in any order are fine
    shuffled = np.array([7, 3, 9, 0, 5, 1, 8, 2, 6, 4])
    MapDatabase(database.manifest, places, database.positions, database.orientations,
                stamps, place_ids=shuffled)
    with pytest.raises(MapError, match='unique'):
        MapDatabase(database.manifest, places, database.positions, database.orientations,
                    stamps, place_ids=np.where(shuffled == 4, 7, shuffled))


def test_no_pickle_anywhere(tmp_path, small_map):
    database, _ = small_map
    with pytest.raises(MapError, match='no pickle'):
        storage.write_array(tmp_path, 'bad.npy', np.array([{'a': 1}], dtype=object))
    database.save(tmp_path / 'map')
    for path in (tmp_path / 'map').glob('*.npy'):
        np.load(path, allow_pickle=False)


def test_codes_only_and_floats_only_maps(tmp_path):
    places, queries = clustered_descriptors(80)
    for kept in (Descriptors(None, places.codes), Descriptors(places.floats, None)):
        make_map(kept).save(tmp_path / 'map')
        loaded = MapDatabase.load(tmp_path / 'map')
        assert loaded.search(queries[7:8], k=1)[0][0].place_id == 7
