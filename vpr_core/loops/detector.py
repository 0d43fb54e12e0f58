"""Loop closure in the live session: keyframes, search of the past, consistency, verification.

One :class:`LoopDetector` serves one camera stream (the node's SLAM mode and ``vpr loops``
run the same object frame by frame). Per frame:

1. keyframe or not: with odometry by travelled distance, heading and time
   (:class:`~vpr_core.mapdb.keyframe.KeyframeSelector`, as teach mode); without odometry
   every frame, at most one per ``keyframes.min_interval_s``. Other frames cost nothing.
2. one forward pass (global descriptor) and the keyframe's local features;
3. search of the keyframes it may match (:class:`~vpr_core.loops.store.KeyframeStore`:
   previous sessions, and this session's keyframes outside the time and travel gaps), top
   ``top_k`` above ``min_score``;
4. temporal consistency (:class:`~vpr_core.loops.consistency.ConsistencyFilter`);
5. geometric verification (:func:`vpr_core.geometry.verify`) of the consistent candidates,
   best first, at most ``max_verifications``; the first verified one with enough evidence
   (``evidence_inliers``, alone or with the previous keyframe's verified neighbouring
   candidate) is the loop.

When verification steps aside (reason ``too_small``: images below ``verify.min_image_side``
such as 64x32 thumbnails; ``no_features``: a candidate keyframe without usable local
features: a previous map saved without them, with a damaged or stale feature file, or with
features of another kind than ``verify.features``; ``off``: features 'none'),
nothing geometric can confirm or reject the match, so the descriptor evidence must carry it
alone: the candidate needs the stricter run ``unverified_consistency`` and the loop is
accepted flagged unverified (``LoopClosure.verified`` False, no relative pose), as the best
candidate of ``unverified_consistency`` consecutive keyframes whose best candidates score at
least ``unverified_min_score`` and are neighbours. ``min_score`` is only a floor for what is
verified: where geometry can judge, geometry decides.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from vpr_core.errors import IncompatibleMapError, MapError
from vpr_core.geometry.camera import CameraModel
from vpr_core.geometry.features import extract_features, LocalFeatures
from vpr_core.geometry.verification import Verification, verify
from vpr_core.loops.config import LoopConfig
from vpr_core.loops.consistency import ConsistencyFilter
from vpr_core.loops.features import load_features
from vpr_core.loops.result import LoopClosure, LoopResult, REASONS  # noqa: F401 (re-exported)
from vpr_core.loops.session import (combine_sessions, SessionSnapshot, synthetic_poses,
                                    write_session)
from vpr_core.loops.store import KeyframeStore
from vpr_core.mapdb.builder import BuildConfig
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.keyframe import KeyframeConfig, KeyframeSelector
from vpr_core.mapdb.pose import Pose
from vpr_core.mapdb.recorder import MapRecorder

logger = logging.getLogger(__name__)

# verification reasons that neither confirm nor reject: 'no_features' is the detector's own
# (a candidate keyframe without usable stored local features)
STEPPED_ASIDE = ('too_small', 'off', 'no_features')


class LoopDetector:
    """Keyframe database of this session (and ``previous`` ones) with loop detection.

    ``extractor``: global descriptors (an :class:`~vpr_core.extractor.Extractor`);
    ``previous``: a map saved by :meth:`save` (or any map of this model, then matched
    unverified); ``camera``: intrinsics when none come with the frames (None: guessed from
    the image size); ``frame_id``: the frame of the odometry poses stored in the map.
    """

    def __init__(self, extractor, config: LoopConfig = LoopConfig(), *,
                 previous: MapDatabase | None = None, camera: CameraModel | None = None,
                 frame_id: str = 'map') -> None:
        self.extractor = extractor
        self.config = config
        self.camera = camera
        self.frame_id = previous.manifest.frame_id if previous is not None else frame_id
        self.previous = previous
        self.store = KeyframeStore(extractor.descriptor_dim, extractor.code_bits)
        self._features: list[LocalFeatures | None] = []
        self._stamps: list[int] = []
        if previous is not None:
            self._load_previous(previous, frame_id)
        self._recorder = MapRecorder(extractor, BuildConfig(keyframes=KeyframeConfig(
            enabled=False)), self.frame_id, keep_descriptors=False)   # the store has them
        self._selector = KeyframeSelector(config.keyframes)
        self._consistency = ConsistencyFilter(config.consistency_window)
        self._top_consistency = ConsistencyFilter(config.consistency_window)
        self._last_verified: tuple[int, int] | None = None   # previous keyframe: row, inliers
        self._elapsed_s = 0.0
        self._last_stamp: int | None = None
        self._last_keyframe_s: float | None = None
        self._travel_m: float | None = None
        self._position: np.ndarray | None = None
        self._unposed = 0        # this session's keyframes without a valid odometry pose
        self.counts: dict[str, int] = {}

    def _load_previous(self, previous: MapDatabase, frame_id: str) -> None:
        extractor = self.extractor
        previous.check_compatible(extractor.fingerprint, extractor.descriptor_dim,
                                  extractor.code_bits)
        if previous.floats is None and extractor.descriptor_dim or \
                previous.codes is None and extractor.code_bits:
            raise IncompatibleMapError('the previous map stores only floats or only codes; '
                                       'loop closure needs both (build it with --store both)')
        if frame_id != self.frame_id:
            logger.info("poses go into the previous map's frame '%s' (not '%s')",
                        self.frame_id, frame_id)
        self.store.add(previous.descriptors)
        self._stamps.extend(int(s) for s in previous.stamps_ns)
        features = load_features(previous.path, previous.manifest.map_id, previous.size)
        self._features = self._usable(features, str(previous.path))

    def _usable(self, features: list[LocalFeatures | None], source: str
                ) -> list[LocalFeatures | None]:
        """``features`` without those of another kind than ``verify.features`` (they cannot
        be matched: their keyframes go the unverified path, reason ``no_features``)."""
        wanted = self.config.verify.features
        if wanted == 'none':
            return features
        other = sorted({f.kind for f in features if f is not None and f.kind != wanted})
        if not other:
            return features
        dropped = sum(f is not None and f.kind != wanted for f in features)
        logger.warning('map %s: %d keyframes store %s local features but verify.features is '
                       "'%s'; they are dropped and those keyframes are matched without "
                       'geometric verification (reason no_features)', source, dropped,
                       '/'.join(other), wanted)
        return [f if f is None or f.kind == wanted else None for f in features]

    @property
    def size(self) -> int:
        """Keyframes in the database (previous sessions included)."""
        return self.store.size

    def update_config(self, config: LoopConfig) -> None:
        """Use ``config`` from the next frame on (the database is kept)."""
        if config.keyframes != self.config.keyframes:
            self._selector = KeyframeSelector(config.keyframes)
        if config.consistency_window != self.config.consistency_window:
            self._consistency = ConsistencyFilter(config.consistency_window)
            self._top_consistency = ConsistencyFilter(config.consistency_window)
        self.config = config

    def reset(self) -> None:
        """Forget the temporal consistency state only."""
        self._consistency.reset()
        self._top_consistency.reset()
        self._last_verified = None

    def process(self, image: np.ndarray, stamp: float | int, odometry: Pose | None = None, *,
                depth: np.ndarray | None = None, camera: CameraModel | None = None
                ) -> LoopResult:
        """One frame: RGB uint8 image, stamp (int ns or float s), the base pose in the
        odometry frame (optional), a depth image aligned with it and its intrinsics."""
        stamp_ns = int(stamp) if isinstance(stamp, (int, np.integer)) else \
            int(round(float(stamp) * 1e9))
        events = self._advance(stamp_ns, odometry)
        if 'invalid_odometry' in events:
            odometry = None
        if not self._is_keyframe(stamp_ns, odometry):
            return self._note(LoopResult(stamp_ns, False, None, None, 'not_keyframe',
                                         tuple(events)))
        descriptors = self.extractor.extract([image])
        features = extract_features(image, self.config.verify)
        config = self.config
        stop = self.store.eligible(self._elapsed_s, self._travel_m, config.min_time_gap_s,
                                   config.min_travel_gap_m)
        rows, scores = self.store.search(descriptors, stop, config.top_k, config.rerank_k)
        kept = scores >= config.min_score
        rows, scores = rows[kept], scores[kept]
        runs = self._consistency.update(rows)
        top_runs = self._top_consistency.update(
            rows[:1] if len(rows) and scores[0] >= config.unverified_min_score else [])
        index = self._add(descriptors, features, stamp_ns, odometry)
        reason, loop = 'too_recent' if stop == 0 else 'low_score', None
        self._last_verified = None if not len(rows) else self._last_verified
        if len(rows):
            reason, loop = self._decide(index, stamp_ns, rows, scores, (runs, top_runs),
                                        features, depth, camera)
        return self._note(LoopResult(stamp_ns, True, index, loop, reason, tuple(events)))

    def _advance(self, stamp_ns: int, odometry: Pose | None) -> list[str]:
        """Session clock, path length and stream events of a new frame."""
        events = []
        if self._last_stamp is not None:
            step_s = (stamp_ns - self._last_stamp) / 1e9
            if step_s < 0:
                events.append('clock_jump_back')
                self.reset()
            self._elapsed_s += max(step_s, 0.0)
        self._last_stamp = stamp_ns
        if odometry is None:
            return events
        position = np.asarray(odometry.position, dtype=np.float64)
        if not (np.all(np.isfinite(position)) and np.all(np.isfinite(odometry.orientation))):
            events.append('invalid_odometry')
            return events
        if self._position is not None:
            self._travel_m += float(np.linalg.norm(position - self._position))
        else:
            self._travel_m = 0.0
        self._position = position
        return events

    def _is_keyframe(self, stamp_ns: int, odometry: Pose | None) -> bool:
        if odometry is not None:
            return self._selector.offer(np.asarray(odometry.position),
                                        np.asarray(odometry.orientation), stamp_ns)
        interval = self.config.keyframes.min_interval_s
        due = self._last_keyframe_s is None or not self.config.keyframes.enabled or \
            self._elapsed_s - self._last_keyframe_s >= interval
        if due:
            self._last_keyframe_s = self._elapsed_s
        return due

    def _add(self, descriptors, features: LocalFeatures | None, stamp_ns: int,
             odometry: Pose | None) -> int:
        """Store a keyframe (after its own search); returns its row."""
        index = self.store.size
        travel = self._travel_m if odometry is not None else None
        self.store.add(descriptors, self._elapsed_s, travel)
        self._features.append(features)
        self._stamps.append(stamp_ns)
        self._unposed += odometry is None
        session_row = index - self.store.previous
        pose = odometry if odometry is not None else Pose((float(session_row), 0.0, 0.0))
        self._recorder.add(None, stamp_ns, pose)
        return index

    def _decide(self, index: int, stamp_ns: int, rows: np.ndarray, scores: np.ndarray,
                runs: tuple[dict[int, int], dict[int, int]], features: LocalFeatures | None,
                depth: np.ndarray | None, camera: CameraModel | None
                ) -> tuple[str, LoopClosure | None]:
        """Verify the consistent candidates, best first; a candidate that verification
        cannot judge is accepted unverified only as the best match of a run of
        ``unverified_consistency`` keyframes whose best matches (above
        ``unverified_min_score``) agree."""
        config = self.config
        runs_any, runs_top = runs
        consistent = [(int(r), float(s)) for r, s in zip(rows, scores)
                      if runs_any[int(r)] >= config.consistency]
        reason, previous, self._last_verified = 'inconsistent', self._last_verified, None
        for rank, (row, score) in enumerate(consistent[:config.max_verifications]):
            outcome = self._verify(features, self._features[row], camera, depth)
            stepped_aside = not outcome.accepted and outcome.reason in STEPPED_ASIDE
            unverified = stepped_aside and row == int(rows[0]) and \
                runs_top.get(row, 0) >= config.unverified_consistency
            if outcome.accepted:
                self._last_verified = self._last_verified or (row, outcome.inliers)
            if outcome.accepted and self._enough_evidence(row, outcome.inliers, previous) \
                    or unverified:
                self._last_verified = (row, outcome.inliers) if outcome.accepted else None
                return 'loop', self._closure(index, stamp_ns, row, score, outcome,
                                             [int(r) for r in rows])
            if rank == 0 and (not stepped_aside or outcome.reason == 'no_features'):
                reason = 'weak_evidence' if outcome.accepted else outcome.reason
        return reason, None

    def _verify(self, features: LocalFeatures | None, candidate: LocalFeatures | None,
                camera: CameraModel | None, depth: np.ndarray | None) -> Verification:
        """Geometric verification of one candidate; reason ``no_features`` (stepping aside)
        when the query has features but the candidate has none of the same kind."""
        if features is not None and (candidate is None or candidate.kind != features.kind):
            return Verification(False, 'no_features')
        return verify(features, candidate, self.config.verify, camera=camera or self.camera,
                      query_depth=depth)

    def _enough_evidence(self, row: int, inliers: int, previous: tuple[int, int] | None
                         ) -> bool:
        """``evidence_inliers`` from this view alone, or with the previous keyframe's
        verified candidate when it is a neighbour of ``row``."""
        needed = self.config.evidence_inliers
        if inliers >= needed:
            return True
        return previous is not None and \
            abs(previous[0] - row) <= self.config.consistency_window and \
            inliers + previous[1] >= needed

    def _closure(self, index: int, stamp_ns: int, row: int, score: float, outcome,
                 candidates: list[int]) -> LoopClosure:
        previous = self.previous
        in_previous = previous is not None and row < self.store.previous
        place_id = int(previous.place_ids[row]) if in_previous else \
            self._session_place_offset() + row - self.store.previous
        return LoopClosure(index, row, stamp_ns, self._stamps[row],
                           previous.manifest.map_id if in_previous else '', place_id, score,
                           outcome, candidates)

    def _session_place_offset(self) -> int:
        previous = self.previous
        return int(previous.place_ids.max()) + 1 if previous is not None and previous.size \
            else 0

    def _note(self, result: LoopResult) -> LoopResult:
        self.counts[result.reason] = self.counts.get(result.reason, 0) + 1
        return result

    def session_map(self) -> MapDatabase:
        """Previous sessions and this one as one map (this session's place ids follow the
        previous ones).

        This session is posed only when every keyframe had a valid odometry pose; otherwise
        its poses are synthetic (1 m per keyframe along x, flagged ``synthetic_poses``). When
        the previous map's poses are of the other kind (or of another frame), the combined
        map gets synthetic poses for every row, with a warning: the loop-closure database
        needs descriptors, stamps and features, not metric poses, and a session must never
        be lost at save time for this reason.
        """
        session = self._recorder.to_map(self.store.rows(slice(self.store.previous, None)))
        posed = session.size > 0 and self._unposed == 0
        changes = {} if posed else {'synthetic_poses': True, 'orientation_source': 'none'}
        manifest = session.manifest.with_changes(source=dict(session.manifest.source,
                                                             kind='loops'), **changes)
        ids = self._session_place_offset() + np.arange(session.size, dtype=np.int64)
        session = MapDatabase(manifest, session.descriptors, session.positions,
                              session.orientations, session.stamps_ns, ids,
                              names=session.names)
        if not posed:
            session = synthetic_poses(session)
        return combine_sessions(self.previous, session)

    def snapshot(self) -> SessionSnapshot:
        """What :meth:`save` writes, copied now (cheap next to the write): the session map
        and every keyframe's local features. Take it under the caller's lock, write it
        outside with :func:`write_session`."""
        if self.size == 0:
            raise MapError('no keyframes yet: nothing to save')
        features = self._usable(list(self._features), 'of this session')
        return SessionSnapshot(self.session_map(), tuple(features),
                               self.size - self.store.previous)

    def save(self, path: str | Path) -> str:
        """Write the session map and every keyframe's local features to ``path`` in one
        atomic directory write under the map's write lock; returns the map id. Reloadable
        as ``previous``."""
        return write_session(self.snapshot(), path)


def with_verification(config: LoopConfig, enabled: bool) -> LoopConfig:
    """``config`` with geometric verification switched off (features 'none') or kept."""
    if enabled:
        return config
    return dataclasses.replace(config, verify=dataclasses.replace(config.verify,
                                                                  features='none'))
