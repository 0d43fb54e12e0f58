"""A weight-free descriptor source: patch-normalised pixels with random-projection codes.

The floats are SeqSLAM's front end (Milford and Wyeth, "SeqSLAM: Visual route-based navigation
for sunny summer days and stormy winter nights", ICRA 2012): grey, down-sampled images whose
small patches are normalised to zero mean and unit variance. :func:`describe_pixels` is the one
implementation; the evaluation baseline (:mod:`vpr_core.evaluation.baseline`) compares its
vectors by the mean absolute difference, and :class:`PixelDescriptors` L2-normalises them and
adds codes: the signs of a fixed Gaussian random projection of those floats (Charikar's
SimHash), so Hamming distance tracks the angle between the floats the way learned hash codes
track their float branch. Useful as a baseline map, in tests and in benchmarks; it needs no
model.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import cv2
import numpy as np

from vpr_core.descriptors import Descriptors, pack_codes
from vpr_core.errors import ConfigError

DEFAULT_SIZE = (32, 64)     # (height, width)
DEFAULT_PATCH = 8


def describe_pixels(images: Iterable[np.ndarray], size: tuple[int, int] = DEFAULT_SIZE,
                    patch: int = DEFAULT_PATCH) -> np.ndarray:
    """RGB uint8 images (any size) -> [N, H * W] float32 patch-normalised grey pixels."""
    height, width = size
    if height % patch or width % patch:
        raise ValueError(f'size {size} must be a multiple of the patch size {patch}')
    rows = [_patch_normalise(_grey(image, size), patch).reshape(-1) for image in images]
    return np.stack(rows).astype(np.float32) if rows else np.zeros((0, height * width),
                                                                   np.float32)


class PixelDescriptors:
    """Descriptor source over ``size`` (height, width) grey pixels, ``code_bits`` codes."""

    def __init__(self, size: tuple[int, int] = DEFAULT_SIZE, patch: int = DEFAULT_PATCH,
                 code_bits: int = 256, seed: int = 0) -> None:
        if code_bits < 0 or code_bits % 8:
            raise ConfigError(f'code_bits must be a non-negative multiple of 8, got {code_bits}')
        self.size = (int(size[0]), int(size[1]))
        self.patch = int(patch)
        self._bits = int(code_bits)
        self.seed = int(seed)
        dim = self.size[0] * self.size[1]
        rng = np.random.default_rng(seed)
        self.projection = rng.standard_normal((dim, self._bits)).astype(np.float32)

    @property
    def fingerprint(self) -> str:
        """Identity of this descriptor recipe."""
        return f'pixels-{self.size[0]}x{self.size[1]}-p{self.patch}-b{self._bits}-s{self.seed}'

    @property
    def descriptor_dim(self) -> int:
        """Float width: height x width."""
        return self.size[0] * self.size[1]

    @property
    def code_bits(self) -> int:
        """Code length in bits."""
        return self._bits

    @property
    def model_config(self) -> None:
        """No model."""
        return None

    def extract(self, images: Sequence[np.ndarray]) -> Descriptors:
        """N RGB uint8 images -> floats [N, H * W] unit-norm and codes [N, bits / 8]."""
        floats = describe_pixels(images, self.size, self.patch)
        floats /= np.maximum(np.linalg.norm(floats, axis=1, keepdims=True), 1e-12)
        return Descriptors(floats, self.codes_of(floats) if self._bits else None)

    def codes_of(self, floats: np.ndarray) -> np.ndarray:
        """[N, D] floats -> [N, bits / 8] packed signs of the random projection."""
        return pack_codes(np.asarray(floats, np.float32) @ self.projection)


def _grey(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    if grey.shape != size:
        grey = cv2.resize(grey, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return grey.astype(np.float32)


def _patch_normalise(grey: np.ndarray, patch: int) -> np.ndarray:
    """Every non-overlapping patch x patch block -> zero mean, unit standard deviation."""
    height, width = grey.shape
    blocks = grey.reshape(height // patch, patch, width // patch, patch)
    mean = blocks.mean(axis=(1, 3), keepdims=True)
    std = blocks.std(axis=(1, 3), keepdims=True)
    normalised = (blocks - mean) / np.maximum(std, 1e-6)
    return normalised.reshape(height, width)
