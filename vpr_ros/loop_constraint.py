"""A verified loop's relative camera pose as a between-constraint of the robot's base frame.

vpr_core gives the query camera's pose in the match camera's optical frame (REP-103 optical:
z forward, x right, y down) with a 6x6 covariance over (x, y, z, roll, pitch, yaw) in that
frame (:class:`vpr_core.geometry.pose.RelativePose`). A pose-graph back-end keeps poses of
``base_frame``, so the node publishes T_prev_cur: the pose of ``base_frame`` at the current
stamp expressed in ``base_frame`` at the matched keyframe's stamp, with the covariance
rotated into that frame (still the parent-frame convention of ``PoseWithCovariance``).

With C = (R_c, t_c) the optical frame's pose in the base frame (``camera_to_base`` gives
the camera's body frame, x forward, and the fixed optical rotation follows), T_prev_cur =
C T_cm_cq C^-1: R = R_c R_cm_cq R_c^T and t = R_c t_cm_cq + t_c - R t_c. The covariance
convention is the core's (:mod:`vpr_core.geometry.pose`): additive translation and a left
rotation vector, both in the parent frame. A perturbation (dt, dr) of the camera pose moves
the base pose by dr_b = R_c dr and dt_b = R_c dt + [R t_c]x R_c dr (the lever arm t_c swung
by the rotation), so the covariance is J S J^T with J = [[R_c, [R t_c]x R_c], [0, R_c]]
(checked against a numeric Jacobian in the tests).

Without depth the camera translation is a unit direction of unknown scale (``metric``
False): the lever-arm terms, in metres, cannot be added to it, so the published translation
is that unit direction rotated into ``base_frame`` axes (R_c t_cm_cq; zeros when the pose
carries no translation), with the 1e6 m^2 translation variances of the core and no
translation-rotation coupling.
"""
from __future__ import annotations

import numpy as np

from vpr_core.mapdb import Pose, rotate_vectors

# the optical frame's axes in the camera body frame (x forward, y left, z up): optical z is
# body x, optical x is body -y, optical y is body -z
OPTICAL_IN_BODY = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rotation_matrix(quaternion: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) -> 3x3 rotation matrix."""
    q = np.asarray(quaternion, dtype=np.float64).reshape(1, 4)
    return rotate_vectors(np.repeat(q, 3, axis=0), np.eye(3)).T


def quaternion_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """3x3 rotation matrix -> unit quaternion (x, y, z, w) with w >= 0."""
    r = np.asarray(rotation, dtype=np.float64)
    k = np.array([
        [r[0, 0] - r[1, 1] - r[2, 2], r[1, 0] + r[0, 1], r[2, 0] + r[0, 2], r[2, 1] - r[1, 2]],
        [r[1, 0] + r[0, 1], r[1, 1] - r[0, 0] - r[2, 2], r[2, 1] + r[1, 2], r[0, 2] - r[2, 0]],
        [r[2, 0] + r[0, 2], r[2, 1] + r[1, 2], r[2, 2] - r[0, 0] - r[1, 1], r[1, 0] - r[0, 1]],
        [r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1], r[0, 0] + r[1, 1] + r[2, 2]],
    ]) / 3.0
    values, vectors = np.linalg.eigh(k)
    quaternion = vectors[:, int(np.argmax(values))]
    return quaternion if quaternion[3] >= 0 else -quaternion


def optical_in_base(camera_in_base: Pose) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) of the camera's optical frame in the base frame."""
    body = rotation_matrix(np.asarray(camera_in_base.orientation))
    return body @ OPTICAL_IN_BODY, np.asarray(camera_in_base.position, dtype=np.float64)


def skew(v: np.ndarray) -> np.ndarray:
    """[v]x: the cross-product matrix of a 3-vector."""
    x, y, z = (float(c) for c in v)
    return np.array([[0.0, -z, y], [z, 0.0, -x], [-y, x, 0.0]])


def base_constraint(rotation: np.ndarray, translation: np.ndarray, covariance: np.ndarray,
                    camera_in_base: Pose, metric: bool = True
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Query camera in match camera (optical; R [3, 3], t [3], covariance [6, 6]) ->
    (T_prev_cur as [7] x, y, z, qx, qy, qz, qw; its covariance [6, 6] in base_frame at the
    matched keyframe). ``metric`` False: ``translation`` is a direction of unknown scale and
    the published translation is its unit vector in base_frame axes (module docstring)."""
    r_c, t_c = optical_in_base(camera_in_base)
    r = r_c @ np.asarray(rotation, dtype=np.float64) @ r_c.T
    t_cam = r_c @ np.asarray(translation, dtype=np.float64).reshape(3)
    jacobian = np.zeros((6, 6))
    jacobian[:3, :3] = r_c
    jacobian[3:, 3:] = r_c
    if metric:
        t = t_cam + t_c - r @ t_c
        jacobian[:3, 3:] = skew(r @ t_c) @ r_c
    else:
        norm = float(np.linalg.norm(t_cam))
        t = t_cam / norm if norm > 0 else np.zeros(3)
    rotated = jacobian @ np.asarray(covariance, dtype=np.float64).reshape(6, 6) @ jacobian.T
    return np.concatenate([t, quaternion_from_matrix(r)]), 0.5 * (rotated + rotated.T)
