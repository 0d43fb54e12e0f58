"""Online hubness reduction: the definition, causality, a hub that stops winning, a stopped
robot that keeps its place, the evaluator's sequence filter and the online tracker using it."""
import numpy as np
import pytest

from vpr_core.descriptors import Descriptors, pack_codes
from vpr_core.errors import ConfigError
from vpr_core.evaluation.datasets import EvalSet
from vpr_core.evaluation.evaluator import EvalOptions, score_descriptors
from vpr_core.evaluation.stream import descriptor_map, query_stamps, stream_config
from vpr_core.localization.config import LocalizationConfig, SequenceConfig
from vpr_core.localization.hubness import PlaceHubness, reduce_hubness
from vpr_core.localization.recognizer import PlaceRecognizer
from vpr_core.localization.sequence import sequence_score_matrix
from vpr_core.localization.tracker import SequenceTracker


def loop_reference(distances, k):
    """Row q, place p: d(q, p) minus half the mean of the k smallest d(0..q, p)."""
    out = np.empty(distances.shape)
    for q in range(distances.shape[0]):
        for p in range(distances.shape[1]):
            seen = sorted(distances[:q + 1, p])
            out[q, p] = distances[q, p] - np.mean(seen[:k]) / 2.0
    return out


@pytest.mark.parametrize('k', [1, 3, 10])
def test_reduce_hubness_equals_the_definition(k):
    distances = np.random.default_rng(0).random((7, 5)) * 4.0
    assert np.allclose(reduce_hubness(distances, k), loop_reference(distances, k))


def test_a_row_depends_only_on_the_rows_before_it():
    rng = np.random.default_rng(1)
    distances = rng.random((10, 6))
    changed = distances.copy()
    changed[6:] = rng.random((4, 6))
    assert np.array_equal(reduce_hubness(distances)[:6], reduce_hubness(changed)[:6])
    assert not np.allclose(reduce_hubness(distances)[6:], reduce_hubness(changed)[6:])


def test_a_place_near_every_query_stops_winning():
    # places 0..5 are the route, place 6 lies at 0.4 from every query; each query is at 0.45
    # from its own place and 1.0 from the others: the hub wins every plain row
    distances = np.full((6, 7), 1.0)
    distances[np.arange(6), np.arange(6)] = 0.45
    distances[:, 6] = 0.4
    assert np.all(np.argmin(distances, axis=1) == 6)
    corrected = reduce_hubness(distances, k=3)
    # row 0: the own place has seen 0.45, the hub 0.4: 0.225 against 0.2, the hub still wins;
    # from row 1 on the own place has seen a far query too (1.0) and wins
    assert np.argmin(corrected[0]) == 6
    assert list(np.argmin(corrected[1:], axis=1)) == [1, 2, 3, 4, 5]
    assert np.isclose(corrected[1, 1], 0.45 - (0.45 + 1.0) / 4)


def test_a_stopped_robot_keeps_its_ranking():
    row = np.random.default_rng(2).random(9)
    corrected = reduce_hubness(np.tile(row, (12, 1)), k=3)
    for q in range(12):
        assert np.array_equal(np.argsort(corrected[q]), np.argsort(row))


def test_online_and_batch_agree_and_bad_input_is_refused():
    distances = np.random.default_rng(3).random((5, 4))
    hubness = PlaceHubness(4, k=2)
    assert np.array_equal(hubness.penalty(), np.zeros(4))
    online = np.stack([hubness.adjust(row) for row in distances])
    assert hubness.seen == 5
    assert np.allclose(online, reduce_hubness(distances, 2))
    with pytest.raises(ConfigError, match='k must be >= 1'):
        PlaceHubness(4, k=0)
    with pytest.raises(ConfigError, match='distances to 4 places'):
        hubness.update(np.zeros(5))
    with pytest.raises(ConfigError, match=r'\[Q, N\] matrix'):
        reduce_hubness(np.zeros(4))
    assert reduce_hubness(np.zeros((0, 4))).shape == (0, 4)


@pytest.mark.parametrize('k', [0, 3])
def test_the_evaluator_sequence_filter_applies_it(k):
    rng = np.random.default_rng(4)
    db = rng.standard_normal((20, 8)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    queries = db + 0.6 * rng.standard_normal(db.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    positives = [np.array([i]) for i in range(20)]
    evalset = EvalSet(name='toy', database=tuple(f'd{i}' for i in range(20)),
                      queries=tuple(f'q{i}' for i in range(20)), positives=tuple(positives),
                      sequential=True)
    localization = LocalizationConfig(sequence=SequenceConfig(hubness_k=k))
    options = EvalOptions(sequence_length=3, localization=localization, progress=False)
    section = score_descriptors(Descriptors(db, None), Descriptors(queries, None), evalset,
                                options)
    # the evaluator's stream is the node's recognizer, with the hubness correction when set
    config = stream_config(localization, 'float', 3, options.rerank_k)
    recognizer = PlaceRecognizer(descriptor_map(Descriptors(db, None), 'float'), None, config)
    stamps = query_stamps(evalset)
    expected = [recognizer.process(Descriptors(queries[i:i + 1], None), int(stamps[i]))
                for i in range(20)]
    assert section['sequence_matches'] == [r.match.index for r in expected]
    assert section['hubness_k'] == k and (recognizer.tracker.hubness is None) == (k == 0)
    plain = PlaceRecognizer(descriptor_map(Descriptors(db, None), 'float'), None,
                            stream_config(LocalizationConfig(), 'float', 3, options.rerank_k))
    scores = [plain.process(Descriptors(queries[i:i + 1], None), int(stamps[i])).match.score
              for i in range(20)]
    assert np.allclose([r.match.score for r in expected], scores) == (k == 0)
    single = np.argmin(2.0 - 2.0 * queries @ db.T, axis=1)
    assert section['matches'] == [int(s) for s in single]        # single-frame: never


@pytest.mark.parametrize('window', [0, 6])
@pytest.mark.parametrize('codes_only', [False, True])
def test_the_online_tracker_equals_the_offline_correction(window, codes_only):
    rng = np.random.default_rng(5)
    places = rng.standard_normal((30, 16)).astype(np.float32)
    queries = places[np.arange(9) + 5] + rng.standard_normal((9, 16)).astype(np.float32)
    if codes_only:
        bits = 16
        place_signs, query_signs = np.where(places >= 0, 1, -1), np.where(queries >= 0, 1, -1)
        place_codes, query_codes = pack_codes(place_signs), pack_codes(query_signs)
        similarity = (query_signs @ place_signs.T).astype(np.float64) / bits
        tracker_args = (None, place_codes, bits)
        rows = [Descriptors(None, query_codes[q:q + 1]) for q in range(9)]
    else:
        places /= np.linalg.norm(places, axis=1, keepdims=True)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        similarity = queries.astype(np.float64) @ places.T.astype(np.float64)
        tracker_args = (places, None, 0)
        rows = [Descriptors(queries[q:q + 1], None) for q in range(9)]
    config = SequenceConfig(length=4, velocities=(1.0, 2.0), contrast_window=window,
                            hubness_k=3)
    corrected = 1.0 - reduce_hubness(1.0 - similarity, 3)
    offline = sequence_score_matrix(corrected, 4, velocities=config.velocities,
                                    similarity=True, contrast_window=window)
    plain = sequence_score_matrix(similarity, 4, velocities=config.velocities,
                                  similarity=True, contrast_window=window)
    assert not np.allclose(offline, plain)
    tracker = SequenceTracker(*tracker_args, config)
    for q in range(9):
        tracker.push(rows[q])
        online = {h.index: h.score for h in tracker.score(np.arange(30))}
        scored = np.array([online.get(n, -np.inf) for n in range(30)])
        assert np.allclose(scored, offline[q], atol=1e-5)
    tracker.reset()
    assert tracker.hubness.seen == 9 and not tracker.window    # the statistics are kept
