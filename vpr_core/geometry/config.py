"""Geometric verification settings and outcome names (cheap: no OpenCV behind this module).

Every :class:`VerifyConfig` field becomes a ROS parameter ``loops.verify.<field>``. The
default inlier thresholds were chosen with ``bench/verify_thresholds.py`` on the
``vpr_methods_eval_toy`` street photos (different photos as negatives, warped / cropped /
re-exposed copies as positives), not on the rtabmap_loop sequence; see docs/geometry.md.
"""
from __future__ import annotations

from dataclasses import dataclass

from vpr_core.errors import ConfigError

FEATURE_KINDS = ('orb', 'sift')
# every Verification.reason; 'verified' is the only accepted one
REASONS = ('verified', 'too_small', 'few_features', 'few_matches', 'few_inliers',
           'low_inlier_ratio', 'degenerate', 'off')
# variance (m^2) of a translation component whose scale is unknown: a 1 km standard deviation,
# so a back-end that reads the covariance gives the translation no weight
UNKNOWN_TRANSLATION_VARIANCE = 1.0e6
# variance (rad^2) of a rotation component that could not be estimated (pi^2: anything goes)
UNKNOWN_ROTATION_VARIANCE = 1.0e1


@dataclass(frozen=True)
class VerifyConfig:
    """How local features are extracted and matched, and when a match counts as verified.

    - ``features``: ``'orb'`` (default, binary, fast), ``'sift'`` or ``'none'`` (off);
    - ``max_features``: keypoints kept per image (strongest first);
    - ``ratio_test``: Lowe's ratio, best / second-best descriptor distance must be below it;
    - ``min_inliers`` / ``min_inlier_ratio``: inliers of the selected geometric model (PnP
      when depth is given), and inliers / mutual ratio-test matches, needed to accept;
    - ``min_image_side``: images whose shorter side is below it are not verified (reason
      ``'too_small'``; 64x32 Nordland thumbnails carry too few keypoints);
    - ``ransac_threshold_px``: RANSAC inlier threshold in pixels (converted with the focal
      length to normalised coordinates). 2.5 px is ORB-SLAM's gate (sqrt(5.99) x 1 px): ORB
      keypoints found on coarser pyramid levels are off by a pixel or more (on a warped
      rtabmap frame the median error was 0.8 px, the 90th percentile 1.6 px), so 1 px
      discards good matches and bends the fitted model.
    """

    features: str = 'orb'
    max_features: int = 1000
    ratio_test: float = 0.8
    min_inliers: int = 25
    min_inlier_ratio: float = 0.25
    min_image_side: int = 120
    ransac_threshold_px: float = 2.5

    def __post_init__(self) -> None:
        if self.features not in FEATURE_KINDS + ('none',):
            raise ConfigError(f"features must be one of {FEATURE_KINDS + ('none',)}, "
                              f'got {self.features!r}')
        if self.max_features < 8:
            raise ConfigError(f'max_features must be >= 8, got {self.max_features}')
        if not 0.0 < self.ratio_test <= 1.0:
            raise ConfigError(f'ratio_test must be in (0, 1], got {self.ratio_test}')
        if self.min_inliers < 6:
            raise ConfigError(f'min_inliers must be >= 6 (PnP and RANSAC need at least 5-6 '
                              f'points), got {self.min_inliers}')
        if not 0.0 <= self.min_inlier_ratio <= 1.0:
            raise ConfigError(f'min_inlier_ratio must be in [0, 1], got {self.min_inlier_ratio}')
        if self.min_image_side < 16:
            raise ConfigError(f'min_image_side must be >= 16, got {self.min_image_side}')
        if not self.ransac_threshold_px > 0.0:
            raise ConfigError(f'ransac_threshold_px must be > 0, got {self.ransac_threshold_px}')

    @property
    def enabled(self) -> bool:
        """False when ``features == 'none'`` (verification off)."""
        return self.features != 'none'
