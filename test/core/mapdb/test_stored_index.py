"""Approximate indexes kept in the map folder: loaded instead of rebuilt, never trusted blindly."""
import json
import logging

import numpy as np
import pytest
from synthetic_maps import clustered_descriptors, make_map

from vpr_core.mapdb import approximate
from vpr_core.mapdb import index as index_module
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.index import SearchConfig

IVF = SearchConfig(mode='binary', index='ivf', ivf_nlist=16, ivf_nprobe=4, top_k=10)
HNSW = SearchConfig(mode='binary', index='hnsw', hnsw_m=8, top_k=10)


@pytest.fixture
def builds(monkeypatch):
    """Kinds of the binary indexes built, in order."""
    calls = []
    original = approximate.build_binary

    def counting(faiss, codes, bits, kind, config, gpu):
        calls.append(kind)
        return original(faiss, codes, bits, kind, config, gpu)

    monkeypatch.setattr(approximate, 'build_binary', counting)
    return calls


@pytest.fixture
def saved(tmp_path, monkeypatch):
    """(map folder of 1,500 places, queries)."""
    monkeypatch.setenv('VPR_CACHE', str(tmp_path / 'cache'))
    places, queries = clustered_descriptors(1500, seed=3)
    make_map(places).save(tmp_path / 'map')
    return tmp_path / 'map', queries


def manifest_of(path):
    return json.loads((path / 'manifest.json').read_text())


def hits_of(path, config, queries):
    hits = MapDatabase.load(path).search_hits(queries, config=config)
    return hits.indices, hits.distances


@pytest.mark.parametrize('config', [IVF, HNSW], ids=['ivf', 'hnsw'])
def test_round_trip_loads_instead_of_building(saved, builds, config):
    path, queries = saved
    built = hits_of(path, config, queries)
    assert builds == [config.index]
    entry = manifest_of(path)['indexes'][config.index]
    assert (path / entry['file']).is_file()
    assert entry['codes_sha256'] == manifest_of(path)['files']['codes.npy']['sha256']
    database = MapDatabase.load(path)
    assert database.index(config).loaded
    loaded = database.search_hits(queries, config=config)
    assert builds == [config.index]                 # no second build
    np.testing.assert_array_equal(loaded.indices, built[0])
    np.testing.assert_array_equal(loaded.distances, built[1])


def test_corrupt_index_file_is_rebuilt_with_a_warning(saved, builds, caplog):
    path, queries = saved
    built = hits_of(path, IVF, queries)
    stored = path / manifest_of(path)['indexes']['ivf']['file']
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0xFF
    stored.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger='vpr_core.mapdb.stored_indexes'):
        rebuilt = hits_of(path, IVF, queries)
    assert 'is corrupt' in caplog.text
    assert builds == ['ivf', 'ivf']
    np.testing.assert_array_equal(rebuilt[0], built[0])
    assert MapDatabase.load(path).index(IVF).loaded        # the rebuilt one was stored


def test_truncated_or_stale_index_is_rebuilt(saved, builds, caplog):
    path, queries = saved
    hits_of(path, IVF, queries)
    stored = path / manifest_of(path)['indexes']['ivf']['file']
    stored.write_bytes(stored.read_bytes()[:-10])
    with caplog.at_level(logging.WARNING, logger='vpr_core.mapdb.stored_indexes'):
        hits_of(path, IVF, queries)
    assert 'wrong size' in caplog.text
    manifest = manifest_of(path)
    manifest['indexes']['ivf']['codes_sha256'] = '0' * 64
    (path / 'manifest.json').write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger='vpr_core.mapdb.stored_indexes'):
        hits_of(path, IVF, queries)
    assert 'stale' in caplog.text
    assert builds == ['ivf'] * 3


def test_changed_nlist_rebuilds_and_replaces(saved, builds):
    path, queries = saved
    hits_of(path, IVF, queries)
    other = SearchConfig(mode='binary', index='ivf', ivf_nlist=8, ivf_nprobe=4)
    database = MapDatabase.load(path)
    assert not database.index(other).loaded
    assert database.index(other)._binary.nlist == 8
    assert builds == ['ivf', 'ivf']
    assert manifest_of(path)['indexes']['ivf']['params']['ivf_nlist'] == 8
    assert MapDatabase.load(path).index(other).loaded
    # query-time settings do not change what is stored
    assert MapDatabase.load(path).index(
        SearchConfig(mode='binary', index='ivf', ivf_nlist=8, ivf_nprobe=2)).loaded


def test_index_of_another_map_is_never_used(saved, builds, tmp_path):
    path, queries = saved
    hits_of(path, IVF, queries)
    database = MapDatabase.load(path)
    appended = database.append(make_map(clustered_descriptors(50, seed=4)[0]))
    assert not appended.index(IVF).loaded           # other codes: built, not stored
    appended.save(path)
    assert manifest_of(path)['indexes'] == {}
    assert not MapDatabase.load(path).index(IVF).loaded
    assert builds == ['ivf', 'ivf', 'ivf']
    assert manifest_of(path)['indexes']['ivf']['params']['size'] == 1550


def test_bytes_of_other_parameters_are_refused(saved):
    import faiss
    path, _ = saved
    database = MapDatabase.load(path)
    data = faiss.serialize_index_binary(database.index(HNSW)._binary).tobytes()
    params = index_module.approximate_params('ivf', IVF, database.size, 64)
    with pytest.raises(index_module.MapError, match='does not match'):
        index_module.deserialize_binary(faiss, data, params)
    with pytest.raises(index_module.MapError, match='cannot be read'):
        index_module.deserialize_binary(faiss, data[:len(data) // 3], params)


def test_unwritable_folder_only_costs_a_rebuild(saved, builds, monkeypatch, caplog):
    from vpr_core.mapdb import stored_indexes
    path, queries = saved
    (path / '.index_ivf.faissbin.tmp-1-dead').write_bytes(b'left by a crash')
    expected = hits_of(path, IVF, queries)
    assert not list(path.glob('.index_*.tmp-*'))

    def refuse(directory, name, data):
        raise PermissionError(13, 'Permission denied', str(directory / name))

    monkeypatch.setattr(stored_indexes, 'write_file_atomic', refuse)
    (path / 'manifest.json').write_text(
        json.dumps({**manifest_of(path), 'indexes': {}}))
    with caplog.at_level(logging.WARNING, logger='vpr_core.mapdb.stored_indexes'):
        again = hits_of(path, IVF, queries)
    assert 'cannot store the ivf index' in caplog.text
    np.testing.assert_array_equal(again[0], expected[0])
    assert builds == ['ivf', 'ivf']
