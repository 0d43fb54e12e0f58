"""The demo's scoring: stamps to bag positions, and hand-computed recall, precision, latency."""
import math

import numpy as np
import pytest

from vpr_ros.demo_report import nearest_position, position_of, score

S = 1_000_000_000


def test_stamps_map_to_their_bag_positions():
    stamps = np.array([30, 10, 20]) * S
    assert position_of(stamps) == {10 * S: 0, 20 * S: 1, 30 * S: 2}
    ordered = np.sort(stamps)
    assert [nearest_position(q * S, ordered) for q in (0, 14, 15, 16, 29, 99)] == \
        [0, 0, 0, 1, 2, 2]


def test_score_counts_hits_accepted_matches_and_latency():
    queries = {q * S: q for q in range(4)}           # winter stamp -> position
    places = {(100 + p) * S: p for p in range(4)}      # summer stamp -> position
    published = {q * S: float(q) for q in range(4)}
    # Frame 0 -> place 0 (hit), 1 -> 3 (miss), 2 -> 1 (hit at tolerance 1); frame 3 unanswered.
    answers = {0: (0.010, 100 * S), S: (1.020, 103 * S), 2 * S: (2.030, 101 * S)}
    accepted = [(0, 100 * S), (S, 103 * S)]
    result, arrays = score(published, answers, accepted, 1, queries, places)
    assert result.frames_published == 4 and result.frames_answered == 3
    assert result.recall_at_1 == pytest.approx(2 / 3)
    assert result.accepted == 2 and result.accepted_correct == 1
    assert result.accepted_precision == 0.5 and result.accepted_recall == 0.25
    assert result.latency_p50_ms == pytest.approx(20.0) and result.latency_max_ms == \
        pytest.approx(30.0)
    assert list(arrays['hits']) == [True, False, True]


def test_an_empty_run_scores_zero_without_dividing_by_zero():
    result, _ = score({}, {}, [], 1, {}, {})
    assert result.recall_at_1 == 0.0 and result.accepted_recall == 0.0
    assert math.isnan(result.accepted_precision) and math.isnan(result.latency_p50_ms)


def test_transport_summary_counts_what_the_node_never_received():
    from vpr_ros.demo import transport_summary
    numbers = transport_summary(300, {'received': '297', 'dropped': '4', 'rejected_inputs': '1',
                                      'frame_errors': '0'})
    assert numbers['frames_lost_in_transport'] == 3
    assert numbers['frames_dropped_by_busy_worker'] == 4 and numbers['frames_rejected'] == 1
    assert numbers['line'] == ('frames lost in transport 3 (node received 297 of 300; 4 '
                               'skipped by its busy worker, 1 failed)')
    assert 'unknown' in transport_summary(300, {})['line']
