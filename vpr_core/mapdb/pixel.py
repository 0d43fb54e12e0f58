"""A weight-free descriptor source: patch-normalised pixels with random-projection codes.

The floats are SeqSLAM's patch-normalised grey pixels (see
:mod:`vpr_core.evaluation.baseline`), L2-normalised; the codes are the signs of a fixed
Gaussian random projection of those floats (Charikar's SimHash), so Hamming distance tracks
the angle between the floats the way learned hash codes track their float branch. Useful as
a baseline map, in tests and in benchmarks; it needs no model.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from vpr_core.descriptors import Descriptors, pack_codes
from vpr_core.errors import ConfigError
from vpr_core.evaluation.baseline import describe_pixels


class PixelDescriptors:
    """Descriptor source over ``size`` (height, width) grey pixels, ``code_bits`` codes."""

    def __init__(self, size: tuple[int, int] = (32, 64), patch: int = 8, code_bits: int = 256,
                 seed: int = 0) -> None:
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
