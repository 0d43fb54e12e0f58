"""Training image transforms: resize, augment, ImageNet-normalise (the seeds' order).

RandAugment (Cubuk et al., 2020) with the operation set and magnitude ranges of torchvision's
``RandAugment`` (31 magnitude bins, signed geometric and colour ops, black fill), written with
OpenCV on uint8 RGB arrays so no torchvision is needed. ``photometric`` is a milder policy for
tiny images: brightness / contrast jitter and a small random shift. :func:`condition_change`
(ours, used by ``vpr adapt``) imitates what differs between sessions of one place and
survives a model's per-image standardisation, which cancels global brightness and contrast:
gamma, a colour cast, a brightness ramp across the view (shade, snow on the ground), blur and
sensor noise. :class:`TwoViewTransform` also gives the un-augmented view of each image (the
clean target of ``vpr adapt``'s cross-condition distillation).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from training.config import AugmentConfig

BINS = 31


def _affine(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return cv2.warpAffine(image, matrix.astype(np.float32), (width, height),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _shear(image: np.ndarray, amount: float, axis: int) -> np.ndarray:
    height, width = image.shape[:2]
    matrix = np.eye(2, 3)
    matrix[axis, 1 - axis] = amount
    centre = (height / 2.0, width / 2.0)[axis]
    matrix[axis, 2] = -amount * centre
    return _affine(image, matrix)


def _translate(image: np.ndarray, pixels: float, axis: int) -> np.ndarray:
    matrix = np.eye(2, 3)
    matrix[axis, 2] = pixels
    return _affine(image, matrix)


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    height, width = image.shape[:2]
    return _affine(image, cv2.getRotationMatrix2D((width / 2.0, height / 2.0), degrees, 1.0))


def _blend(image: np.ndarray, other: np.ndarray, factor: float) -> np.ndarray:
    mixed = other.astype(np.float32) + factor * (image.astype(np.float32) - other)
    return np.clip(mixed, 0, 255).astype(np.uint8)


def _grey(image: np.ndarray) -> np.ndarray:
    return np.repeat(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None], 3, axis=2)


def _contrast(image: np.ndarray, factor: float) -> np.ndarray:
    mean = np.full_like(image, int(round(float(_grey(image)[:, :, 0].mean()))))
    return _blend(image, mean, factor)


def _sharpness(image: np.ndarray, factor: float) -> np.ndarray:
    kernel = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float32) / 13.0
    smooth = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REPLICATE)
    return _blend(image, smooth, factor)


def _autocontrast(image: np.ndarray) -> np.ndarray:
    low = image.reshape(-1, 3).min(0).astype(np.float32)
    high = image.reshape(-1, 3).max(0).astype(np.float32)
    scale = np.where(high > low, 255.0 / np.maximum(high - low, 1e-6), 1.0)
    offset = np.where(high > low, low, 0.0)
    return np.clip((image - offset) * scale, 0, 255).astype(np.uint8)


def _equalize(image: np.ndarray) -> np.ndarray:
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(image[:, :, c]))
                     for c in range(3)], axis=2)


def _op_table(height: int, width: int) -> dict:
    """name -> (max magnitude, signed, function(image, value))."""
    return {
        'identity': (0.0, False, lambda im, v: im),
        'shear_x': (0.3, True, lambda im, v: _shear(im, v, 0)),
        'shear_y': (0.3, True, lambda im, v: _shear(im, v, 1)),
        'translate_x': (150.0 / 331.0 * width, True, lambda im, v: _translate(im, v, 0)),
        'translate_y': (150.0 / 331.0 * height, True, lambda im, v: _translate(im, v, 1)),
        'rotate': (30.0, True, _rotate),
        'brightness': (0.9, True, lambda im, v: _blend(im, np.zeros_like(im), 1.0 + v)),
        'color': (0.9, True, lambda im, v: _blend(im, _grey(im), 1.0 + v)),
        'contrast': (0.9, True, lambda im, v: _contrast(im, 1.0 + v)),
        'sharpness': (0.9, True, lambda im, v: _sharpness(im, 1.0 + v)),
        'posterize': (4.0, False, lambda im, v: im & np.uint8((0xFF << int(8 - v)) & 0xFF)),
        'solarize': (255.0, False, lambda im, v: np.where(im >= 255.0 - v, 255 - im, im)),
        'autocontrast': (0.0, False, lambda im, v: _autocontrast(im)),
        'equalize': (0.0, False, lambda im, v: _equalize(im)),
    }


def rand_augment(image: np.ndarray, rng: np.random.Generator, num_ops: int = 3,
                 magnitude: int = 9) -> np.ndarray:
    """Apply ``num_ops`` random operations at ``magnitude`` (of 31 bins) to RGB uint8 [H, W, 3].

    Posterize keeps 8 - 4 m / 30 bits (rounded); solarize's threshold falls from 255 with m.
    """
    table = _op_table(*image.shape[:2])
    names = list(table)
    for _ in range(num_ops):
        name = names[int(rng.integers(len(names)))]
        top, signed, apply = table[name]
        value = top * magnitude / (BINS - 1)
        if name == 'posterize':
            value = float(round(top * magnitude / (BINS - 1)))
        if signed and rng.random() < 0.5:
            value = -value
        image = apply(image, value)
    return image


def photometric(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Brightness and contrast jitter, then a random shift of up to ``cfg.shift`` x size."""
    gain = 1.0 + rng.uniform(-cfg.brightness, cfg.brightness)
    image = _blend(image, np.zeros_like(image), gain)
    image = _contrast(image, 1.0 + rng.uniform(-cfg.contrast, cfg.contrast))
    height, width = image.shape[:2]
    dx, dy = rng.uniform(-cfg.shift, cfg.shift, size=2) * (width, height)
    return _affine(image, np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]]))


@dataclass(frozen=True)
class ConditionConfig:
    """:func:`condition_change` settings; ``probability`` 0 turns it off.

    ``gamma``: exponent log-uniform in [1 / (1 + gamma), 1 + gamma]; ``colour``: per-channel
    gain in 1 +- colour; ``ramp``: a linear brightness ramp in a random direction, gain
    1 +- ramp at the image edges; ``blur_sigma``: Gaussian blur of up to this sigma (pixels)
    on half the images; ``noise``: Gaussian noise of up to this standard deviation (grey
    levels).
    """

    probability: float = 0.0
    gamma: float = 0.6
    colour: float = 0.1
    ramp: float = 0.5
    blur_sigma: float = 1.0
    noise: float = 6.0


def condition_change(image: np.ndarray, rng: np.random.Generator,
                     cfg: ConditionConfig) -> np.ndarray:
    """RGB uint8 [H, W, 3] -> the same view under another condition (see the config)."""
    height, width = image.shape[:2]
    x = image.astype(np.float32) / 255.0
    x = x ** float(np.exp(rng.uniform(-1.0, 1.0) * np.log1p(cfg.gamma)))
    x = x * (1.0 + rng.uniform(-cfg.colour, cfg.colour, size=3)).astype(np.float32)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    along = (np.cos(angle) * (cols / max(width - 1, 1) - 0.5) +
             np.sin(angle) * (rows / max(height - 1, 1) - 0.5))
    x = x * (1.0 + 2.0 * rng.uniform(-cfg.ramp, cfg.ramp) * along)[:, :, None]
    if cfg.blur_sigma > 0 and rng.random() < 0.5:
        x = cv2.GaussianBlur(x, (0, 0), float(rng.uniform(0.3, cfg.blur_sigma)))
    x = x * 255.0 + rng.normal(0.0, rng.uniform(0.0, cfg.noise), size=x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


class TrainTransform:
    """RGB uint8 (any size) -> [3, H, W] float32: resize to ``size`` (bilinear), augment
    (then, with ``condition``, a :func:`condition_change`), scale to [0, 1] and
    ImageNet-normalise with ``mean`` / ``std``."""

    def __init__(self, size: tuple[int, int], cfg: AugmentConfig,
                 mean: tuple[float, ...], std: tuple[float, ...],
                 condition: ConditionConfig | None = None) -> None:
        self.size, self.cfg, self.condition = tuple(size), cfg, condition
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        image = self._resized(image)
        if self.cfg.kind == 'randaugment':
            image = rand_augment(image, rng, self.cfg.num_ops, self.cfg.magnitude)
        elif self.cfg.kind == 'photometric':
            image = photometric(image, rng, self.cfg)
        if self.condition is not None and self.condition.probability > 0 and \
                rng.random() < self.condition.probability:
            image = condition_change(image, rng, self.condition)
        return self._normalised(image)

    def clean(self, image: np.ndarray) -> torch.Tensor:
        """The view without any augmentation: resized and normalised only."""
        return self._normalised(self._resized(image))

    def _resized(self, image: np.ndarray) -> np.ndarray:
        height, width = self.size
        if image.shape[:2] != (height, width):
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
        return image

    def _normalised(self, image: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        return (tensor - self.mean) / self.std


class TwoViewTransform(TrainTransform):
    """:class:`TrainTransform` that returns [2, 3, H, W]: the augmented view, then the clean
    one. The clean view draws nothing from ``rng``, so the augmented views are those a
    :class:`TrainTransform` with the same settings and generator gives."""

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        return torch.stack([super().__call__(image, rng), self.clean(image)])
