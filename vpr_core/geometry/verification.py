"""Geometric verification of a place match: local feature matching, then a relative pose.

1. Matching: nearest neighbours (Hamming for ORB, L2 for SIFT), Lowe's ratio test and a
   mutual (cross) check.
2. Pose: with the candidate's depth (or the query's), PnP RANSAC gives a metric pose
   (:mod:`~vpr_core.geometry.pnp`); without depth, or when too few keypoints have valid
   depth or PnP fails, the two-view model selection of :mod:`~vpr_core.geometry.twoview`.
3. Decision: at least ``min_inliers`` inliers of the selected model and
   inliers / matches >= ``min_inlier_ratio``.

Frames: REP-103 optical (z forward, x right, y down). ``pose.rotation`` is R_match_query
(query-camera vectors into the match camera frame), ``pose.translation`` the query camera's
origin in the match camera frame. See docs/geometry.md.
"""
from __future__ import annotations

from dataclasses import dataclass
import logging

import cv2
import numpy as np

from vpr_core.errors import ConfigError
from vpr_core.geometry.camera import CameraModel
from vpr_core.geometry.config import VerifyConfig
from vpr_core.geometry.features import LocalFeatures
from vpr_core.geometry.pnp import estimate_pnp, sample_depth
from vpr_core.geometry.pose import RelativePose
from vpr_core.geometry.twoview import estimate_two_view

logger = logging.getLogger(__name__)

# covariance floor: residual standard deviation assumed at least this (pixels), since RANSAC
# keeps only small residuals and synthetic warps fit almost exactly
SIGMA_FLOOR_PX = 0.5


@dataclass(frozen=True)
class Verification:
    """Outcome of :func:`verify`.

    ``reason`` is one of :data:`~vpr_core.geometry.config.REASONS`: ``'verified'`` (the only
    accepted one), ``'too_small'`` / ``'off'`` (no features: image below ``min_image_side`` /
    verification off), ``'few_features'``, ``'few_matches'`` (fewer than ``min_inliers``),
    ``'degenerate'`` (no geometric model fits), ``'few_inliers'``, ``'low_inlier_ratio'``.
    ``matches`` counts mutual ratio-test matches, ``inliers`` those the selected model keeps
    (PnP inliers when the pose is metric). ``pose`` is set only when accepted.
    """

    accepted: bool
    reason: str
    matches: int = 0
    inliers: int = 0
    inlier_ratio: float = 0.0
    pose: RelativePose | None = None


def match_features(query: LocalFeatures, candidate: LocalFeatures,
                   ratio: float) -> np.ndarray:
    """[M, 2] index pairs (query, candidate) passing the ratio test and the mutual check."""
    if len(query) < 2 or len(candidate) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    norm = cv2.NORM_HAMMING if query.kind == 'orb' else cv2.NORM_L2
    matcher = cv2.BFMatcher(norm)
    forward = [pair[0] for pair in matcher.knnMatch(query.descriptors, candidate.descriptors, k=2)
               if len(pair) == 2 and pair[0].distance < ratio * pair[1].distance]
    if not forward:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.array([(m.queryIdx, m.trainIdx) for m in forward], dtype=np.int64)
    # mutual check: only the candidate keypoints that were chosen need their best query match
    chosen = np.unique(pairs[:, 1])
    best_back = np.full(len(candidate), -1, dtype=np.int64)
    for m in matcher.match(candidate.descriptors[chosen], query.descriptors):
        best_back[chosen[m.queryIdx]] = m.trainIdx
    return pairs[best_back[pairs[:, 1]] == pairs[:, 0]]


def normalise(pixels: np.ndarray, camera: CameraModel) -> np.ndarray:
    """[N, 2] pixels -> [N, 2] undistorted normalised coordinates (x/z, y/z)."""
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 1, 2)
    distortion = np.array(camera.distortion) if camera.distortion else None
    return cv2.undistortPoints(pixels, camera.matrix, distortion).reshape(-1, 2)


def _reject(reason: str, matches: int = 0, inliers: int = 0) -> Verification:
    ratio = inliers / matches if matches else 0.0
    return Verification(False, reason, matches, inliers, ratio, None)


def _metric_pose(query, candidate, pairs, nq, nc, depths, depth_scale, threshold, floor):
    """PnP on candidate depth (preferred) or query depth; (None, 0) when not possible."""
    for features, depth, index, points_in in ((candidate, depths[1], pairs[:, 1], 'match'),
                                              (query, depths[0], pairs[:, 0], 'query')):
        if depth is None:
            continue
        z = sample_depth(depth, features.keypoints[index], features.width, features.height,
                         depth_scale)
        valid = np.isfinite(z)
        rays, seen = (nc, nq) if points_in == 'match' else (nq, nc)
        points = np.hstack([rays[valid], np.ones((int(valid.sum()), 1))]) * z[valid, None]
        pose, inliers = estimate_pnp(points, seen[valid], threshold, floor, points_in=points_in)
        if pose is not None:
            return pose, inliers
        logger.debug('PnP on %s depth failed (%d valid points)', points_in, int(valid.sum()))
    return None, 0


def verify(query: LocalFeatures | None, candidate: LocalFeatures | None, config: VerifyConfig,
           *, camera: CameraModel | None = None, query_depth: np.ndarray | None = None,
           candidate_depth: np.ndarray | None = None,
           depth_scale: float = 0.001) -> Verification:
    """Verify that ``query`` shows the place of ``candidate`` and estimate their relative pose.

    ``camera``: intrinsics of both images (rescaled to each image's size); None guesses a
    60-degree pinhole (:meth:`CameraModel.guess`), good enough to count inliers. Depth images
    (uint16 x ``depth_scale`` metres or float metres, registered to their colour image) make
    the pose metric via PnP; invalid depth pixels (0, NaN, inf) are ignored, a depth image of
    the wrong type or shape raises UnsupportedImageError. Features of different kinds (ORB vs
    SIFT) raise ConfigError. Either features None gives reason ``'off'`` when
    ``config.features == 'none'``, else ``'too_small'``.
    """
    if query is None or candidate is None:
        return _reject('too_small' if config.enabled else 'off')
    if query.kind != candidate.kind:
        raise ConfigError(f'cannot match {query.kind} features against {candidate.kind} ones')
    if min(len(query), len(candidate)) < config.min_inliers:
        return _reject('few_features')
    pairs = match_features(query, candidate, config.ratio_test)
    if len(pairs) < config.min_inliers:
        return _reject('few_matches', len(pairs))
    cam_q, cam_c = (CameraModel.guess(f.width, f.height) if camera is None
                    else camera.scaled(f.width, f.height) for f in (query, candidate))
    nq = normalise(query.keypoints[pairs[:, 0]], cam_q)
    nc = normalise(candidate.keypoints[pairs[:, 1]], cam_c)
    focal = 0.5 * (cam_q.focal + cam_c.focal)
    threshold, floor = config.ransac_threshold_px / focal, SIGMA_FLOOR_PX / focal
    pose, inliers = _metric_pose(query, candidate, pairs, nq, nc, (query_depth, candidate_depth),
                                 depth_scale, threshold, floor)
    if pose is None or inliers < config.min_inliers:
        pose, inliers = estimate_two_view(nq, nc, threshold, floor)
    if pose is None:
        return _reject('degenerate', len(pairs), inliers)
    if inliers < config.min_inliers:
        return _reject('few_inliers', len(pairs), inliers)
    ratio = inliers / len(pairs)
    if ratio < config.min_inlier_ratio:
        return _reject('low_inlier_ratio', len(pairs), inliers)
    return Verification(True, 'verified', len(pairs), inliers, ratio, pose)
