"""Relative pose of a verified match, rotation helpers and covariance from residuals.

Convention (REP-103 optical frames, z forward, x right, y down): ``rotation`` is
R_match_query, it maps vectors of the query camera frame into the match camera frame;
``translation`` is the query camera's origin in the match camera frame, so a point X_q of the
query frame is ``X_m = rotation @ X_q + translation``.

Covariance: 6x6 over (x, y, z, rotation about the match frame's fixed x, y, z axes), the
order of ``geometry_msgs/PoseWithCovariance``. A pose parameter p is perturbed as
t = t_hat + dt and R = exp([dr]_x) R_hat (a left, match-frame rotation vector dr, which
equals (roll, pitch, yaw) to first order). The estimated block is sigma^2 (J^T J)^-1 with J
the Jacobian of the inlier residuals (normalised image coordinates) at the solution and
sigma^2 their mean square per degree of freedom, floored at ``sigma_floor`` (RANSAC keeps only
small residuals, and synthetic pairs can fit almost exactly); model floors (0.5 degrees,
2 cm) are added in quadrature on the diagonal. Blocks that the model cannot
estimate carry :data:`~vpr_core.geometry.config.UNKNOWN_TRANSLATION_VARIANCE` (1e6 m^2, a
1 km standard deviation) or :data:`~vpr_core.geometry.config.UNKNOWN_ROTATION_VARIANCE`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from vpr_core.geometry.config import UNKNOWN_ROTATION_VARIANCE, UNKNOWN_TRANSLATION_VARIANCE

# Model floors added to the residual-based standard deviations: the residual model sees noise
# but not the systematic keypoint offsets of ORB's pyramid levels or depth errors. On warped
# rtabmap frames the rotation was off by 0.03-0.25 degrees where the residuals claimed
# 0.01 degrees, PnP translations by 1-2 cm at 2-3 m; depth sensors add ~1% of the range.
ROTATION_STD_FLOOR_RAD = float(np.radians(0.5))
TRANSLATION_STD_FLOOR_M = 0.02


@dataclass(frozen=True)
class RelativePose:
    """Pose of the query camera in the match camera's optical frame.

    - ``rotation``: 3x3 R_match_query (query-camera vectors -> match camera frame);
    - ``translation``: [3] query camera origin in the match camera frame; metres when
      ``metric``, else a unit direction (essential matrix) or zeros (rotation only);
    - ``metric``: True when the scale is known (PnP on depth);
    - ``covariance``: 6x6 (x, y, z, roll, pitch, yaw) in the match camera optical frame;
      the translation block is 1e6 m^2 on the diagonal when ``metric`` is False;
    - ``model``: ``'pnp'``, ``'essential'``, ``'homography_planar'`` or ``'rotation'``.
    """

    rotation: np.ndarray
    translation: np.ndarray
    metric: bool
    covariance: np.ndarray
    model: str = ''

    @property
    def rotation_deg(self) -> float:
        """Angle of ``rotation`` in degrees."""
        return rotation_angle_deg(self.rotation)

    def quaternion(self) -> np.ndarray:
        """``rotation`` as a unit quaternion (x, y, z, w), w >= 0."""
        rotvec = rotation_vector(self.rotation)
        angle = float(np.linalg.norm(rotvec))
        axis = rotvec / angle if angle > 0 else np.zeros(3)
        return np.concatenate([axis * np.sin(angle / 2), [np.cos(angle / 2)]])


def project_to_so3(matrix: np.ndarray) -> np.ndarray:
    """The rotation closest (Frobenius) to a 3x3 matrix: U diag(1, 1, det) V^T of its SVD."""
    u, _, vt = np.linalg.svd(np.asarray(matrix, dtype=np.float64))
    fix = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    return u @ fix @ vt


def rotation_vector(rotation: np.ndarray) -> np.ndarray:
    """Axis-angle vector (radians) of a rotation matrix."""
    rotvec, _ = cv2.Rodrigues(np.asarray(rotation, dtype=np.float64))
    return rotvec.reshape(3)


def exp_so3(rotvec: np.ndarray) -> np.ndarray:
    """Rotation matrix of an axis-angle vector (radians)."""
    matrix, _ = cv2.Rodrigues(np.asarray(rotvec, dtype=np.float64).reshape(3, 1))
    return matrix


def rotation_angle_deg(rotation: np.ndarray) -> float:
    """Rotation angle of a 3x3 rotation matrix, degrees."""
    cos = (np.trace(np.asarray(rotation, dtype=np.float64)) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def project(points: np.ndarray) -> np.ndarray:
    """[N, 3] camera-frame points -> [N, 2] normalised image coordinates (x/z, y/z)."""
    return points[:, :2] / points[:, 2:3]


def numeric_jacobian(residuals: Callable[[np.ndarray], np.ndarray], dof: int,
                     step: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Residuals at zero and their [M, dof] Jacobian by central differences."""
    base = residuals(np.zeros(dof))
    jacobian = np.empty((base.size, dof))
    for k in range(dof):
        delta = np.zeros(dof)
        delta[k] = step
        jacobian[:, k] = (residuals(delta) - residuals(-delta)) / (2 * step)
    return base, jacobian


def refine_rotation(rotation: np.ndarray, residuals: Callable[[np.ndarray], np.ndarray],
                    iterations: int = 10) -> np.ndarray:
    """Gauss-Newton on R = exp([d]_x) R_hat minimising ``residuals(R)`` (a rotation -> [M]).

    A homography fitted with 8 degrees of freedom absorbs keypoint noise into perspective
    terms; projecting it onto SO(3) was off by 0.5 degrees on a warped frame, the refined
    rotation by 0.03 degrees.
    """
    for _ in range(iterations):
        base, jacobian = numeric_jacobian(lambda d: residuals(exp_so3(d) @ rotation), 3)
        step = np.linalg.lstsq(jacobian, -base, rcond=None)[0]
        rotation = exp_so3(step) @ rotation
        if np.linalg.norm(step) < 1e-10:
            break
    return rotation


def residual_covariance(residuals: Callable[[np.ndarray], np.ndarray], dof: int, *,
                        sigma_floor: float) -> np.ndarray:
    """sigma^2 (J^T J)^+ of a residual function of a ``dof``-vector perturbation at zero.

    sigma^2 is the residuals' sum of squares over (count - dof), at least
    ``sigma_floor``^2. A direction the residuals do not constrain gets variance
    ``UNKNOWN_ROTATION_VARIANCE`` rather than an infinite one.
    """
    base, jacobian = numeric_jacobian(residuals, dof)
    sigma2 = max(float(base @ base) / max(base.size - dof, 1), sigma_floor ** 2)
    information = jacobian.T @ jacobian / sigma2
    values, vectors = np.linalg.eigh(information)
    floor = 1e-12 * max(float(values.max()), 1e-300)
    inverse = np.where(values > floor, 1.0 / np.maximum(values, floor),
                       UNKNOWN_ROTATION_VARIANCE)
    return (vectors * inverse) @ vectors.T


def pose_covariance(rotation_block: np.ndarray | None,
                    full_block: np.ndarray | None = None) -> np.ndarray:
    """Assemble the 6x6 covariance from a full estimate or a rotation block alone.

    With a rotation block alone the translation is marked unknown (1e6 m^2 on the diagonal).
    The model floors (:data:`ROTATION_STD_FLOOR_RAD`, :data:`TRANSLATION_STD_FLOOR_M`) are
    added in quadrature to the estimated diagonal.
    """
    covariance = np.zeros((6, 6))
    if full_block is not None:
        covariance[:] = full_block
        covariance[:3, :3] += np.eye(3) * TRANSLATION_STD_FLOOR_M ** 2
    else:
        covariance[:3, :3] = np.eye(3) * UNKNOWN_TRANSLATION_VARIANCE
        covariance[3:, 3:] = np.eye(3) * UNKNOWN_ROTATION_VARIANCE if rotation_block is None \
            else rotation_block
    covariance[3:, 3:] += np.eye(3) * ROTATION_STD_FLOOR_RAD ** 2
    return 0.5 * (covariance + covariance.T)
