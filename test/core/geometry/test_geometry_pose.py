"""Pose helpers: quaternion convention, SO(3) projection, covariance assembly."""
import numpy as np

from vpr_core.geometry.config import UNKNOWN_TRANSLATION_VARIANCE
from vpr_core.geometry.pose import (
    ROTATION_STD_FLOOR_RAD, RelativePose, exp_so3, pose_covariance, project_to_so3,
    residual_covariance, rotation_angle_deg)


def test_quaternion_is_xyzw_of_the_rotation():
    pose = RelativePose(exp_so3([0.0, 0.0, np.pi / 2]), np.zeros(3), False, np.eye(6))
    assert np.allclose(pose.quaternion(), [0.0, 0.0, np.sqrt(0.5), np.sqrt(0.5)])
    assert abs(pose.rotation_deg - 90.0) < 1e-9
    identity = RelativePose(np.eye(3), np.zeros(3), False, np.eye(6))
    assert np.array_equal(identity.quaternion(), [0.0, 0.0, 0.0, 1.0])


def test_project_to_so3_returns_the_nearest_rotation():
    rotation = exp_so3([0.1, -0.2, 0.3])
    noisy = 2.0 * rotation + 1e-3 * np.random.default_rng(0).standard_normal((3, 3))
    projected = project_to_so3(noisy / 2.0)
    assert np.allclose(projected @ projected.T, np.eye(3)) and np.linalg.det(projected) > 0
    assert rotation_angle_deg(projected @ rotation.T) < 0.1


def test_non_metric_covariance_marks_translation_unknown():
    covariance = pose_covariance(np.eye(3) * 1e-6)
    assert np.allclose(np.diag(covariance)[:3], UNKNOWN_TRANSLATION_VARIANCE)
    assert np.allclose(np.diag(covariance)[3:], 1e-6 + ROTATION_STD_FLOOR_RAD ** 2)
    assert np.count_nonzero(covariance - np.diag(np.diag(covariance))) == 0


def test_residual_covariance_matches_linear_least_squares():
    """For linear residuals A x - b the estimate is sigma^2 (A^T A)^-1 exactly."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((200, 3))
    noise = 0.1 * rng.standard_normal(200)
    covariance = residual_covariance(lambda x: a @ x + noise, 3, sigma_floor=0.0)
    sigma2 = noise @ noise / (200 - 3)
    assert np.allclose(covariance, sigma2 * np.linalg.inv(a.T @ a), rtol=1e-5)
