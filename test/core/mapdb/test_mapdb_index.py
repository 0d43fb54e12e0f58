"""Search: Hamming top-K against brute-force numpy, re-rank, float, approximate indexes."""
import numpy as np
import pytest
from synthetic_maps import clustered_descriptors, make_map

from vpr_core.descriptors import Descriptors
from vpr_core.errors import ConfigError
from vpr_core.mapdb.index import hamming_distances, PlaceIndex, SearchConfig


def brute_hamming(queries, codes, bits):
    a = np.unpackbits(queries, axis=1, count=bits).astype(np.int32)
    b = np.unpackbits(codes, axis=1, count=bits).astype(np.int32)
    return (a[:, None, :] != b[None, :, :]).sum(axis=2)


def test_hamming_distances_equal_bitwise_count():
    rng = np.random.default_rng(1)
    for width in (8, 3):        # uint64 fast path and the plain byte path
        queries = rng.integers(0, 256, (7, width), dtype=np.uint8)
        codes = rng.integers(0, 256, (50, width), dtype=np.uint8)
        assert np.array_equal(hamming_distances(queries, codes),
                              brute_hamming(queries, codes, width * 8))


@pytest.mark.parametrize('backend', ['faiss', 'numpy'])
def test_binary_top_k_equals_brute_force(small_map, backend):
    database, queries = small_map
    config = SearchConfig(mode='binary', top_k=15, backend=backend)
    hits = database.index(config).search(queries[:40])
    reference = brute_hamming(queries.codes[:40], database.codes, 64)
    expected = np.sort(reference, axis=1)[:, :15]
    assert np.array_equal(hits.distances, expected)
    for row, ids in enumerate(hits.indices):
        assert np.array_equal(reference[row, ids], hits.distances[row])
        strictly_better = np.flatnonzero(reference[row] < expected[row, -1])
        assert set(strictly_better) <= set(ids)
        # ties inside the returned set are ordered by place index
        for a, b in zip(range(14), range(1, 15)):
            if hits.distances[row, a] == hits.distances[row, b]:
                assert ids[a] < ids[b]
    assert np.allclose(hits.scores, 1.0 - 2.0 * hits.distances / 64)


def test_rerank_over_all_places_equals_float_ranking(small_map):
    database, queries = small_map
    rerank = database.index(SearchConfig(mode='rerank', top_k=5, rerank_k=200))
    floats = database.index(SearchConfig(mode='float', top_k=5))
    a, b = rerank.search(queries), floats.search(queries)
    assert np.array_equal(a.indices, b.indices)
    assert np.allclose(a.scores, b.scores, atol=1e-5)
    exact = queries.floats @ database.floats.T
    assert np.array_equal(b.indices[:, 0], exact.argmax(axis=1))


@pytest.mark.parametrize('mode', ['float', 'binary', 'rerank'])
def test_faiss_and_numpy_backends_agree(small_map, mode):
    database, queries = small_map
    a = database.index(SearchConfig(mode=mode, top_k=10, rerank_k=30)).search(queries)
    b = database.index(SearchConfig(mode=mode, top_k=10, rerank_k=30,
                                    backend='numpy')).search(queries)
    assert np.allclose(a.scores, b.scores, atol=1e-5)
    assert (a.indices == b.indices).mean() > 0.99      # float ties may swap


def test_k_larger_than_map_returns_every_place(small_map):
    database, queries = small_map
    for mode in ('float', 'binary', 'rerank'):
        hits = database.index(SearchConfig(mode=mode)).search(queries[:3], k=1000)
        assert hits.indices.shape == (3, 200)
        assert all(sorted(row) == list(range(200)) for row in hits.indices)


def test_empty_map_and_empty_query():
    empty = Descriptors(np.zeros((0, 32), np.float32), np.zeros((0, 8), np.uint8))
    database = make_map(empty)
    _, queries = clustered_descriptors(3)
    assert database.search(queries, k=5) == [[], [], []]
    assert database.search(empty, k=5) == []


@pytest.mark.parametrize('kind', ['hnsw', 'ivf'])
def test_approximate_binary_index_finds_the_exact_neighbours(kind):
    places, queries = clustered_descriptors(3000, dim=64, bits=128, noise=0.2)
    database = make_map(places)
    config = SearchConfig(mode='binary', index=kind, top_k=1, ivf_nprobe=8)
    approximate = database.index(config).search(queries[:300])
    exact = database.index(SearchConfig(mode='binary', top_k=1)).search(queries[:300])
    agree = np.mean(approximate.distances[:, 0] == exact.distances[:, 0])
    assert agree > 0.9


def test_mode_errors_name_what_is_missing(small_map):
    database, _ = small_map
    with pytest.raises(ConfigError, match='valid: auto, rerank, binary, float'):
        PlaceIndex(database.floats, None, 0, SearchConfig(mode='bogus'))
    with pytest.raises(ConfigError, match='needs codes; the map holds floats'):
        PlaceIndex(database.floats, None, 0, SearchConfig(mode='binary'))
    assert PlaceIndex(database.floats, None, 0, SearchConfig()).mode == 'float'
    assert PlaceIndex(None, database.codes, 64, SearchConfig()).mode == 'binary'


def test_query_time_settings_share_one_index(small_map):
    database, queries = small_map
    a = database.index(SearchConfig(mode='rerank', top_k=3, rerank_k=20))
    b = database.index(SearchConfig(mode='rerank', top_k=7, rerank_k=50))
    assert a is b
    assert database.search_hits(queries[:2], None, SearchConfig(top_k=7)).indices.shape == (2, 7)
    assert database.index(SearchConfig(mode='binary')) is not a
