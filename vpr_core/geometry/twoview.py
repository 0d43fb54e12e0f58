"""Relative pose from two views without depth: a homography or an essential matrix.

The model is chosen as in ORB-SLAM (Mur-Artal et al. 2015, section IV): both models are
fitted with RANSAC and scored by their symmetric transfer / epipolar errors; the homography
wins when S_H / (S_H + S_E) > 0.40.

A winning homography means a rotation-only motion or a planar scene. Its normalised form
H_n = K_m^-1 H K_q = R + t n^T / d (scaled so its middle singular value is 1) is projected
onto SO(3) and refined as a pure rotation on the homography's inliers; when that rotation
alone keeps :data:`ROTATION_INLIER_SHARE` of them within the RANSAC threshold, the motion is a
rotation (or a baseline too small for the scene depth to show) and the translation is
unknown (zeros, non-metric).

Else, when the homography keeps fewer than :data:`PLANAR_SHARE` of the essential matrix's
inliers, points off the plane exist and the essential matrix gives the pose (ORB-SLAM's ratio
alone took the dominant plane of a two-plane scene and was 4-11 degrees off). When the
homography still keeps :data:`AMBIGUITY_SHARE` of them, the scene is mostly planar and E may
settle on the plane's twin solution (measured: 4-6 degrees off on such scenes even when
refined from the truth), so the gaps to the plane's solutions join the rotation covariance.

Else the plane-induced homography is decomposed; the solutions with the plane in front of
both cameras remain, and the one closest in rotation to the essential-matrix solution is
kept. An exactly planar scene leaves two solutions that explain the matches equally well:
the rotation covariance then includes the outer product of their rotation difference, so a
back-end sees the ambiguity. Rotations (and E's translation direction) are refined by
Gauss-Newton on the inliers' transfer (Sampson) errors.

Inputs are undistorted normalised image coordinates (x/z, y/z) of the matched keypoints:
``query`` [N, 2] and ``match`` [N, 2]; thresholds are normalised too (pixels / focal).
"""
from __future__ import annotations

from dataclasses import replace
import logging

import cv2
import numpy as np

from vpr_core.geometry.pose import (
    RelativePose, exp_so3, numeric_jacobian, pose_covariance, project_to_so3, refine_rotation,
    residual_covariance, rotation_angle_deg, rotation_vector)

logger = logging.getLogger(__name__)

HOMOGRAPHY_SCORE_RATIO = 0.40      # ORB-SLAM's R_H threshold
ROTATION_INLIER_SHARE = 0.9        # share of H's inliers a pure rotation must keep
PLANAR_SHARE = 0.9                 # H inliers / E inliers at least this: a planar scene
AMBIGUITY_SHARE = 0.6              # ... at least this: E's pose carries the planar ambiguity
_CHI2_1DOF, _CHI2_2DOF = 3.841, 5.991  # 95% gates; ORB-SLAM scores both with the 2-dof one
_RANSAC_CONFIDENCE = 0.999
_RANSAC_ITERATIONS = 2000


def _homogeneous(points: np.ndarray) -> np.ndarray:
    return np.hstack([points, np.ones((len(points), 1))])


def _transfer(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    mapped = _homogeneous(points) @ matrix.T
    return mapped[:, :2] / mapped[:, 2:3]


def _homography_score(matrix: np.ndarray, query: np.ndarray, match: np.ndarray,
                      sigma: float) -> float:
    forward = np.sum((_transfer(matrix, query) - match) ** 2, axis=1) / sigma ** 2
    backward = np.sum((_transfer(np.linalg.inv(matrix), match) - query) ** 2, axis=1)
    backward = backward / sigma ** 2
    return float(sum(np.sum(np.where(d < _CHI2_2DOF, _CHI2_2DOF - d, 0.0))
                     for d in (forward, backward)))


def _epipolar_terms(essential: np.ndarray, query: np.ndarray, match: np.ndarray):
    line_m = _homogeneous(query) @ essential.T      # E x_q: epipolar lines in the match image
    line_q = _homogeneous(match) @ essential        # E^T x_m: lines in the query image
    algebraic = np.sum(_homogeneous(match) * line_m, axis=1)
    return algebraic, line_m, line_q


def _essential_score(essential: np.ndarray, query: np.ndarray, match: np.ndarray,
                     sigma: float) -> float:
    algebraic, line_m, line_q = _epipolar_terms(essential, query, match)
    score = 0.0
    for line in (line_m, line_q):
        d = algebraic ** 2 / np.maximum(line[:, 0] ** 2 + line[:, 1] ** 2, 1e-300) / sigma ** 2
        score += float(np.sum(np.where(d < _CHI2_1DOF, _CHI2_2DOF - d, 0.0)))
    return score


def _sampson(essential: np.ndarray, query: np.ndarray, match: np.ndarray) -> np.ndarray:
    algebraic, line_m, line_q = _epipolar_terms(essential, query, match)
    norm = line_m[:, 0] ** 2 + line_m[:, 1] ** 2 + line_q[:, 0] ** 2 + line_q[:, 1] ** 2
    return algebraic / np.sqrt(np.maximum(norm, 1e-300))


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def _fit_homography(query, match, threshold):
    if len(query) < 4:
        return None, np.zeros(len(query), bool)
    matrix, mask = cv2.findHomography(query, match, cv2.RANSAC, threshold,
                                      maxIters=_RANSAC_ITERATIONS, confidence=_RANSAC_CONFIDENCE)
    if matrix is None or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-12:
        return None, np.zeros(len(query), bool)
    return matrix, mask.reshape(-1).astype(bool)


def _fit_essential(query, match, threshold):
    if len(query) < 5:
        return None, np.zeros(len(query), bool)
    matrix, mask = cv2.findEssentialMat(query, match, np.eye(3), method=cv2.RANSAC,
                                        prob=_RANSAC_CONFIDENCE, threshold=threshold,
                                        maxIters=_RANSAC_ITERATIONS)
    if matrix is None or matrix.shape[0] < 3 or not np.all(np.isfinite(matrix[:3])):
        return None, np.zeros(len(query), bool)
    return matrix[:3], mask.reshape(-1).astype(bool)


def _essential_residuals(rotation, t_hat, q_in, m_in):
    """Sampson errors as a function of (rotation vector, 2 tangent steps of t's direction)."""
    basis = np.linalg.svd(t_hat.reshape(1, 3))[2][1:]          # two unit vectors normal to t

    def residuals(delta):
        t = t_hat + basis.T @ delta[3:]
        essential = _skew(t / np.linalg.norm(t)) @ exp_so3(delta[:3]) @ rotation
        return _sampson(essential, q_in, m_in)

    return residuals, basis


def _refine_essential(rotation, t_hat, q_in, m_in, iterations=10):
    """Refine (R, t direction) by Gauss-Newton on the Sampson error.

    RANSAC's E comes from a minimal 5-point sample: on a two-plane scene its rotation was
    7.1 degrees off, the refined one 0.7 (on nearly planar views refinement cannot settle
    the twin solution: see :func:`_with_ambiguity`).
    """
    for _ in range(iterations):
        residuals, basis = _essential_residuals(rotation, t_hat, q_in, m_in)
        base, jacobian = numeric_jacobian(residuals, 5)
        step = np.linalg.lstsq(jacobian, -base, rcond=None)[0]
        rotation = exp_so3(step[:3]) @ rotation
        t_hat = t_hat + basis.T @ step[3:]
        t_hat = t_hat / np.linalg.norm(t_hat)
        if np.linalg.norm(step) < 1e-10:
            break
    return rotation, t_hat


def _essential_pose(essential, mask, query, match, sigma_floor):
    count, rotation, translation, pose_mask = cv2.recoverPose(
        essential, query, match, np.eye(3), mask=mask.astype(np.uint8).reshape(-1, 1))
    inliers = pose_mask.reshape(-1) > 0
    if count < 5:
        return None, int(count)
    q_in, m_in = query[inliers], match[inliers]
    rotation, t_hat = _refine_essential(rotation, translation.reshape(3) / np.linalg.norm(
        translation), q_in, m_in)
    residuals, _ = _essential_residuals(rotation, t_hat, q_in, m_in)
    covariance = residual_covariance(residuals, 5, sigma_floor=sigma_floor)
    pose = RelativePose(rotation, t_hat, False, pose_covariance(covariance[:3, :3]), 'essential')
    return pose, int(count)


def _rotation_only(normalised, mask, query, match, threshold):
    """The rotation that explains the homography's inliers, or None when one cannot.

    The rotation is H_n projected onto SO(3), refined by Gauss-Newton on the transfer error
    of the inliers; it counts when it keeps :data:`ROTATION_INLIER_SHARE` of them within the
    RANSAC threshold (a plane too close for its baseline does not).
    """
    q_in, m_in = query[mask], match[mask]
    rotation = refine_rotation(project_to_so3(normalised),
                               lambda r: (_transfer(r, q_in) - m_in).reshape(-1))
    error = np.linalg.norm(_transfer(rotation, q_in) - m_in, axis=1)
    return rotation if np.mean(error < threshold) >= ROTATION_INLIER_SHARE else None


def _rotation_pose(rotation, mask, query, match, sigma_floor):
    q_in, m_in = query[mask], match[mask]

    def residuals(delta):
        return (_transfer(exp_so3(delta) @ rotation, q_in) - m_in).reshape(-1)

    covariance = residual_covariance(residuals, 3, sigma_floor=sigma_floor)
    return RelativePose(rotation, np.zeros(3), False, pose_covariance(covariance), 'rotation')


def _plane_solutions(normalised, mask, query):
    """Decompositions of H_n = R + t n^T with the plane in front of both cameras."""
    _, rotations, translations, normals = cv2.decomposeHomographyMat(normalised, np.eye(3))
    rays = _homogeneous(query[mask])
    feasible = []
    for rotation, translation, normal in zip(rotations, translations, normals):
        inverse_depth = rays @ normal.reshape(3)                # n^T X_q = 1 on the plane
        points_m = (rays / inverse_depth[:, None]) @ rotation.T + translation.reshape(1, 3)
        if np.mean((inverse_depth > 0) & (points_m[:, 2] > 0)) >= 0.9:
            feasible.append((rotation, translation.reshape(3), normal.reshape(3)))
    return feasible


def _with_ambiguity(pose: RelativePose, rotations) -> RelativePose:
    """Add the outer products of the rotation gaps to other solutions to the covariance.

    A pose that the data cannot tell from another one is uncertain by at least their gap.
    """
    covariance = pose.covariance.copy()
    for other in rotations:
        gap = rotation_vector(other @ pose.rotation.T)
        covariance[3:, 3:] += np.outer(gap, gap)
    return replace(pose, covariance=covariance)


def _planar_pose(solutions, mask, query, match, reference, sigma_floor):
    q_in, m_in = query[mask], match[mask]
    if reference is not None:
        solutions = sorted(solutions, key=lambda s: rotation_angle_deg(s[0] @ reference.T))
    rotation, translation, normal = solutions[0]
    plane = np.outer(translation, normal)
    rotation = refine_rotation(rotation, lambda r: (_transfer(r + plane, q_in) - m_in).reshape(-1))

    def residuals(delta):
        return (_transfer(exp_so3(delta) @ rotation + plane, q_in) - m_in).reshape(-1)

    covariance = residual_covariance(residuals, 3, sigma_floor=sigma_floor)
    direction = translation / max(np.linalg.norm(translation), 1e-300)
    pose = RelativePose(rotation, direction, False, pose_covariance(covariance),
                        'homography_planar')
    return _with_ambiguity(pose, [s[0] for s in solutions[1:]])


def estimate_two_view(query: np.ndarray, match: np.ndarray, threshold: float,
                      sigma_floor: float) -> tuple[RelativePose | None, int]:
    """Select homography or essential matrix and recover R_match_query (and t's direction).

    Returns (pose or None when no model fits, inlier count of the selected model).
    """
    query = np.ascontiguousarray(query, dtype=np.float64)
    match = np.ascontiguousarray(match, dtype=np.float64)
    homography, mask_h = _fit_homography(query, match, threshold)
    essential, mask_e = _fit_essential(query, match, threshold)
    sigma = threshold / np.sqrt(_CHI2_2DOF)     # the 2-dof gate equals the RANSAC threshold
    score_h = _homography_score(homography, query, match, sigma) if homography is not None \
        else 0.0
    score_e = _essential_score(essential, query, match, sigma) if essential is not None \
        else 0.0
    if score_h + score_e <= 0.0:
        return None, 0
    ratio = score_h / (score_h + score_e)
    logger.debug('model selection: S_H %.1f S_E %.1f R_H %.2f', score_h, score_e, ratio)
    if ratio <= HOMOGRAPHY_SCORE_RATIO:
        return _essential_pose(essential, mask_e, query, match, sigma_floor)
    singular = np.linalg.svd(homography, compute_uv=False)
    normalised = homography / singular[1]
    if np.linalg.det(normalised) < 0:
        normalised = -normalised
    inliers = int(mask_h.sum())
    rotation = _rotation_only(normalised, mask_h, query, match, threshold)
    if rotation is not None:
        return _rotation_pose(rotation, mask_h, query, match, sigma_floor), inliers
    solutions = _plane_solutions(normalised, mask_h, query)
    pose_e, inliers_e = (None, 0) if essential is None else \
        _essential_pose(essential, mask_e, query, match, sigma_floor)
    share = inliers / max(int(mask_e.sum()), 1)
    if pose_e is not None and share < PLANAR_SHARE:
        # points off the plane: the essential matrix sees them; with few of them (a mostly
        # planar scene) it may still settle on the plane's twin solution, so say so
        if share >= AMBIGUITY_SHARE:
            pose_e = _with_ambiguity(pose_e, [s[0] for s in solutions])
        return pose_e, inliers_e
    if not solutions:
        return None, inliers
    reference = None if pose_e is None else pose_e.rotation
    return _planar_pose(solutions, mask_h, query, match, reference, sigma_floor), inliers
