"""Online sequence matching: the causal, candidate-restricted form of ``sequence.py``.

For a stream, comparing every frame of the window with every place of a city-scale map would
cost what the binary index saves. Instead only trajectories that end at a candidate place are
scored: the single-frame hits of the newest frame plus the previous best place moved along by
each velocity. Along such a trajectory the similarities (and, for contrast enhancement, those
of the places around each point) are gathered from the stored descriptors, so the cost is
independent of the map size. With every place as a candidate the scores equal
:func:`~vpr_core.localization.sequence.sequence_score_matrix` (tested).

A window frame is placed on a trajectory by how far the robot went since it, not by how many
frames came after it, so a stream that loses frames stays on its route: by the odometry travel
(metres, converted to map rows along the map's own path) and by the elapsed time in nominal
frame periods (:class:`~vpr_core.localization.period.FramePeriod` over the recent stamp
spacings: the camera's rate even when most frames are lost), each times every velocity (map
metres per odometry metre, places per period); with both, both sets of trajectories compete, so
a glitch of one does not decide alone. A regular stream without odometry gives frame counts, as
offline. A spacing of more than ``gap_factor`` periods that odometry does not measure is an
unexplained gap: the frames before it stay in the window, placed by time (the velocities spread
them the wider the longer the gap), and ``frames_since_gap`` tells the gate how many frames
after it support a match; past ``gap_reset_factor`` periods the window restarts.

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
from vpr_core.localization.period import FramePeriod

SPACING_HISTORY = 64          # recent stamp spacings behind the nominal period
_SIMILARITY_BLOCK = 16384      # float16 map rows converted to float32 at a time


@dataclass(frozen=True)
class Hypothesis:
    """Best trajectory ending at map row ``index``: its ``score`` (higher is better), the
    ``velocity`` (places per nominal step), how many window ``frames`` it spans, and the
    newest frame's own (corrected, enhanced) similarity to the place, ``current``, the
    places the trajectory moved since the previous frame, ``advance`` (0 when the newest
    frame replaced the newest window step), and the mean over the frames after the latest
    unexplained gap alone, ``recent`` (the score when the window holds no such gap)."""

    index: int
    score: float
    velocity: float
    frames: int
    current: float
    advance: float = 1.0
    recent: float = float('nan')


class SequenceTracker:
    """The window of recent query descriptors and the trajectory scoring over a map.

    ``floats``: [N, D] map floats (float32/float16) or None; ``codes``: [N, bits / 8] or None;
    ``positions``: [N, 3] map positions (odometry travel is converted to rows along them;
    None: ``spacing_m`` per row); ``along``: their :func:`along_track`, when the caller has
    it already (a new tracker per configuration change then costs nothing per place).
    """

    def __init__(self, floats: np.ndarray | None, codes: np.ndarray | None, code_bits: int,
                 config: SequenceConfig, positions: np.ndarray | None = None,
                 spacing_m: float = 1.0, *, along: np.ndarray | None = None) -> None:
        if config.length < 1 or not config.velocities or min(config.velocities) < 0:
            raise ConfigError(f'sequence length must be >= 1 and velocities >= 0, got {config}')
        if not 1 < config.gap_factor <= config.gap_reset_factor or config.frame_period_s < 0:
            raise ConfigError('sequence needs 1 < gap_factor <= gap_reset_factor and '
                              f'frame_period_s >= 0, got {config}')
        self.floats = floats
        self.codes = codes
        self.code_bits = code_bits
        self.size = len(floats) if floats is not None else len(codes)
        self.config = config
        self.spacing_m = spacing_m if spacing_m > 0 else 1.0
        self.along = along_track(positions) if along is None else along
        # row r at r + 1, after a virtual place one spacing before the first: made once,
        # since a copy of the map's path per frame would grow with the map
        self._along_padded = None if self.along is None else \
            np.concatenate([[self.along[0] - self.spacing_m], self.along])
        self.window: deque[_FrameCache] = deque(maxlen=config.length)
        self.hubness = PlaceHubness(self.size, config.hubness_k) if config.hubness_k > 0 \
            else None
        self.spacings = FramePeriod(history=SPACING_HISTORY)      # [s]
        self.step_places = 1.0      # places (at velocity 1) since the previous frame
        self.new_step = True        # the newest frame started a window step
        self.restarted = False      # the newest frame restarted the window after a gap
        self._last: _FrameCache | None = None

    def reset(self) -> None:
        """Forget the window (the hubness statistics describe the query stream, not where the
        robot is, and are kept; so is the stamp spacing, a property of the camera)."""
        self.window.clear()
        self._last = None
        self.step_places = 1.0

    @property
    def period_s(self) -> float | None:
        """Nominal frame period [s]: configured, else estimated from recent stamps."""
        if self.config.frame_period_s > 0:
            return self.config.frame_period_s
        return self.spacings.estimate()

    def push(self, query: Descriptors, new_step: bool = True, stamp_ns: int | None = None,
             travel_m: float | None = None) -> str:
        """Add the newest frame (one row) as a new window step, or replace the newest step.

        ``stamp_ns``: its stamp (None: frames count as steps); ``travel_m``: odometry path
        length so far (None: no valid odometry). Returns 'gap' (an unexplained gap;
        ``restarted`` says whether the window restarted), 'gap_bridged' (a gap measured by
        odometry) or ''.
        """
        row = query.floats[0] if self.floats is not None else query.codes[0]
        frame = _FrameCache(np.asarray(row, dtype=np.float32 if self.floats is not None
                                       else np.uint8),
                            None if stamp_ns is None else int(stamp_ns) / 1e9, travel_m)
        event = self._advance(frame, new_step)
        # a frame that replaces the newest step keeps its mark of the first after a gap
        frame.after_gap = event == 'gap' or (not new_step and bool(self.window) and
                                             self.window[-1].after_gap)
        if self.restarted:
            self.window.clear()
        if self.hubness is not None and self.size:
            # similarity s -> distance 1 - s; the corrected similarity is s - penalty
            self.hubness.update(1.0 - self._similarity_to_all(frame.row))
            frame.bonus = -self.hubness.penalty()
        self.new_step = new_step or not self.window
        if self.new_step:
            self.window.append(frame)
        else:
            self.window[-1] = frame
        self._last = frame
        return event

    def _advance(self, frame: '_FrameCache', new_step: bool) -> str:
        """Measure the step from the previous frame (``step_places``) and classify gaps."""
        last, self.step_places, self.restarted = self._last, float(new_step), False
        if last is None or frame.stamp is None or last.stamp is None:
            return ''
        spacing = frame.stamp - last.stamp
        period = self.period_s
        self.spacings.add(spacing)
        bridged = frame.travel is not None and last.travel is not None
        if bridged:
            self.step_places = (frame.travel - last.travel) / self.spacing_m
        elif period:
            self.step_places = spacing / period
        if period is None or spacing <= self.config.gap_factor * period:
            return ''
        if bridged:
            return 'gap_bridged'
        self.restarted = spacing > self.config.gap_reset_factor * period
        return 'gap'

    @property
    def frames_since_gap(self) -> int:
        """Window frames from the first one after the latest unexplained gap to the newest
        (all of them without such a gap)."""
        for age, frame in enumerate(reversed(self.window)):
            if frame.after_gap:
                return age + 1
        return len(self.window)

    def score(self, candidates: np.ndarray) -> list[Hypothesis]:
        """Hypotheses for the candidate rows, best first (empty without a window or a map)."""
        candidates = np.unique(np.asarray(candidates, dtype=np.int64))
        candidates = candidates[(candidates >= 0) & (candidates < self.size)]
        if not len(candidates) or not self.window:
            return []
        places, velocities = self.trajectory_rows(candidates)              # [C, V, T]
        frames = len(self.window)
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
        pick = (np.arange(len(candidates)), best_velocity)
        scores = mean[pick]
        since = self.frames_since_gap
        recent = np.where(valid, values, 0.0)[:, :, :since].sum(axis=2) / np.maximum(
            valid[:, :, :since].sum(axis=2), 1)
        if frames > 1 and self.new_step:
            moved = (places[:, :, 0] - places[:, :, 1])[pick]
        else:
            moved = velocities[best_velocity] * self.step_places * float(self.new_step)
        order = [i for i in np.lexsort((candidates, -scores)) if np.isfinite(scores[i])]
        return [Hypothesis(int(candidates[i]), float(scores[i]),
                           float(velocities[best_velocity[i]]),
                           int(valid[i, best_velocity[i]].sum()),
                           float(values[i, best_velocity[i], 0]), float(moved[i]),
                           float(recent[pick][i])) for i in order]

    def trajectory_rows(self, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[C, K, T] map row of window frame ``-1 - t`` on each trajectory ending at each
        candidate (-1: before the start of the map) and the [K] velocities of the K
        trajectories: every velocity over the odometry travel when every window frame has
        one, and over the elapsed periods when every frame has a stamp (both when both: a
        glitch of either does not decide alone), else over the frame count."""
        velocities = np.asarray(self.config.velocities, dtype=np.float64)
        window = list(reversed(self.window))            # t = 0 is the newest frame
        newest, parts = window[0], []
        if all(f.travel is not None for f in window):
            metres = np.array([newest.travel - f.travel for f in window])
            parts.append(self._rows_along(candidates, velocities[:, None] * metres[None, :])
                         if self.along is not None else
                         self._rows_by_step(candidates, velocities, metres / self.spacing_m))
        if all(f.stamp is not None for f in window) and self.period_s:
            # rounded so that a regular stream gives exact frame counts, as offline
            steps = np.round((newest.stamp - np.array([f.stamp for f in window])) /
                             self.period_s, 6)
            parts.append(self._rows_by_step(candidates, velocities, steps))
        if not parts:
            parts.append(self._rows_by_step(candidates, velocities,
                                            np.arange(len(window), dtype=np.float64)))
        return np.concatenate(parts, axis=1), np.tile(velocities, len(parts))

    @staticmethod
    def _rows_by_step(candidates: np.ndarray, velocities: np.ndarray,
                      steps: np.ndarray) -> np.ndarray:
        offsets = np.rint(velocities[:, None] * steps[None, :]).astype(np.int64)
        places = candidates[:, None, None] - offsets[None, :, :]
        return np.where(places >= 0, places, -1)

    def _rows_along(self, candidates: np.ndarray, metres: np.ndarray) -> np.ndarray:
        """Rows nearest to ``metres`` [V, T] before each candidate along the map's path (-1:
        nearer to a virtual place one spacing before the first)."""
        along = self._along_padded                                              # row r at r + 1
        target = along[candidates + 1][:, None, None] - metres[None, :, :]
        right = np.clip(np.searchsorted(along, target), 1, len(along) - 1)
        left = right - 1
        to_left, to_right = np.abs(along[left] - target), np.abs(along[right] - target)
        # halfway: the even offset, as np.rint does for the frame-count trajectories
        tie = np.abs(to_left - to_right) <= 1e-9 * self.spacing_m
        even = (candidates[:, None, None] + 1 - left) % 2 == 0
        rows = np.where(np.where(tie, even, to_left < to_right), left, right) - 1
        return np.minimum(rows, candidates[:, None, None])

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

    def _similarity_to_all(self, query: np.ndarray) -> np.ndarray:
        """[N] similarity to every place; float16 rows converted a block at a time, not as a
        float32 copy of the whole map per frame (1 GB at 1 M places of 256 dims)."""
        if self.floats is None or self.floats.dtype == np.float32:
            return self._similarity(query, slice(None))
        out = np.empty(self.size, dtype=np.float32)
        for start in range(0, self.size, _SIMILARITY_BLOCK):
            block = slice(start, min(start + _SIMILARITY_BLOCK, self.size))
            out[block] = self._similarity(query, block)
        return out

    def _similarity(self, query: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
        if self.floats is not None:
            # einsum, not BLAS: a threaded BLAS matvec this small only spins on a busy CPU
            return np.einsum('nd,d->n', self.floats[rows].astype(np.float32, copy=False),
                             query)
        xor = np.bitwise_xor(self.codes[rows], query[None, :])
        hamming = np.bitwise_count(xor).sum(axis=1)
        return 1.0 - 2.0 * hamming / self.code_bits


def along_track(positions: np.ndarray | None) -> np.ndarray | None:
    """[N] path length of the map up to each row (None when the map does not move)."""
    if positions is None or len(positions) < 2:
        return None
    steps = np.linalg.norm(np.diff(np.asarray(positions, dtype=np.float64), axis=0), axis=1)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    return along if np.isfinite(along[-1]) and along[-1] > 0 else None


class _FrameCache:
    """One window frame (its stamp [s] and odometry travel [m], None when unknown) and the
    similarities already computed for it: consecutive frames score nearly the same
    trajectories, so most lookups are hits."""

    def __init__(self, row: np.ndarray, stamp: float | None = None,
                 travel: float | None = None) -> None:
        self.row = row
        self.stamp = stamp
        self.travel = travel
        self.after_gap = False                    # first frame after an unexplained gap
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
