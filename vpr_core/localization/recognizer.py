"""Stream localization: retrieval, sequence consistency, gating and the pose prior per frame.

One :class:`PlaceRecognizer` serves one camera stream (the ROS node, ``vpr bag-eval`` and the
evaluators all use it): each frame is searched in the map, extended to trajectories over the
recent frames (:mod:`~vpr_core.localization.tracker`), checked (score, margin over other
places, agreement with the previous matches and with odometry) and turned into a pose prior.

What happened to the stream is reported on every result as ``events`` (fixed names,
``EVENTS``) and logged as a throttled warning: 'clock_jump_back' (a stamp older than the
previous one, e.g. a bag looping or a simulator reset: every temporal state is reset),
'gap' (a stamp gap that odometry does not measure: the frames after it must carry a match
on their own, and a very long one restarts the window), 'gap_bridged' (a gap measured by
odometry: the window is kept) and 'invalid_odometry' (a non-finite odometry pose, ignored
for that frame).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from vpr_core.descriptors import Descriptors
from vpr_core.errors import ConfigError
from vpr_core.localization.calibration import ScoreCalibration
from vpr_core.localization.config import LocalizationConfig
from vpr_core.localization.gate import GateState, judge, same_place
from vpr_core.localization.pose_prior import estimate_prior, PosePrior
from vpr_core.localization.tracker import along_track, Hypothesis, SequenceTracker
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.match import PlaceMatch
from vpr_core.mapdb.pose import Pose

logger = logging.getLogger(__name__)

EVENTS = ('clock_jump_back', 'gap', 'gap_bridged', 'invalid_odometry')
_EVENT_WARNINGS = {
    'clock_jump_back': 'stamp went backwards (bag loop or simulator reset?): tracker and gate '
                       'reset',
    'gap': 'stamp gap without odometry: matches wait for frames after it',
    'gap_bridged': 'stamp gap bridged by odometry travel',
    'invalid_odometry': 'non-finite odometry pose ignored',
}


@dataclass(frozen=True)
class LocalizationResult:
    """What one frame gave.

    ``candidates``: ranked places (rank 0 best), ``score`` = sequence score; ``match``: the
    best candidate; ``accepted``: it passed every gate; ``rejection_reason``: why not ('' when
    accepted); ``confidence`` in [0, 1]: share of the candidates' softmax mass near the match;
    ``prior``: base pose + covariance for the match (also set when rejected, for evaluation;
    publish it only when accepted); ``frames``: window steps behind the match; ``events``:
    what happened to the stream at this frame (names in ``EVENTS``).
    """

    stamp_ns: int
    candidates: tuple[PlaceMatch, ...]
    accepted: bool
    confidence: float
    rejection_reason: str
    match: PlaceMatch | None
    prior: PosePrior | None
    margin: float
    frames: int
    events: tuple[str, ...] = ()

    @property
    def reason(self) -> str:
        """Alias of ``rejection_reason``."""
        return self.rejection_reason

    @property
    def stamp(self) -> float:
        """Query stamp in seconds."""
        return self.stamp_ns / 1e9

    @property
    def pose(self) -> Pose | None:
        """Prior pose of the base in the map frame (None without a match)."""
        return None if self.prior is None else self.prior.pose

    @property
    def covariance(self) -> tuple[float, ...] | None:
        """Prior covariance, 36 numbers row-major (None without a match)."""
        return None if self.prior is None else self.prior.covariance


class PlaceRecognizer:
    """Localizes a stream of frames against ``map_db``.

    ``extractor`` (any object with ``extract``, ``fingerprint``, ``descriptor_dim``,
    ``code_bits``) is needed only to pass images; it must be the map's model.
    """

    def __init__(self, map_db: MapDatabase, extractor=None,
                 config: LocalizationConfig = LocalizationConfig()) -> None:
        if extractor is not None:
            map_db.check_compatible(extractor.fingerprint, extractor.descriptor_dim,
                                    extractor.code_bits)
        self.map = map_db
        self.extractor = extractor
        self.config = config
        self.calibration = ScoreCalibration.load(config.prior.calibration) \
            if config.prior.calibration else ScoreCalibration()
        self._along = along_track(map_db.positions)     # once: a pass over every place
        self.tracker = self._make_tracker(config)
        self.state = GateState()
        self._step_position: np.ndarray | None = None
        self._odometry_position: np.ndarray | None = None
        self._travel = 0.0
        self._last_stamp: int | None = None
        self.event_counts: dict[str, int] = dict.fromkeys(EVENTS, 0)
        map_db.index(config.search)     # build the search index now, not on the first frame

    def reset(self) -> None:
        """Forget the temporal state (window, previous matches): relocalize from scratch."""
        self.tracker.reset()
        self.state = GateState()
        self._step_position = None
        self._odometry_position = None
        self._last_stamp = None

    def update_config(self, config: LocalizationConfig) -> None:
        """Apply new thresholds; a changed sequence or prior setting restarts the window."""
        if config.sequence != self.config.sequence:
            self.tracker = self._make_tracker(config)
            self.reset()
        if config.prior.calibration != self.config.prior.calibration:
            self.calibration = ScoreCalibration.load(config.prior.calibration) \
                if config.prior.calibration else ScoreCalibration()
        self.config = config

    def process(self, query: np.ndarray | Descriptors, stamp: int | float,
                odometry: Pose | None = None,
                camera_in_base: Pose | None = None) -> LocalizationResult:
        """One frame: an RGB uint8 image or one row of descriptors, its ``stamp`` (int ns or
        float s), the base pose in the odometry frame at that stamp (optional), and this
        camera's pose in the base frame (default: ``config.prior.camera_in_base``)."""
        descriptors = self._describe(query)
        stamp_ns = int(stamp) if isinstance(stamp, (int, np.integer)) else \
            int(round(stamp * 1e9))
        events: list[str] = []
        if self._last_stamp is not None and stamp_ns < self._last_stamp:
            self.reset()
            events.append('clock_jump_back')
        self._last_stamp = stamp_ns
        if odometry is not None and not (np.all(np.isfinite(odometry.position)) and
                                         np.all(np.isfinite(odometry.orientation))):
            odometry = None
            events.append('invalid_odometry')
        if self.map.size == 0:
            return self._note(_rejected(stamp_ns, 'empty map'), events)
        new_step = self._new_step(odometry)
        event = self.tracker.push(descriptors, new_step, stamp_ns, self._odometry_travel(odometry))
        if event:
            events.append(event)
        if self.tracker.restarted:
            self.state = GateState()        # the previous match says nothing after a gap
        hits = self.map.search_hits(descriptors, max(self.config.sequence.candidates,
                                                     self.config.top_k), self.config.search)
        hypotheses = self.tracker.score(np.concatenate([hits.indices[0], self._propagated()]))
        return self._note(self._decide(stamp_ns, hypotheses, descriptors, odometry,
                                       camera_in_base), events)

    def run(self, descriptors: Descriptors, stamps_ns: np.ndarray | None = None
            ) -> list[LocalizationResult]:
        """Process Q descriptor rows in order (stamps default to 1 s apart)."""
        stamps = np.arange(len(descriptors)) * 1_000_000_000 if stamps_ns is None else stamps_ns
        return [self.process(descriptors[i:i + 1], int(stamps[i])) for i in
                range(len(descriptors))]

    def _describe(self, query: np.ndarray | Descriptors) -> Descriptors:
        if isinstance(query, Descriptors):
            if len(query) != 1:
                raise ConfigError(f'process() takes one frame, got {len(query)} descriptors')
            return query
        if self.extractor is None:
            raise ConfigError('process() got an image but the recognizer has no extractor; '
                              'pass descriptors or construct it with the map\'s model')
        return self.extractor.extract([query])

    def _make_tracker(self, config: LocalizationConfig) -> SequenceTracker:
        return SequenceTracker(self.map.floats, self.map.codes, self.map.manifest.code_bits,
                               config.sequence, self.map.positions, self.map.keyframe_spacing_m,
                               along=self._along)

    def _note(self, result: LocalizationResult, events: list[str]) -> LocalizationResult:
        """Attach ``events`` to ``result`` and log each one (first time, then every 10x)."""
        for event in events:
            self.event_counts[event] += 1
            count = self.event_counts[event]
            if count == 10 ** int(np.log10(count) + 1e-9):
                logger.warning('%s (%s, %d so far)', _EVENT_WARNINGS[event], event, count)
        return replace(result, events=tuple(events)) if events else result

    def _odometry_travel(self, odometry: Pose | None) -> float | None:
        """Odometry path length so far [m] (None for a frame without odometry)."""
        if odometry is None:
            return None
        position = np.asarray(odometry.position, dtype=np.float64)
        if self._odometry_position is not None:
            self._travel += float(np.linalg.norm(position - self._odometry_position))
        self._odometry_position = position
        return self._travel

    def _new_step(self, odometry: Pose | None) -> bool:
        if odometry is None:
            return True
        position = np.asarray(odometry.position, dtype=np.float64)
        travel = self.config.sequence.min_travel_m or self.map.keyframe_spacing_m
        if self._step_position is None or \
                np.linalg.norm(position - self._step_position) >= travel:
            self._step_position = position
            return True
        return False

    def _propagated(self) -> np.ndarray:
        if self.state.previous is None:
            return np.zeros(0, dtype=np.int64)
        shift = np.rint(np.asarray(self.config.sequence.velocities) * self.tracker.step_places)
        return (self.state.previous + shift).astype(np.int64)

    def _decide(self, stamp_ns: int, hypotheses: list[Hypothesis], descriptors: Descriptors,
                odometry: Pose | None, camera_in_base: Pose | None) -> LocalizationResult:
        if not hypotheses:
            return _rejected(stamp_ns, 'no candidates')
        config = self.config
        rows = np.array([h.index for h in hypotheses], dtype=np.int64)
        scores = np.array([h.score for h in hypotheses])
        weights = _softmax(scores, config.confidence_temperature)
        verdict = judge(self.map, hypotheses, weights, len(self.tracker.window), odometry,
                        config.gate, self.state, self.tracker.frames_since_gap)
        extrinsic = camera_in_base or Pose.from_sequence(config.prior.camera_in_base)
        # the prior describes the match at its place: rivals elsewhere are the gate's business
        near_weights = np.where(same_place(self.map, rows, config.gate), weights, 0.0)
        prior = estimate_prior(self.map, int(rows[0]), rows, near_weights, float(scores[0]),
                               config.prior, self.calibration, extrinsic,
                               self.tracker.step_places)
        distances = self.tracker.distances(descriptors, rows[:config.top_k])
        candidates = tuple(self.map.record(int(r), rank, float(s), float(d)) for rank, (r, s, d)
                           in enumerate(zip(rows[:config.top_k], scores, distances)))
        return LocalizationResult(stamp_ns, candidates, verdict.accepted, verdict.confidence,
                                  verdict.reason, candidates[0], prior, verdict.margin,
                                  hypotheses[0].frames)


def _softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
    logits = (scores - scores.max()) / max(temperature, 1e-9)
    weights = np.exp(logits)
    return weights / weights.sum()


def _rejected(stamp_ns: int, reason: str) -> LocalizationResult:
    return LocalizationResult(stamp_ns, (), False, 0.0, reason, None, None, float('nan'), 0)
