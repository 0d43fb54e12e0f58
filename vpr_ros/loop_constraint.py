"""A verified loop's relative camera pose as a between-constraint of the robot's base frame.

vpr_core gives the query camera's pose in the match camera's optical frame (REP-103 optical:
z forward, x right, y down) with a 6x6 covariance over (x, y, z, roll, pitch, yaw) in that
frame (:class:`vpr_core.geometry.pose.RelativePose`). A pose-graph back-end keeps poses of
``base_frame``, so the node publishes T_prev_cur: the pose of ``base_frame`` at the current
stamp expressed in ``base_frame`` at the matched keyframe's stamp, with the covariance
rotated into that frame (still the parent-frame convention of ``PoseWithCovariance``).

With C the optical frame's pose in the base frame (``camera_to_base`` gives the camera's
body frame, x forward, and the fixed optical rotation follows), T_prev_cur = C T_cm_cq C^-1,
and a left perturbation exp(d) of T_cm_cq becomes exp(Ad_C d) of T_prev_cur, so the
covariance is Ad_C S Ad_C^T with Ad_C = [[R, [t]x R], [0, R]] over (translation, rotation).
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
                    camera_in_base: Pose) -> tuple[np.ndarray, np.ndarray]:
    """Query camera in match camera (optical; R [3, 3], t [3], covariance [6, 6]) ->
    (T_prev_cur as [7] x, y, z, qx, qy, qz, qw; its covariance [6, 6] in base_frame at the
    matched keyframe)."""
    r_c, t_c = optical_in_base(camera_in_base)
    r = r_c @ np.asarray(rotation, dtype=np.float64) @ r_c.T
    t = r_c @ np.asarray(translation, dtype=np.float64).reshape(3) + t_c - r @ t_c
    adjoint = np.zeros((6, 6))
    adjoint[:3, :3] = r_c
    adjoint[:3, 3:] = skew(t_c) @ r_c
    adjoint[3:, 3:] = r_c
    rotated = adjoint @ np.asarray(covariance, dtype=np.float64).reshape(6, 6) @ adjoint.T
    return np.concatenate([t, quaternion_from_matrix(r)]), 0.5 * (rotated + rotated.T)
