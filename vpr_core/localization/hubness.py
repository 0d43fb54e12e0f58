"""Online hubness reduction: map places that are near every query stop winning.

Across a change of season some map places ("hubs") lie close to many queries at once: one
summer frame can resemble a whole stretch of winter frames more than their own places do.
Cross-domain similarity local scaling (CSLS; Conneau et al., "Word translation without
parallel data", ICLR 2018) corrects for that by charging every place its mean similarity to
its k nearest queries. Here the correction is causal, as a robot can have it: the k nearest
queries of a place are taken among the queries seen so far (this one included), and nothing
else about the queries is used.

On unit-length descriptors the CSLS distance without its per-query term (which is the same for
every place of a row, so it never changes a ranking) is ``d(q, p) + 1 - m(p) / 2`` for squared
L2 ``d``, where ``m(p)`` is the mean of the k smallest distances of place ``p`` to the queries
so far. Dropping the constant, :class:`PlaceHubness` subtracts ``m(p) / 2`` from every distance
to ``p``; the same rule applies to any distance where lower is better (Hamming fraction, the
pixel baseline's mean absolute difference).
"""
from __future__ import annotations

import numpy as np

from vpr_core.errors import ConfigError

DEFAULT_HUBNESS_K = 3


class PlaceHubness:
    """The k smallest distances of every place to the queries seen so far.

    ``update`` takes one query's distances to all ``num_places`` places, ``adjust`` returns
    them corrected; until k queries have been seen, the mean runs over those there are.
    """

    def __init__(self, num_places: int, k: int = DEFAULT_HUBNESS_K) -> None:
        if k < 1:
            raise ConfigError(f'hubness k must be >= 1, got {k}')
        self.k = int(k)
        self._nearest = np.full((self.k, int(num_places)), np.inf)
        self.seen = 0

    def update(self, distances: np.ndarray) -> None:
        row = np.asarray(distances, dtype=np.float64)
        if row.shape != self._nearest.shape[1:]:
            raise ConfigError(f'expected distances to {self._nearest.shape[1]} places, got '
                              f'shape {row.shape}')
        stacked = np.vstack([self._nearest, row[None]])
        self._nearest = np.sort(stacked, axis=0)[:self.k]
        self.seen += 1

    def penalty(self) -> np.ndarray:
        """[num_places] amount added to every distance: ``-m(p) / 2`` (0 before any query)."""
        if self.seen == 0:
            return np.zeros(self._nearest.shape[1])
        return -self._nearest[:min(self.seen, self.k)].mean(axis=0) / 2.0

    def adjust(self, distances: np.ndarray) -> np.ndarray:
        """Record one query's distances and return them corrected."""
        self.update(distances)
        return np.asarray(distances, dtype=np.float64) + self.penalty()


def reduce_hubness(matrix: np.ndarray, k: int = DEFAULT_HUBNESS_K) -> np.ndarray:
    """[Q, N] distances of queries in stream order -> corrected [Q, N]: row ``q`` uses rows
    ``0..q`` only, as :class:`PlaceHubness` would online."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ConfigError(f'expected a [Q, N] matrix, got shape {matrix.shape}')
    hubness = PlaceHubness(matrix.shape[1], k)
    corrected = np.empty_like(matrix)
    for q, row in enumerate(matrix):
        corrected[q] = hubness.adjust(row)
    return corrected
