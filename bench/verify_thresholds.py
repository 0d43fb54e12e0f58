"""Where the geometric verification thresholds come from (``VerifyConfig`` defaults).

Data: ``../shared/data/vpr_methods_eval_toy`` (17 database + 5 query San Francisco street
photos, unlabelled), NOT the rtabmap_loop sequence that the loop-closure report uses.

- negatives: every pair of two different photos (231 pairs). The README notes that q1 may
  show the place of db2 by eye; the pair is listed separately and left out of the choice.
- positives: each photo against synthetic views of itself, with a guessed 60-degree camera:
  a rotation (K R K^-1, yaw/pitch/roll up to 10 degrees), a plane-induced homography with a
  sideways and forward translation, a zoomed crop (x1.25, shifted), and a photometric change
  (contrast, brightness, blur, JPEG quality 40) on top of a small rotation.

Each pair is verified with thresholds switched off (min_inliers 6, ratio 0) so the raw
inlier counts show, then the rule below picks the defaults:

- ``min_inliers``: twice the largest negative inlier count, rounded up to a multiple of 5
  (a margin for places more self-similar than these streets: corridors, repeated doors);
- ``min_inlier_ratio``: the toy negatives never have enough matches for their ratio to mean
  anything (a handful of matches, half of them "inliers" of a chance model), so the ratio is
  set from the positives: a third of their 5th percentile, rounded down to 0.05 (synthetic
  views are easier than real revisits, which lose matches to viewpoint and lighting). It
  guards against many matches of which a chance model explains only a few.

It prints both distributions, the choice, the positive pass rate, the time per
verification (ORB extraction excluded and included) and ``CLAIM FAILED`` when the chosen
defaults in ``VerifyConfig`` differ from the rule's choice, or a negative passes them.

    .venv/bin/python bench/verify_thresholds.py
"""
from __future__ import annotations

import argparse
import itertools
import math
from pathlib import Path
import time

import cv2
import numpy as np

from vpr_core.devices import apply_thread_policy
from vpr_core.geometry.camera import CameraModel
from vpr_core.geometry.config import VerifyConfig
from vpr_core.geometry.features import extract_features
from vpr_core.geometry.pose import exp_so3
from vpr_core.geometry.verification import verify
from vpr_core.image import list_images, load_image_file

DEFAULT_DATA = Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / \
    'vpr_methods_eval_toy'
PERMISSIVE = VerifyConfig(min_inliers=6, min_inlier_ratio=0.0)


def _warp(image: np.ndarray, homography: np.ndarray) -> np.ndarray:
    return cv2.warpPerspective(image, homography, (image.shape[1], image.shape[0]))


def synthetic_views(image: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Four warped / re-exposed copies of one photo (see the module docstring)."""
    height, width = image.shape[:2]
    k = CameraModel.guess(width, height).matrix
    k_inv = np.linalg.inv(k)
    rotation = exp_so3(np.radians(rng.uniform(-10, 10, 3)))
    plane_rotation = exp_so3(np.radians(rng.uniform(-5, 5, 3)))
    shift = np.array([rng.uniform(-0.3, 0.3), rng.uniform(-0.1, 0.1), rng.uniform(-0.3, 0.3)])
    plane = plane_rotation + np.outer(shift, [0.0, 0.0, 1.0]) / 4.0     # wall 4 m ahead
    zoom = np.array([[1.25, 0, -0.125 * width + rng.uniform(-20, 20)],
                     [0, 1.25, -0.125 * height + rng.uniform(-20, 20)], [0, 0, 1]])
    small = _warp(image, k @ exp_so3(np.radians(rng.uniform(-3, 3, 3))) @ k_inv)
    photometric = cv2.GaussianBlur(cv2.convertScaleAbs(small, alpha=0.7, beta=30), (3, 3), 0)
    ok, jpeg = cv2.imencode('.jpg', photometric, [cv2.IMWRITE_JPEG_QUALITY, 40])
    return {'rotation': _warp(image, k @ rotation @ k_inv),
            'plane': _warp(image, k @ plane @ k_inv),
            'zoom': _warp(image, zoom),
            'photometric': cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED)}


def _summary(values: list[float]) -> str:
    if not values:
        return 'none'
    p = np.percentile(values, [0, 5, 50, 95, 100])
    return 'min %.2f  p5 %.2f  median %.2f  p95 %.2f  max %.2f  (n=%d)' % (*p, len(values))


def choose(negatives: list[tuple[int, float]], positive_ratios: list[float]) -> tuple[int, float]:
    """The module docstring's rule: (min_inliers, min_inlier_ratio)."""
    min_inliers = int(5 * math.ceil(2.0 * max(n for n, _ in negatives) / 5))
    ratio = math.floor(float(np.percentile(positive_ratios, 5)) / 3.0 / 0.05) * 0.05
    return max(min_inliers, 6), round(ratio, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    apply_thread_policy(1)
    paths = list_images(args.data)
    names = [p.stem for p in paths]
    images = [load_image_file(p) for p in paths]
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    features = [extract_features(im, PERMISSIVE) for im in images]
    extract_ms = (time.perf_counter() - start) * 1e3 / len(images)
    print(f'{len(images)} photos from {args.data.name}; ORB extraction {extract_ms:.1f} ms each')

    negatives, aside, verify_ms, negative_matches = [], [], [], []
    for i, j in itertools.combinations(range(len(images)), 2):
        result = verify(features[i], features[j], PERMISSIVE)
        row = (result.inliers, result.inlier_ratio)
        negative_matches.append(result.matches)
        (aside if {names[i], names[j]} == {'q1', 'db2'} else negatives).append(row)
    positives = {}
    for index, image in enumerate(images):
        for kind, view in synthetic_views(image, rng).items():
            view_features = extract_features(view, PERMISSIVE)
            result = verify(view_features, features[index], PERMISSIVE)
            positives.setdefault(kind, []).append((result.inliers, result.inlier_ratio))
            start = time.perf_counter()
            verify(view_features, features[index], VerifyConfig())
            verify_ms.append((time.perf_counter() - start) * 1e3)

    print('negatives (different photos) matches:', _summary(negative_matches))
    print('negatives (different photos) inliers:', _summary([n for n, _ in negatives]))
    print('negatives inlier ratio:              ', _summary([r for _, r in negatives]))
    print(f'q1-db2 (maybe the same place, left out): inliers {aside[0][0]}, '
          f'ratio {aside[0][1]:.2f}' if aside else 'q1-db2 not found')
    every = [row for rows in positives.values() for row in rows]
    for kind, rows in positives.items():
        print(f'positives {kind:12s} inliers:', _summary([n for n, _ in rows]))
    print('positives inlier ratio:              ', _summary([r for _, r in every]))
    min_inliers, min_ratio = choose(negatives, [r for _, r in every])
    defaults = VerifyConfig()
    print(f'rule: min_inliers {min_inliers}, min_inlier_ratio {min_ratio:.2f}; '
          f'VerifyConfig defaults: {defaults.min_inliers}, {defaults.min_inlier_ratio:.2f}')

    def passes(row):
        return row[0] >= defaults.min_inliers and row[1] >= defaults.min_inlier_ratio

    false_accepts = sum(passes(row) for row in negatives)
    for kind, rows in positives.items():
        print(f'positives {kind:12s} accepted by the defaults: '
              f'{sum(map(passes, rows))}/{len(rows)}')
    print(f'negatives accepted by the defaults: {false_accepts}/{len(negatives)}')
    print(f'verify of a positive with the defaults (matching, model selection, covariance): '
          f'median '
          f'{np.median(verify_ms):.1f} ms, p95 {np.percentile(verify_ms, 95):.1f} ms '
          f'over {len(verify_ms)} pairs (plus {2 * extract_ms:.1f} ms for two ORB extractions)')
    start = time.perf_counter()
    for i, j in itertools.combinations(range(len(images)), 2):
        verify(features[i], features[j], VerifyConfig())
    print(f'verify of a negative with the defaults: mean '
          f'{(time.perf_counter() - start) * 1e3 / len(negative_matches):.2f} ms')
    failed = false_accepts > 0 or (min_inliers, min_ratio) != (defaults.min_inliers,
                                                               defaults.min_inlier_ratio)
    if failed:
        print('CLAIM FAILED: defaults differ from the rule, or a negative passes them')
    return 1 if failed else 0


if __name__ == '__main__':
    raise SystemExit(main())
