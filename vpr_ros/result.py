"""vpr_core localization and loop results as plain arrays: the one place that reads their
fields."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ResultArrays:
    """Ranked candidates and the decision for one query.

    ``poses`` [K, 7] (x, y, z, qx, qy, qz, qw), ``scores`` [K], ``place_ids`` [K],
    ``ranks`` [K] (0 = best), ``stamps_s`` [K]; ``prior_pose`` [7] and ``covariance`` [6, 6]
    are set for accepted matches; ``match_stamp_s`` is the stamp of the matched place.
    """

    poses: np.ndarray
    scores: np.ndarray
    place_ids: np.ndarray
    ranks: np.ndarray
    stamps_s: np.ndarray
    accepted: bool
    confidence: float
    reason: str
    prior_pose: np.ndarray | None
    covariance: np.ndarray | None
    match_stamp_s: float | None

    @property
    def best_score(self) -> float:
        """Score of the first candidate (NaN without candidates)."""
        return float(self.scores[0]) if len(self.scores) else float('nan')


def pose_array(pose: Any) -> np.ndarray:
    """A vpr_core ``Pose`` (position, orientation) or 7 numbers -> [7] float64."""
    if hasattr(pose, 'position') and hasattr(pose, 'orientation'):
        return np.concatenate([np.asarray(pose.position, dtype=np.float64).reshape(3),
                               np.asarray(pose.orientation, dtype=np.float64).reshape(4)])
    return np.asarray(pose, dtype=np.float64).reshape(7)


def result_arrays(result: Any, top_k: int) -> ResultArrays:
    """A ``LocalizationResult`` -> :class:`ResultArrays` with at most ``top_k`` candidates."""
    candidates = sorted(result.candidates, key=lambda c: c.rank)[:top_k]
    poses = np.array([pose_array(c.pose) for c in candidates]).reshape(-1, 7)
    accepted = bool(result.accepted)
    match = getattr(result, 'match', None)
    return ResultArrays(
        poses=poses,
        scores=np.array([c.score for c in candidates], dtype=np.float64),
        place_ids=np.array([c.place_id for c in candidates], dtype=np.int64),
        ranks=np.array([c.rank for c in candidates], dtype=np.int64),
        stamps_s=np.array([c.stamp for c in candidates], dtype=np.float64),
        accepted=accepted,
        confidence=float(result.confidence),
        reason=str(result.rejection_reason or ''),
        prior_pose=pose_array(result.pose) if accepted and result.pose is not None else None,
        covariance=np.asarray(result.covariance, dtype=np.float64).reshape(6, 6)
        if accepted and result.covariance is not None else None,
        match_stamp_s=float(match.stamp) if accepted and match is not None else None,
    )


@dataclass(frozen=True)
class LoopArrays:
    """One SLAM-mode frame as plain values: whether it closed a loop, and what is published.

    ``stamp_ns`` is the frame's stamp; for an accepted loop ``match_stamp_ns`` is the matched
    keyframe's (this session's, or a previous session's when ``match_session`` is set);
    ``constraint`` [7] (x, y, z, qx, qy, qz, qw) and ``covariance`` [6, 6] are T_prev_cur in
    ``base_frame`` (None when the loop carries no relative pose: verification stepped aside);
    candidates are ranked keyframes (rank 0 = the match) with ``positions`` [K, 3] in the
    odometry frame (NaN when unknown), ``place_ids``, ``stamps_ns``, ``keyframes`` (database
    rows) and ``previous`` (True for rows of a previous session).
    """

    stamp_ns: int
    accepted: bool
    reason: str
    events: tuple[str, ...]
    keyframe: bool
    score: float
    match_stamp_ns: int | None = None
    match_session: str = ''
    inliers: int = 0
    metric: bool = False
    constraint: np.ndarray | None = None
    covariance: np.ndarray | None = None
    keyframes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    place_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    stamps_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    previous: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    query_position: np.ndarray | None = None

    @property
    def best_score(self) -> float:
        """Descriptor similarity of the loop's match (NaN without a loop)."""
        return self.score


def loop_arrays(result: Any, table: Any, previous_rows: int,
                query_position: np.ndarray | None,
                constraint: tuple[np.ndarray, np.ndarray] | None) -> LoopArrays:
    """A vpr_core ``LoopResult`` -> :class:`LoopArrays`. ``table`` answers
    ``keyframe_rows(indices) -> (place_ids, stamps_ns, positions)`` for database rows;
    ``previous_rows`` rows come from previous sessions; ``constraint`` is (pose [7],
    covariance [6, 6]) in the base frame or None."""
    loop = result.loop
    events = tuple(getattr(result, 'events', ()) or ())
    if loop is None:
        return LoopArrays(int(result.stamp_ns), False, str(result.reason), events,
                          bool(result.keyframe), float('nan'))
    ranked = [int(loop.match_index)] + [int(i) for i in loop.candidates
                                        if int(i) != int(loop.match_index)]
    keyframes = np.asarray(ranked, dtype=np.int64)
    place_ids, stamps_ns, positions = table.keyframe_rows(keyframes)
    place_ids[0], stamps_ns[0] = int(loop.place_id), int(loop.match_stamp_ns)   # the engine's
    pose, covariance = constraint if constraint is not None else (None, None)
    return LoopArrays(
        stamp_ns=int(result.stamp_ns), accepted=True, reason=str(result.reason),
        events=events, keyframe=bool(result.keyframe), score=float(loop.score),
        match_stamp_ns=int(loop.match_stamp_ns), match_session=str(loop.match_session),
        inliers=int(loop.verification.inliers), metric=bool(
            loop.verification.pose is not None and loop.verification.pose.metric),
        constraint=pose, covariance=covariance, keyframes=keyframes,
        place_ids=np.asarray(place_ids, dtype=np.int64),
        stamps_ns=np.asarray(stamps_ns, dtype=np.int64),
        positions=np.asarray(positions, dtype=np.float64).reshape(-1, 3),
        previous=keyframes < previous_rows, query_position=query_position)
