"""Online sequence matching: the causal, candidate-restricted form of ``sequence.py``.

For a stream, comparing every frame of the window with every place of a city-scale map would
cost what the binary index saves. Instead only trajectories that end at a candidate place are
scored: the single-frame hits of the newest frame plus the previous best place moved along by
each velocity. Along such a trajectory the similarities (and, for contrast enhancement, those
of the places around each point) are gathered from the stored descriptors, so the cost is
independent of the map size. With every place as a candidate the scores equal
:func:`~vpr_core.localization.sequence.sequence_score_matrix` (tested).

With ``hubness_k`` > 0 each new frame is also compared with every place, once, to update the
hubness statistics (:class:`~vpr_core.localization.hubness.PlaceHubness`, on the distance
``1 - similarity``); the frame keeps the correction of that moment, so a window frame scores
as the same row of :func:`~vpr_core.localization.hubness.reduce_hubness` would (tested).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from vpr_core.descriptors import Descriptors
from vpr_core.errors import ConfigError
from vpr_core.localization.config import SequenceConfig
from vpr_core.localization.hubness import PlaceHubness


@dataclass(frozen=True)
class Hypothesis:
    """Best trajectory ending at map row ``index``: its ``score`` (higher is better), the
    ``velocity`` (places per window step), how many window ``frames`` it spans, and the
    newest frame's own (corrected, enhanced) similarity to the place, ``current``."""

    index: int
    score: float
    velocity: float
    frames: int
    current: float


class SequenceTracker:
    """The window of recent query descriptors and the trajectory scoring over a map.

    ``floats``: [N, D] map floats (float32/float16) or None; ``codes``: [N, bits / 8] or None.
    """

    def __init__(self, floats: np.ndarray | None, codes: np.ndarray | None, code_bits: int,
                 config: SequenceConfig) -> None:
        if config.length < 1 or not config.velocities or min(config.velocities) < 0:
            raise ConfigError(f'sequence length must be >= 1 and velocities >= 0, got {config}')
        self.floats = floats
        self.codes = codes
        self.code_bits = code_bits
        self.size = len(floats) if floats is not None else len(codes)
        self.config = config
        self.window: deque[_FrameCache] = deque(maxlen=config.length)
        self.hubness = PlaceHubness(self.size, config.hubness_k) if config.hubness_k > 0 \
            else None

    def reset(self) -> None:
        """Forget the window (the hubness statistics describe the query stream, not where the
        robot is, and are kept)."""
        self.window.clear()

    def push(self, query: Descriptors, new_step: bool = True) -> None:
        """Add the newest frame (one row) as a new window step, or replace the newest step."""
        row = query.floats[0] if self.floats is not None else query.codes[0]
        frame = _FrameCache(np.asarray(row, dtype=np.float32 if self.floats is not None
                                       else np.uint8))
        if self.hubness is not None and self.size:
            # similarity s -> distance 1 - s; the corrected similarity is s - penalty
            self.hubness.update(1.0 - self._similarity(frame.row, slice(None)))
            frame.bonus = -self.hubness.penalty()
        if new_step or not self.window:
            self.window.append(frame)
        else:
            self.window[-1] = frame

    def score(self, candidates: np.ndarray) -> list[Hypothesis]:
        """Hypotheses for the candidate rows, best first (empty without a window or a map)."""
        candidates = np.unique(np.asarray(candidates, dtype=np.int64))
        candidates = candidates[(candidates >= 0) & (candidates < self.size)]
        if not len(candidates) or not self.window:
            return []
        velocities = np.asarray(self.config.velocities, dtype=np.float64)
        frames = len(self.window)
        offsets = np.rint(velocities[:, None] * np.arange(frames)[None, :]).astype(np.int64)
        places = candidates[:, None, None] - offsets[None, :, :]          # [C, V, T]
        valid = places >= 0
        values = np.zeros(places.shape)
        for step in range(frames):
            query = self.window[-1 - step]
            values[:, :, step] = self._enhanced(query, places[:, :, step])
        mean = np.where(valid, values, 0.0).sum(axis=2) / np.maximum(valid.sum(axis=2), 1)
        complete = valid.all(axis=2)        # same rule as the offline matcher
        if complete.any():
            mean = np.where(complete, mean, -np.inf)
        best_velocity = np.argmax(mean, axis=1)
        scores = mean[np.arange(len(candidates)), best_velocity]
        order = [i for i in np.lexsort((candidates, -scores)) if np.isfinite(scores[i])]
        return [Hypothesis(int(candidates[i]), float(scores[i]),
                           float(velocities[best_velocity[i]]),
                           int(valid[i, best_velocity[i]].sum()),
                           float(values[i, best_velocity[i], 0])) for i in order]

    def distances(self, query: Descriptors, rows: np.ndarray) -> np.ndarray:
        """Single-frame distances [R] of one query row to map ``rows``: squared L2 between unit
        floats, or Hamming bits on a codes-only map."""
        if self.floats is not None:
            row = np.asarray(query.floats[0], dtype=np.float32)
            return np.maximum(2.0 - 2.0 * self._similarity(row, rows), 0.0)
        row = np.asarray(query.codes[0], dtype=np.uint8)
        return (1.0 - self._similarity(row, rows)) * self.code_bits / 2.0

    def _enhanced(self, query: '_FrameCache', places: np.ndarray) -> np.ndarray:
        """Similarity of ``query`` to ``places`` [C, V], contrast-enhanced when configured."""
        half = self.config.contrast_window // 2 if self.config.contrast_window > 1 else 0
        around = places[..., None] + np.arange(-half, half + 1)             # [C, V, W]
        inside = (around >= 0) & (around < self.size)
        wanted = np.unique(around[inside])
        sims = query.lookup(wanted, self._similarity)
        if query.bonus is not None:
            sims = sims + query.bonus[wanted]
        lookup = np.searchsorted(wanted, np.clip(around, 0, self.size - 1))
        lookup = np.clip(lookup, 0, max(len(wanted) - 1, 0))
        window = np.where(inside, sims[lookup] if len(wanted) else 0.0, 0.0)
        own = window[..., half]
        if not half:
            return own
        count = np.maximum(inside.sum(axis=-1), 1)
        mean = window.sum(axis=-1) / count
        var = (np.where(inside, window ** 2, 0.0)).sum(axis=-1) / count - mean ** 2
        return (own - mean) / np.sqrt(np.maximum(var, 1e-12))

    def _similarity(self, query: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
        if self.floats is not None:
            # einsum, not BLAS: a threaded BLAS matvec this small only spins on a busy CPU
            return np.einsum('nd,d->n', self.floats[rows].astype(np.float32, copy=False),
                             query)
        xor = np.bitwise_xor(self.codes[rows], query[None, :])
        hamming = np.bitwise_count(xor).sum(axis=1)
        return 1.0 - 2.0 * hamming / self.code_bits


class _FrameCache:
    """One window frame and the similarities already computed for it: consecutive frames
    score nearly the same trajectories, so most lookups are hits."""

    def __init__(self, row: np.ndarray) -> None:
        self.row = row
        self.bonus: np.ndarray | None = None      # hubness correction per place, if any
        self.places = np.zeros(0, dtype=np.int64)
        self.values = np.zeros(0, dtype=np.float64)

    def lookup(self, places: np.ndarray, compute) -> np.ndarray:
        """Similarities of sorted unique ``places``; ``compute(row, missing)`` fills gaps."""
        position = np.searchsorted(self.places, places)
        found = position < len(self.places)
        found[found] = self.places[position[found]] == places[found]
        missing = places[~found]
        if len(missing):
            merged = np.concatenate([self.places, missing])
            order = np.argsort(merged, kind='stable')
            self.places = merged[order]
            self.values = np.concatenate([self.values, compute(self.row, missing)])[order]
        return self.values[np.searchsorted(self.places, places)]
