"""Temporal consistency of loop candidates: runs of consecutive keyframes that agree.

A single keyframe's best match is often wrong where places look alike (corridors, forests);
a true loop repeats: the next keyframe matches a neighbour of the previous match (the robot
moves on along the old path, in either direction, or stands still). Each candidate carries
the length of the longest run of consecutive keyframes ending at it whose candidates lie
within ``window`` keyframes of each other; a loop needs a run of ``consistency`` (the
DBoW2 / RTAB-Map idea of temporal consistency, over the top candidates, not the top-1 only).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np


class ConsistencyFilter:
    """Run lengths of the candidates of consecutive keyframes (keyframe row indices)."""

    def __init__(self, window: int) -> None:
        self.window = int(window)
        self._rows = np.zeros(0, dtype=np.int64)
        self._runs = np.zeros(0, dtype=np.int64)

    def reset(self) -> None:
        """Forget every run (after a gap in the stream or a clock jump)."""
        self._rows = np.zeros(0, dtype=np.int64)
        self._runs = np.zeros(0, dtype=np.int64)

    def update(self, candidates: Iterable[int]) -> dict[int, int]:
        """Run length ending at each candidate row of the newest keyframe (1: no support).

        The newest keyframe's candidates replace the previous ones: a keyframe without
        candidates ends every run.
        """
        rows = np.unique(np.fromiter((int(c) for c in candidates), dtype=np.int64))
        runs = np.ones(len(rows), dtype=np.int64)
        if len(rows) and len(self._rows):
            near = np.abs(rows[:, None] - self._rows[None, :]) <= self.window     # [C, P]
            support = np.where(near, self._runs[None, :], 0).max(axis=1)
            runs += support
        self._rows, self._runs = rows, runs
        return {int(r): int(n) for r, n in zip(rows, runs)}
