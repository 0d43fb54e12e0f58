"""Reference baseline that needs no weights: patch-normalised raw pixels (SeqSLAM's front end).

Milford and Wyeth, "SeqSLAM: Visual route-based navigation for sunny summer days and stormy
winter nights", ICRA 2012: grey, down-sampled images whose small patches are normalised to zero
mean and unit variance, compared by the mean absolute difference. Every evaluation report shows
it next to the model, so one sees how far above a trivial method the model is. The pixel
vectors come from :func:`vpr_core.mapdb.pixel.describe_pixels`, the one implementation that the
weight-free map source shares.
"""
from __future__ import annotations

import faiss
import numpy as np

from vpr_core.mapdb.pixel import DEFAULT_PATCH, DEFAULT_SIZE, describe_pixels

__all__ = ['DEFAULT_PATCH', 'DEFAULT_SIZE', 'describe_pixels', 'pixel_distances']


def pixel_distances(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """[Q, N] mean absolute difference between patch-normalised pixel vectors."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    database = np.ascontiguousarray(database, dtype=np.float32)
    total = faiss.pairwise_distances(queries, database, faiss.METRIC_L1)
    return total / max(queries.shape[1], 1)
