"""Pinhole camera model with optional plumb_bob distortion, as in ``sensor_msgs/CameraInfo``.

Frames follow REP-103's optical convention: z forward, x right, y down; pixel (u, v) with u
to the right and v downwards, (0, 0) the centre of the top-left pixel (as OpenCV and
CameraInfo's ``K``). Numpy only: OpenCV is needed only where points are undistorted
(:mod:`vpr_core.geometry.verify`).
"""
from __future__ import annotations

from dataclasses import dataclass
import math

import numpy as np

from vpr_core.errors import ConfigError

# plumb_bob (k1, k2, p1, p2, k3); OpenCV also reads 4, 8, 12 or 14 coefficients
_DISTORTION_LENGTHS = (0, 4, 5, 8, 12, 14)


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics of one camera for images of ``width`` x ``height`` pixels.

    ``distortion`` holds CameraInfo's ``d`` (plumb_bob: k1, k2, p1, p2, k3); empty means
    rectified / undistorted images. Use :meth:`scaled` for a resized image.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    distortion: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values) or self.fx <= 0 or self.fy <= 0:
            raise ConfigError(f'camera focal lengths must be finite and > 0, got {values}')
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ConfigError(f'camera size must be positive, got {self.width}x{self.height}')
        distortion = tuple(float(d) for d in self.distortion)
        if len(distortion) not in _DISTORTION_LENGTHS:
            raise ConfigError(f'distortion needs one of {_DISTORTION_LENGTHS} coefficients, '
                              f'got {len(distortion)}')
        if not all(math.isfinite(d) for d in distortion):
            raise ConfigError(f'distortion coefficients must be finite, got {distortion}')
        object.__setattr__(self, 'distortion', distortion)
        object.__setattr__(self, 'width', int(self.width))
        object.__setattr__(self, 'height', int(self.height))

    @classmethod
    def guess(cls, width: int, height: int, hfov_deg: float = 60.0) -> 'CameraModel':
        """A distortion-free camera with square pixels, centred principal point, given HFOV.

        Used when no ``camera_info`` is known: rotations come out about right for ordinary
        lenses (60 degrees is a common webcam / robot camera), but the pose is only as good as
        the guess; pass the real intrinsics when you have them.
        """
        if not 1.0 <= hfov_deg <= 179.0:
            raise ConfigError(f'hfov_deg must be within [1, 179], got {hfov_deg}')
        focal = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(focal, focal, (width - 1) / 2.0, (height - 1) / 2.0, width, height)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, width: int, height: int,
                    distortion: tuple[float, ...] = ()) -> 'CameraModel':
        """Build from a 3x3 camera matrix (CameraInfo ``k`` reshaped) and the image size."""
        k = np.asarray(matrix, dtype=np.float64).reshape(3, 3)
        return cls(float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]),
                   width, height, tuple(distortion))

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 float64 camera matrix K (zero skew)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def focal(self) -> float:
        """Mean focal length in pixels (converts pixel thresholds to normalised ones)."""
        return 0.5 * (self.fx + self.fy)

    def scaled(self, width: int, height: int) -> 'CameraModel':
        """Intrinsics for the same camera's image resized to ``width`` x ``height``.

        Pixel centres map as u' = (u + 0.5) * sx - 0.5; distortion coefficients act on
        normalised coordinates and stay unchanged.
        """
        if width == self.width and height == self.height:
            return self
        if int(width) <= 0 or int(height) <= 0:
            raise ConfigError(f'image size must be positive, got {width}x{height}')
        sx, sy = width / self.width, height / self.height
        return CameraModel(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                           (self.cy + 0.5) * sy - 0.5, width, height, self.distortion)
