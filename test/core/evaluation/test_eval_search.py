"""Evaluation search against brute-force numpy, and the pixel baseline."""
import logging

import numpy as np
import pytest

from vpr_core.descriptors import Descriptors, pack_codes
from vpr_core.errors import ConfigError
from vpr_core.evaluation.baseline import describe_pixels, pixel_distances
from vpr_core.evaluation import search
from vpr_core.evaluation.search import distance_matrix, rank
from vpr_core.mapdb.index import PlaceIndex, SearchConfig


def random_descriptors(count: int, seed: int, dim: int = 16, bits: int = 64) -> Descriptors:
    rng = np.random.default_rng(seed)
    floats = rng.normal(size=(count, dim)).astype(np.float32)
    floats /= np.linalg.norm(floats, axis=1, keepdims=True)
    return Descriptors(floats, pack_codes(np.where(rng.normal(size=(count, bits)) >= 0, 1, -1)))


def test_float_ranking_equals_brute_force():
    db, queries = random_descriptors(50, 0), random_descriptors(7, 1)
    ranking = rank(db, queries, 'float', k=5)
    brute = ((queries.floats[:, None] - db.floats[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(ranking.indices, np.argsort(brute, axis=1)[:, :5])
    np.testing.assert_allclose(ranking.distances, np.sort(brute, axis=1)[:, :5], atol=1e-5)
    assert len(ranking.seconds['search']) == 7


def test_binary_ranking_equals_brute_force_hamming():
    db, queries = random_descriptors(40, 2), random_descriptors(5, 3)
    ranking = rank(db, queries, 'binary', k=40)
    bits_db = np.unpackbits(db.codes, axis=1)
    bits_q = np.unpackbits(queries.codes, axis=1)
    hamming = (bits_q[:, None, :] != bits_db[None]).sum(-1)
    np.testing.assert_array_equal(np.sort(ranking.distances, axis=1), np.sort(hamming, axis=1))
    chosen = np.take_along_axis(hamming, ranking.indices, axis=1)
    np.testing.assert_array_equal(chosen, ranking.distances)


def test_rerank_only_reorders_the_hamming_candidates():
    db, queries = random_descriptors(60, 4), random_descriptors(6, 5)
    hashed = rank(db, queries, 'binary', k=10)
    reranked = rank(db, queries, 'rerank', k=10, rerank_k=10)
    for cand, final in zip(hashed.indices, reranked.indices):
        assert sorted(cand.tolist()) == sorted(final.tolist())
    brute = ((queries.floats[:, None] - db.floats[None]) ** 2).sum(-1)
    picked = np.take_along_axis(brute, reranked.indices, axis=1)
    assert np.all(np.diff(picked, axis=1) >= -1e-6)
    assert 'rerank' in reranked.seconds


def test_ties_go_to_the_smaller_place_as_in_the_node():
    db = Descriptors(np.tile(np.eye(1, 2, dtype=np.float32), (3, 1)),
                     np.zeros((3, 8), dtype=np.uint8))
    for mode in ('float', 'binary', 'rerank'):
        assert rank(db, db[:1], mode, k=3, rerank_k=3).indices.tolist() == [[0, 1, 2]]


@pytest.mark.parametrize('mode', ['float', 'binary', 'rerank'])
def test_evaluation_ranks_with_the_node_search(mode):
    db, queries = random_descriptors(80, 9), random_descriptors(6, 10)
    ranking = rank(db, queries, mode, k=8, rerank_k=20)
    node = PlaceIndex(db.floats if mode != 'binary' else None,
                      db.codes if mode != 'float' else None, 64,
                      SearchConfig(mode=mode, rerank_k=20, top_k=8)).search(queries)
    np.testing.assert_array_equal(ranking.indices, node.indices)
    np.testing.assert_allclose(ranking.distances, node.distances, atol=1e-6)
    assert set(ranking.seconds) == ({'search', 'rerank'} if mode == 'rerank' else {'search'})


def test_distance_matrix_modes():
    db, queries = random_descriptors(30, 6), random_descriptors(4, 7)
    floats = distance_matrix(db, queries, 'float')
    np.testing.assert_allclose(floats, ((queries.floats[:, None] - db.floats[None]) ** 2)
                               .sum(-1), atol=1e-5)
    hashed = distance_matrix(db, queries, 'binary')
    assert hashed.shape == (4, 30) and hashed.min() >= 0 and hashed.max() <= 1
    mixed = distance_matrix(db, queries, 'rerank', rerank_k=5)
    candidates = np.argsort(hashed, axis=1, kind='stable')[:, :5]
    for row, cand in enumerate(candidates):
        # Float distances for the Hamming candidates, their largest everywhere else.
        np.testing.assert_allclose(mixed[row, cand], floats[row, cand], atol=1e-5)
        others = np.setdiff1d(np.arange(30), cand)
        np.testing.assert_allclose(mixed[row, others], floats[row, cand].max(), atol=1e-5)


def test_modes_need_the_matching_descriptors():
    floats_only = Descriptors(random_descriptors(3, 8).floats, None)
    with pytest.raises(ConfigError, match='no hashing branch'):
        rank(floats_only, floats_only, 'rerank', k=1)
    with pytest.raises(ConfigError, match='valid: float, binary, rerank'):
        rank(floats_only, floats_only, 'cosine', k=1)


def test_hash_is_the_deprecated_name_of_binary(caplog):
    db, queries = random_descriptors(30, 11), random_descriptors(4, 12)
    search._warned.clear()
    with caplog.at_level(logging.WARNING, logger='vpr_core.evaluation.search'):
        old = rank(db, queries, 'hash', k=5)
        distance_matrix(db, queries, 'hash')
    assert [r.getMessage() for r in caplog.records] == [
        "evaluation mode 'hash' is deprecated; it is called 'binary' now, as in the node's "
        'localization.search.mode']                              # once per process
    np.testing.assert_array_equal(old.indices, rank(db, queries, 'binary', k=5).indices)
    np.testing.assert_array_equal(distance_matrix(db, queries, 'hash'),
                                  distance_matrix(db, queries, 'binary'))


def test_pixel_baseline_normalises_patches_and_ignores_brightness():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, size=(32, 64, 3), dtype=np.uint8)
    brighter = (image.astype(np.int16) + 40).astype(np.uint8)
    other = rng.integers(0, 255, size=(32, 64, 3), dtype=np.uint8)
    pixels = describe_pixels([image, brighter, other])
    patch = pixels[0].reshape(32, 64)[:8, :8]
    assert patch.mean() == pytest.approx(0.0, abs=1e-5)
    assert patch.std() == pytest.approx(1.0, abs=1e-4)
    distances = pixel_distances(pixels[:1], pixels)
    assert distances[0, 1] == pytest.approx(0.0, abs=1e-4)
    assert distances[0, 2] > 0.5
