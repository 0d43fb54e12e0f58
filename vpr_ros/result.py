"""A vpr_core localization result as plain arrays: the one place that reads its fields."""
from __future__ import annotations

from dataclasses import dataclass
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
