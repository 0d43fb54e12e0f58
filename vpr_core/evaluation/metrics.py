"""Retrieval metrics with the Visual-Geo-localization-Benchmark conventions.

Recall@N is cumulative: a query counts for N (and every larger N) as soon as one of its first N
predictions is a positive. Queries without any positive stay in the denominator. The
precision-recall curve ranks queries by the confidence of their top-1 match (accepted matches):
precision = correct accepted / accepted, recall = correct accepted / queries with a positive.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

DEFAULT_RECALL_VALUES = (1, 5, 10, 20, 100)


def recall_at(predictions: np.ndarray, positives: Sequence[np.ndarray],
              recall_values: Sequence[int] = DEFAULT_RECALL_VALUES) -> dict[int, float]:
    """Fraction of queries with a positive among their first N predictions, for every N.

    ``predictions``: [Q, K] database indices, best first (K may be smaller than max N, e.g. a
    small database: then only the K available predictions are looked at).
    ``positives``: Q arrays of database indices that count as correct for each query.
    """
    predictions = np.asarray(predictions)
    values = sorted(int(n) for n in recall_values)
    if predictions.ndim != 2 or len(predictions) != len(positives):
        raise ValueError(f'predictions must be [Q, K] with Q = {len(positives)} queries, '
                         f'got shape {predictions.shape}')
    correct = np.zeros(len(values), dtype=np.int64)
    for row, query_positives in zip(predictions, positives):
        hits = np.isin(row[:values[-1]], query_positives)
        for i, n in enumerate(values):
            if hits[:n].any():
                correct[i:] += 1
                break
    total = max(len(positives), 1)
    return {n: float(c) / total for n, c in zip(values, correct)}


def top1_correct(predictions: np.ndarray, positives: Sequence[np.ndarray]) -> np.ndarray:
    """[Q] bool: whether each query's first prediction is a positive."""
    return np.array([len(row) > 0 and row[0] in set(np.asarray(p).tolist())
                     for row, p in zip(np.asarray(predictions), positives)], dtype=bool)


@dataclass(frozen=True)
class PrecisionRecall:
    """Precision-recall curve of accepted top-1 matches, thresholded on their confidence.

    ``precision``, ``recall``, ``thresholds``: [T] arrays, one point per distinct confidence,
    from the strictest threshold (fewest accepted) to accepting everything.
    """

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray
    auc: float
    recall_at_full_precision: float

    def as_dict(self) -> dict:
        """JSON-ready dict (lists of floats)."""
        return {'auc': self.auc, 'recall_at_100_precision': self.recall_at_full_precision,
                'precision': self.precision.tolist(), 'recall': self.recall.tolist(),
                'thresholds': self.thresholds.tolist()}


def precision_recall(confidence: np.ndarray, correct: np.ndarray,
                     has_positive: np.ndarray | None = None) -> PrecisionRecall:
    """PR curve from the top-1 match of every query.

    ``confidence``: [Q] higher = more confident (accepted when >= a threshold).
    ``correct``: [Q] bool, the top-1 match is a positive.
    ``has_positive``: [Q] bool, the query has any positive in the database (the recall
    denominator); all True when omitted.
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=bool)
    has_positive = np.ones_like(correct) if has_positive is None else np.asarray(has_positive)
    if confidence.shape != correct.shape or confidence.ndim != 1:
        raise ValueError(f'confidence {confidence.shape} and correct {correct.shape} must be '
                         'equal-length vectors')
    order = np.argsort(-confidence, kind='stable')
    sorted_conf = confidence[order]
    true_pos = np.cumsum(correct[order])
    accepted = np.arange(1, len(order) + 1)
    # One point per distinct threshold: the last index of each run of equal confidences.
    last = np.flatnonzero(np.r_[sorted_conf[1:] != sorted_conf[:-1], True])
    precision = true_pos[last] / accepted[last]
    recall = true_pos[last] / max(int(has_positive.sum()), 1)
    full = precision >= 1.0
    return PrecisionRecall(precision=precision, recall=recall, thresholds=sorted_conf[last],
                           auc=_area(precision, recall),
                           recall_at_full_precision=float(recall[full].max()) if full.any()
                           else 0.0)


def _area(precision: np.ndarray, recall: np.ndarray) -> float:
    """Trapezoid area under precision(recall), the curve starting at (0, first precision)."""
    if len(recall) == 0:
        return 0.0
    r = np.r_[0.0, recall]
    p = np.r_[precision[0], precision]
    return float(np.sum((r[1:] - r[:-1]) * (p[1:] + p[:-1]) / 2.0))


def percentiles_ms(durations_s: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / mean of durations in seconds, reported in milliseconds."""
    values = np.asarray(durations_s, dtype=np.float64) * 1e3
    if values.size == 0:
        return {'p50_ms': float('nan'), 'p95_ms': float('nan'), 'mean_ms': float('nan')}
    return {'p50_ms': float(np.percentile(values, 50)),
            'p95_ms': float(np.percentile(values, 95)),
            'mean_ms': float(values.mean())}
