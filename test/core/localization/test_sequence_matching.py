"""Offline sequence matching against a loop reference, and the online tracker against it."""
import numpy as np
import pytest

from vpr_core.descriptors import Descriptors
from vpr_core.localization.config import SequenceConfig
from vpr_core.localization.sequence import (enhance_contrast, sequence_match,
                                            sequence_score_matrix)
from vpr_core.localization.tracker import SequenceTracker


def loop_reference(distances, length, velocities, window):
    """Direct transcription of the definition, one element at a time."""
    q_count, n_count = distances.shape
    enhanced = distances.astype(float).copy()
    if window > 1:
        half = window // 2
        for q in range(q_count):
            for n in range(n_count):
                around = distances[q, max(0, n - half):min(n_count, n + half + 1)]
                enhanced[q, n] = (distances[q, n] - around.mean()) / max(around.std(), 1e-6)
    out = np.full(distances.shape, np.inf)
    partial = np.full(distances.shape, np.inf)
    for q in range(q_count):
        for n in range(n_count):
            for v in velocities:
                terms = [enhanced[q - t, n - int(round(v * t))] for t in range(length)
                         if q - t >= 0 and n - int(round(v * t)) >= 0]
                partial[q, n] = min(partial[q, n], np.mean(terms))
                if len(terms) == min(length, q + 1):      # trajectory stays in the database
                    out[q, n] = min(out[q, n], np.mean(terms))
        if np.all(np.isinf(out[q])):
            out[q] = partial[q]
    return out


@pytest.mark.parametrize('window', [0, 4])
def test_score_matrix_equals_the_definition(window):
    rng = np.random.default_rng(0)
    distances = rng.random((12, 15))
    velocities = (0.5, 1.0, 1.5)
    got = sequence_score_matrix(distances, 4, velocities=velocities, contrast_window=window)
    assert np.allclose(got, loop_reference(distances, 4, velocities, window), atol=1e-6)
    flipped = sequence_score_matrix(-distances, 4, velocities=velocities, similarity=True,
                                    contrast_window=window)
    assert np.allclose(flipped, -got)


def test_enhance_contrast_is_a_local_z_score():
    row = np.array([[1.0, 2.0, 3.0, 10.0, 3.0]])
    enhanced = enhance_contrast(row, 3)
    window = np.array([2.0, 3.0, 10.0])
    assert np.isclose(enhanced[0, 2], (3.0 - window.mean()) / window.std())


def test_sequence_finds_a_path_that_single_frames_miss():
    rng = np.random.default_rng(1)
    distances = rng.random((80, 120))
    path = 20 + np.arange(80)
    distances[np.arange(80), path] -= 0.4             # weak signal along the true route
    single = np.argmin(distances, axis=1)
    best, score = sequence_match(distances, 10, velocities=(1.0,))
    assert np.mean(single == path) < 0.5
    assert np.mean(best[9:] == path[9:]) > 0.95
    assert score.shape == (80,) and np.all(np.isfinite(score))
    empty_best, empty_score = sequence_match(np.zeros((3, 0)), 5)
    assert list(empty_best) == [-1, -1, -1] and np.all(np.isnan(empty_score))


@pytest.mark.parametrize('window', [0, 6])
def test_tracker_with_every_place_as_candidate_equals_the_offline_scores(window):
    rng = np.random.default_rng(2)
    places = rng.standard_normal((30, 8)).astype(np.float32)
    places /= np.linalg.norm(places, axis=1, keepdims=True)
    queries = rng.standard_normal((9, 8)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    config = SequenceConfig(length=5, velocities=(0.5, 1.0, 2.0), contrast_window=window)
    offline = sequence_score_matrix(queries @ places.T, 5, velocities=config.velocities,
                                    similarity=True, contrast_window=window)
    tracker = SequenceTracker(places, None, 0, config)
    for q in range(len(queries)):
        tracker.push(Descriptors(queries[q:q + 1], None))
        online = {h.index: h.score for h in tracker.score(np.arange(30))}
        scored = np.array([online.get(n, -np.inf) for n in range(30)])
        assert np.allclose(scored, offline[q], atol=1e-5)
