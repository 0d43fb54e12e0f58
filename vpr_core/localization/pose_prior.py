"""The pose prior of a match: base pose in the map frame and a data-driven covariance.

The map stores poses of the mapping camera; the robot's base is the matched camera pose
composed with the inverse of the query camera's extrinsic (its pose in the base frame). The
covariance is diagonal over (x, y, z, roll, pitch, yaw), row-major 6 x 6, and built from:
the spread of the candidates at the matched place (weighted by their confidence; the
recognizer passes zero weight for candidates beyond the gate's same-place radius: a Gaussian
cannot describe a rival place hundreds of metres away, so a match with strong rivals is the
gate's to reject, not the covariance's to smear over the route), a floor from the
keyframe spacing (a match cannot be more precise than the distance between places), the
along-track uncertainty of the step since the previous frame (``step_sigma`` x the places
travelled: after a gap the trajectory that placed the match bridged that many places), a
score-to-error calibration factor, and large variances for the axes the map does not observe.
It is never zero, never negative and never above ``max_variance`` (< 1e9, Nav2's limit).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vpr_core.localization.calibration import ScoreCalibration
from vpr_core.localization.config import PriorConfig
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.pose import compose, invert, Pose, yaw_from_quaternions


@dataclass(frozen=True)
class PosePrior:
    """``pose``: base frame in the map frame ``frame_id``; ``covariance``: 36 numbers,
    row-major 6 x 6 over (x, y, z, rotation about x, y, z), m^2 and rad^2."""

    pose: Pose
    covariance: tuple[float, ...]
    frame_id: str

    @property
    def covariance_matrix(self) -> np.ndarray:
        """[6, 6] float64."""
        return np.asarray(self.covariance, dtype=np.float64).reshape(6, 6)


def estimate_prior(database: MapDatabase, best: int, candidates: np.ndarray,
                   weights: np.ndarray, score: float, config: PriorConfig,
                   calibration: ScoreCalibration, camera_in_base: Pose,
                   step_places: float = 1.0) -> PosePrior:
    """Prior for map row ``best``; ``candidates`` [C] rows with ``weights`` [C] (sum 1);
    ``step_places``: places travelled since the previous frame."""
    position, orientation = compose(database.positions[best:best + 1],
                                    database.orientations[best:best + 1], invert(camera_in_base))
    variances = prior_variances(database, best, candidates, weights, score, config, calibration,
                                camera_in_base, step_places)
    covariance = np.diag(variances).reshape(-1)
    pose = Pose(tuple(float(v) for v in position[0]), tuple(float(v) for v in orientation[0]))
    return PosePrior(pose, tuple(float(v) for v in covariance), database.manifest.frame_id)


def prior_variances(database: MapDatabase, best: int, candidates: np.ndarray,
                    weights: np.ndarray, score: float, config: PriorConfig,
                    calibration: ScoreCalibration, camera_in_base: Pose,
                    step_places: float = 1.0) -> np.ndarray:
    """[6] variances (x, y, z, roll, pitch, yaw) of the prior, clamped to the valid range."""
    manifest = database.manifest
    candidates = np.asarray(candidates, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    weights = weights / weights.sum() if weights.sum() > 0 else np.ones(len(weights)) / max(
        len(weights), 1)
    offsets = database.positions[candidates] - database.positions[best]
    spread = (weights[:, None] * offsets ** 2).sum(axis=0) if len(candidates) else np.zeros(3)
    yaw = yaw_from_quaternions(database.orientations[np.append(candidates, best)])
    turn = np.angle(np.exp(1j * (yaw[:-1] - yaw[-1])))
    yaw_spread = float((weights * turn ** 2).sum()) if len(candidates) else 0.0
    floor = max(config.min_sigma_m, config.floor_spacing_factor * database.keyframe_spacing_m)
    along = config.step_sigma * max(float(step_places), 0.0) * database.keyframe_spacing_m
    scale = calibration.factor(score)
    yaw_var = (yaw_spread + np.radians(config.yaw_floor_deg) ** 2) * scale
    if manifest.orientation_source == 'none':
        yaw_var = config.unobserved_variance
    lever = float(np.hypot(*camera_in_base.position[:2]))
    xy = (spread[:2] + floor ** 2 + along ** 2) * scale + min(yaw_var, np.pi ** 2) * lever ** 2
    if manifest.planar:
        z = roll = pitch = config.unobserved_variance
    else:
        z = (spread[2] + floor ** 2) * scale
        roll = pitch = np.radians(config.rotation_floor_deg) ** 2 * scale
    variances = np.array([xy[0], xy[1], z, roll, pitch, yaw_var], dtype=np.float64)
    return np.clip(np.nan_to_num(variances, nan=config.max_variance), config.min_variance,
                   config.max_variance)
