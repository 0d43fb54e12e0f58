"""Local features (OpenCV ORB or SIFT) for geometric verification.

Keypoints are in pixels of the image as given (the original image, not a resized copy), so
they pair with that image's :class:`~vpr_core.geometry.camera.CameraModel` and depth image.
"""
from __future__ import annotations

from dataclasses import dataclass
import logging

import cv2
import numpy as np

from vpr_core.errors import MapError
from vpr_core.geometry.config import FEATURE_KINDS, VerifyConfig
from vpr_core.image import check_rgb

logger = logging.getLogger(__name__)

DESCRIPTOR_LAYOUT = {'orb': (32, np.uint8), 'sift': (128, np.float32)}


@dataclass(frozen=True)
class LocalFeatures:
    """Keypoints [N, 2] float32 (x, y) pixels and descriptors [N, D] of one image.

    ``descriptors`` are uint8 [N, 32] for ORB, float32 [N, 128] for SIFT; ``width`` x
    ``height`` is the size of the image they were found in.
    """

    keypoints: np.ndarray
    descriptors: np.ndarray
    kind: str
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f'feature kind must be one of {FEATURE_KINDS}, got {self.kind!r}')
        dim, dtype = DESCRIPTOR_LAYOUT[self.kind]
        keypoints = np.asarray(self.keypoints, dtype=np.float32).reshape(-1, 2)
        descriptors = np.asarray(self.descriptors)
        if descriptors.dtype != dtype or descriptors.shape != (len(keypoints), dim):
            raise ValueError(f'{self.kind} descriptors must be {np.dtype(dtype).name} '
                             f'[{len(keypoints)}, {dim}], got {descriptors.dtype} '
                             f'{list(descriptors.shape)}')
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f'image size must be positive, got {self.width}x{self.height}')
        object.__setattr__(self, 'keypoints', keypoints)
        object.__setattr__(self, 'width', int(self.width))
        object.__setattr__(self, 'height', int(self.height))

    def __len__(self) -> int:
        return len(self.keypoints)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Plain arrays for ``np.savez`` (no pickling needed to read them back)."""
        return {'keypoints': self.keypoints, 'descriptors': self.descriptors,
                'kind': np.array(self.kind), 'size': np.array([self.width, self.height],
                                                              dtype=np.int64)}

    @classmethod
    def from_arrays(cls, arrays) -> 'LocalFeatures':
        """Inverse of :meth:`to_arrays`; a missing or malformed entry raises MapError."""
        try:
            size = np.asarray(arrays['size']).reshape(2)
            return cls(np.asarray(arrays['keypoints']), np.asarray(arrays['descriptors']),
                       str(np.asarray(arrays['kind'])), int(size[0]), int(size[1]))
        except (KeyError, ValueError, TypeError) as error:
            raise MapError(f'stored local features are malformed: {error}') from error


def _detector(config: VerifyConfig):
    if config.features == 'orb':
        return cv2.ORB_create(nfeatures=config.max_features)
    if config.features == 'sift':
        return cv2.SIFT_create(nfeatures=config.max_features)
    raise ValueError(f'no detector for features={config.features!r}; '
                     f'valid: {FEATURE_KINDS}')


def extract_features(image: np.ndarray, config: VerifyConfig) -> LocalFeatures | None:
    """RGB uint8 [H, W, 3] (or grey [H, W]) -> keypoints and descriptors of the grey image.

    Returns None when verification is off (``features='none'``) or the image's shorter side
    is below ``config.min_image_side`` (the caller reports ``'too_small'``). A textureless
    image gives a :class:`LocalFeatures` with no keypoints (reason ``'few_features'``).
    """
    if not config.enabled:
        return None
    rgb = check_rgb(image)
    height, width = rgb.shape[:2]
    if min(height, width) < config.min_image_side:
        logger.debug('image %dx%d below min_image_side %d: no local features', width, height,
                     config.min_image_side)
        return None
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    keypoints, descriptors = _detector(config).detectAndCompute(grey, None)
    dim, dtype = DESCRIPTOR_LAYOUT[config.features]
    if descriptors is None or not keypoints:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, dim), dtype),
                             config.features, width, height)
    points = np.array([k.pt for k in keypoints], dtype=np.float32)
    return LocalFeatures(points, descriptors.astype(dtype, copy=False), config.features,
                         width, height)
