"""Recall@N and the precision-recall curve against hand-computed cases."""
import numpy as np
import pytest

from vpr_core.evaluation.metrics import (percentiles_ms, precision_recall, recall_at,
                                         top1_correct)


def test_recall_at_matches_hand_computed_cumulative_case():
    predictions = np.array([[3, 1, 2, 0, 4],     # positive at rank 2 -> counts for N >= 2
                            [0, 1, 2, 3, 4],     # positive at rank 1
                            [4, 3, 2, 1, 0],     # positive at rank 5
                            [1, 2, 3, 4, 0]])    # no positive in the database
    positives = [np.array([1]), np.array([0, 9]), np.array([0]), np.array([], dtype=np.int64)]
    recalls = recall_at(predictions, positives, (1, 2, 5))
    # N=1: only query 1; N=2: queries 0 and 1; N=5: queries 0, 1, 2; query 3 stays counted.
    assert recalls == {1: 0.25, 2: 0.5, 5: 0.75}


def test_recall_at_sorts_values_and_handles_short_prediction_lists():
    predictions = np.array([[2, 0], [1, 2]])
    positives = [np.array([0]), np.array([0])]
    recalls = recall_at(predictions, positives, (10, 1))
    assert list(recalls) == [1, 10]
    assert recalls == {1: 0.0, 10: 0.5}


def test_recall_at_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match='predictions must be'):
        recall_at(np.zeros((3, 2), np.int64), [np.array([0])] * 2)


def test_top1_correct():
    assert top1_correct(np.array([[1, 0], [0, 1]]), [np.array([1]), np.array([1])]).tolist() == \
        [True, False]


def test_precision_recall_hand_computed():
    # Sorted by confidence: correct, wrong, correct, correct (one query lacks a positive).
    confidence = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, False, True, True])
    has_positive = np.array([True, True, True, False])
    pr = precision_recall(confidence, correct, has_positive)
    np.testing.assert_allclose(pr.precision, [1.0, 0.5, 2 / 3, 0.75])
    np.testing.assert_allclose(pr.recall, [1 / 3, 1 / 3, 2 / 3, 1.0])
    assert pr.recall_at_full_precision == pytest.approx(1 / 3)
    # Trapezoids from (0, 1): [0, 1/3] at 1 -> 1/3; flat step; [1/3, 2/3] mean(.5, 2/3);
    # [2/3, 1] mean(2/3, .75).
    expected = 1 / 3 + (1 / 3) * (0.5 + 2 / 3) / 2 + (1 / 3) * (2 / 3 + 0.75) / 2
    assert pr.auc == pytest.approx(expected)


def test_precision_recall_groups_equal_confidences():
    pr = precision_recall(np.array([0.5, 0.5, 0.1]), np.array([True, False, True]))
    np.testing.assert_allclose(pr.thresholds, [0.5, 0.1])
    np.testing.assert_allclose(pr.precision, [0.5, 2 / 3])
    assert pr.recall_at_full_precision == 0.0


def test_percentiles_ms():
    stats = percentiles_ms([0.001] * 19 + [0.1])
    assert stats['p50_ms'] == pytest.approx(1.0)
    assert stats['p95_ms'] > 1.0
    assert np.isnan(percentiles_ms([])['p50_ms'])
