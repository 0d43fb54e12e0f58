"""Accept or reject a match: score, margin over other places, temporal and odometry agreement.

Rejection reasons are fixed strings (``REASONS``) so diagnostics can count them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vpr_core.localization.config import GateConfig
from vpr_core.localization.tracker import Hypothesis
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.pose import Pose

REASONS = ('empty map', 'no candidates', 'warming up', 'after gap', 'low score',
           'current frame disagrees', 'low margin', 'temporal disagreement',
           'odometry disagreement')


@dataclass
class GateState:
    """Memory of the gate between frames: the previous match, how many consecutive matches
    agreed, and the last accepted match with the odometry position at that time."""

    previous: int | None = None
    streak: int = 0
    accepted_index: int | None = None
    accepted_odometry: np.ndarray | None = None


@dataclass(frozen=True)
class Verdict:
    """The decision on one frame (``reason`` is '' when accepted)."""

    accepted: bool
    reason: str
    confidence: float
    margin: float


def judge(database: MapDatabase, hypotheses: list[Hypothesis], weights: np.ndarray,
          window_frames: int, odometry: Pose | None, config: GateConfig,
          state: GateState, frames_since_gap: int | None = None) -> Verdict:
    """Decide on the best hypothesis and update ``state``; ``weights`` [H] sum to 1;
    ``frames_since_gap``: window frames after the latest unexplained stamp gap (while the
    window reaches back before it, they must be ``min_frames`` and score ``min_score`` on
    their own: the frames before it were placed by time alone)."""
    best = hypotheses[0]
    rows = np.array([h.index for h in hypotheses], dtype=np.int64)
    scores = np.array([h.score for h in hypotheses])
    near = same_place(database, rows, config)
    confidence = float(np.clip(weights[near].sum(), 0.0, 1.0))
    margin = float(best.score - scores[~near].max()) if np.any(~near) else float('inf')
    _update_streak(state, best, config.agreement_tolerance)
    reason = ''
    if window_frames < config.min_frames:
        reason = 'warming up'
    elif frames_since_gap is not None and frames_since_gap < window_frames and (
            frames_since_gap < config.min_frames or best.recent < config.min_score):
        reason = 'after gap'        # the frames after the gap must carry the match alone
    elif best.score < config.min_score:
        reason = 'low score'
    elif best.current < config.min_frame_score:
        reason = 'current frame disagrees'
    elif margin < config.min_margin:
        reason = 'low margin'
    elif state.streak < config.min_agreement:
        reason = 'temporal disagreement'
    elif not _odometry_agrees(database, best.index, odometry, config, state):
        reason = 'odometry disagreement'
    if not reason:
        state.accepted_index = best.index
        state.accepted_odometry = None if odometry is None else \
            np.asarray(odometry.position, dtype=np.float64)
    return Verdict(not reason, reason, confidence, margin)


def same_place(database: MapDatabase, rows: np.ndarray, config: GateConfig) -> np.ndarray:
    """[R] bool: map ``rows`` within the same-place radius of ``rows[0]`` (the match)
    (``same_place_radius_m``, 0: twice the keyframe spacing)."""
    radius = config.same_place_radius_m or 2.0 * database.keyframe_spacing_m
    return np.linalg.norm(database.positions[rows] - database.positions[rows[0]],
                          axis=1) <= radius


def _update_streak(state: GateState, best: Hypothesis, tolerance: int) -> None:
    if state.previous is None:
        state.streak = 1
    else:
        expected = state.previous + int(round(best.advance))
        state.streak = state.streak + 1 if abs(best.index - expected) <= tolerance else 1
    state.previous = best.index


def _odometry_agrees(database: MapDatabase, index: int, odometry: Pose | None,
                     config: GateConfig, state: GateState) -> bool:
    if config.odometry_tolerance_m <= 0 or odometry is None or state.accepted_index is None \
            or state.accepted_odometry is None:
        return True
    travelled = float(np.linalg.norm(np.asarray(odometry.position) - state.accepted_odometry))
    between = float(np.linalg.norm(database.positions[index] -
                                   database.positions[state.accepted_index]))
    return abs(between - travelled) <= config.odometry_tolerance_m + \
        config.odometry_tolerance_ratio * travelled
