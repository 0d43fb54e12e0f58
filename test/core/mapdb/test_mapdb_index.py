"""Search: Hamming top-K against brute-force numpy, re-rank, float, approximate indexes."""
import numpy as np
import pytest
from synthetic_maps import clustered_descriptors, make_map

from vpr_core.descriptors import Descriptors, RERANK_K
from vpr_core.errors import ConfigError
from vpr_core.mapdb import kernels
from vpr_core.mapdb.index import (hamming_distances, PlaceIndex, rerank_depth, SearchConfig,
                                  top_k_smallest)


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


def _reference_rerank(floats, codes, bits, queries, depth, k):
    """Canonical Hamming top-``depth`` (ties by index), float64 dot products, best ``k``."""
    hamming = brute_hamming(queries.codes, codes, bits)
    indices, scores = [], []
    for row in range(len(queries)):
        candidates = np.lexsort((np.arange(len(codes)), hamming[row]))[:depth]
        values = floats[candidates].astype(np.float64) @ queries.floats[row].astype(np.float64)
        order = np.lexsort((candidates, -values))[:k]
        indices.append(candidates[order])
        scores.append(values[order])
    return np.array(indices), np.array(scores)


@pytest.mark.parametrize('dtype', [np.float32, np.float16])
def test_rerank_equals_gather_and_dot_reference(dtype, monkeypatch):
    # a 64-row chunk forces the gather through several chunks of the reusable buffers
    monkeypatch.setattr(kernels, 'RERANK_CHUNK_BYTES', 64 * 4 * 32)
    places, queries = clustered_descriptors(500, dim=32, bits=64, seed=3)
    floats = places.floats.astype(dtype)
    expected, scores = _reference_rerank(floats, places.codes, 64, queries[:30], 150, 7)
    numpy_index = PlaceIndex(floats, places.codes, 64,
                             SearchConfig(mode='rerank', rerank_k=150, top_k=7, backend='numpy'))
    hits = numpy_index.search(queries[:30])
    assert np.array_equal(hits.indices, expected)
    np.testing.assert_allclose(hits.scores, scores, atol=1e-6)
    faiss_index = PlaceIndex(floats, places.codes, 64,
                             SearchConfig(mode='rerank', rerank_k=150, top_k=7))
    faiss_hits = faiss_index.search(queries[:30])
    np.testing.assert_allclose(faiss_hits.scores, scores, atol=1e-6)   # boundary ties may swap


def test_top_k_smallest_equals_a_stable_full_sort():
    rng = np.random.default_rng(5)
    values = rng.integers(0, 6, (4, 300))           # ties everywhere
    for k in (1, 7, 74, 76, 299, 300, 400):
        expected = np.argsort(values, axis=1, kind='stable')[:, :k]
        assert np.array_equal(top_k_smallest(values, k), expected)


def test_rerank_depth_keeps_small_maps_and_grows_with_the_map():
    assert rerank_depth(256, 0) == 0
    assert rerank_depth(256, 150) == 150                        # never past the map
    assert rerank_depth(256, 2_000) == RERANK_K                 # small maps search as before
    assert rerank_depth(256, 5_342) == 535                      # 10% at 256 bits
    assert rerank_depth(256, 1_000_000) == 100_000
    assert rerank_depth(512, 1_000_000) == 50_000               # longer codes: shallower
    assert rerank_depth(512, 4_000) == RERANK_K


def test_automatic_depth_is_used_unless_rerank_k_is_set(small_map):
    database, queries = small_map
    auto = PlaceIndex(database.floats, database.codes, 64, SearchConfig(mode='rerank'))
    assert SearchConfig().rerank_k == 0
    assert auto.rerank_depth() == rerank_depth(64, 200) == 200
    assert auto.rerank_depth(SearchConfig(rerank_k=30)) == 30
    with pytest.raises(ConfigError, match='rerank_k must be >= 0'):
        auto.search(queries[:1], config=SearchConfig(rerank_k=-1))


def test_numpy_float_search_never_copies_the_map_per_query(small_map):
    database, queries = small_map
    index = PlaceIndex(database.floats, None, 0, SearchConfig(mode='float', backend='numpy'))
    index.search(queries[:3])
    assert index._float32_rows() is database.floats             # float32: searched in place
    half = PlaceIndex(database.floats.astype(np.float16), None, 0,
                      SearchConfig(mode='float', backend='numpy'))
    first = half.search(queries[:3])
    converted = half._float32_rows()
    second = half.search(queries[:3])
    assert half._float32_rows() is converted                    # converted once, then reused
    assert np.array_equal(first.indices, second.indices)
    exact = PlaceIndex(database.floats.astype(np.float16), None, 0,
                       SearchConfig(mode='float')).search(queries[:3])
    np.testing.assert_allclose(first.scores, exact.scores, atol=1e-6)
