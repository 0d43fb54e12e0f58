"""The nominal frame period of a stream, estimated from its recent stamp spacings.

One estimator for every consumer: the online sequence tracker (which places window frames by
elapsed periods) and the node's input-loss diagnostics (which count the frames missing from a
camera's stream) both read the camera's rate from it.

A lost frame only lengthens a spacing, so the period is read from the short end of the recent
spacings: the median of those shorter than ``cluster_factor`` times the 5th percentile
(strictly, so that spacings of two and three periods are never one cluster). A plain median
drifts to two or more periods once half the frames are lost, which would hide exactly the heavy
loss it has to reveal; a bare low quantile is biased low by the stamp jitter. The median of the
shortest cluster is neither (up to about 95 % loss).
"""
from __future__ import annotations

from collections import deque
from typing import Iterator

import numpy as np

from vpr_core.errors import ConfigError

LOW_PERCENTILE = 5      # the shortest spacings are those near this percentile


class FramePeriod:
    """Recent stamp spacings (any one unit: seconds or nanoseconds) and the period they show.

    ``history``: spacings kept; ``min_history``: spacings needed before :meth:`estimate`
    gives a value; ``cluster_factor``: spacings up to this multiple of the low percentile
    count as one period.
    """

    def __init__(self, history: int = 64, min_history: int = 1,
                 cluster_factor: float = 1.5) -> None:
        if not 1 <= min_history <= history or cluster_factor < 1:
            raise ConfigError('frame period needs 1 <= min_history <= history and '
                              f'cluster_factor >= 1, got {min_history}, {history}, '
                              f'{cluster_factor}')
        self._spacings: deque = deque(maxlen=history)
        self._min_history = min_history
        self._cluster_factor = cluster_factor

    def add(self, spacing: float) -> None:
        """One spacing between consecutive stamps; zero or negative spacings are ignored."""
        if spacing > 0:
            self._spacings.append(spacing)

    def clear(self) -> None:
        """Forget the spacings (a clock jump or a pause: learn the period again)."""
        self._spacings.clear()

    def __len__(self) -> int:
        return len(self._spacings)

    def __iter__(self) -> Iterator[float]:
        return iter(self._spacings)

    def estimate(self) -> float | None:
        """The nominal period (the spacings' unit), None before ``min_history`` spacings."""
        if len(self._spacings) < self._min_history:
            return None
        spacings = np.sort(np.asarray(self._spacings, dtype=np.float64))
        shortest = spacings[len(spacings) * LOW_PERCENTILE // 100]
        return float(np.median(spacings[spacings < self._cluster_factor * shortest]))
