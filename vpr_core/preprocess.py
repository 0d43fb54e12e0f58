"""RGB uint8 images -> the normalised tensors the models expect.

The order is the seeds' test-time ``hard_resize``: convert to float in [0, 1], ImageNet-
normalise at the image's own size, THEN resize the tensor to ``test_size`` (bilinear, aspect
ratio not kept, antialias as configured). Resizing before normalising is the same in exact
arithmetic but not bit for bit, so we keep the published order.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vpr_core.errors import UnsupportedImageError
from vpr_core.model.config import PreprocessConfig


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an image and return it as [H, W, 3] uint8 (grayscale is repeated to 3 channels).

    Accepts [H, W] or [H, W, 1] grayscale and [H, W, 3] RGB, dtype uint8, H and W > 0.
    """
    if not isinstance(image, np.ndarray):
        raise UnsupportedImageError(f'expected a numpy array, got {type(image).__name__}')
    if image.dtype != np.uint8:
        raise UnsupportedImageError(f'expected dtype uint8 (RGB 0..255), got {image.dtype}')
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise UnsupportedImageError(f'expected [H, W, 3] RGB or [H, W] grayscale, got shape '
                                    f'{image.shape}')
    if image.shape[2] not in (1, 3):
        raise UnsupportedImageError(f'expected 1 or 3 channels, got {image.shape[2]} '
                                    '(convert RGBA/BGRA to RGB first)')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise UnsupportedImageError(f'empty image of shape {image.shape}')
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


def normalize(batch: torch.Tensor, cfg: PreprocessConfig) -> torch.Tensor:
    """[B, 3, H, W] float in [0, 1] -> ImageNet-normalised (mean/std of ``cfg``)."""
    mean = torch.tensor(cfg.mean, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=batch.dtype, device=batch.device).view(1, 3, 1, 1)
    return (batch - mean) / std


def resize(batch: torch.Tensor, size: tuple[int, int], *, antialias: bool) -> torch.Tensor:
    """[B, C, H, W] -> [B, C, size[0], size[1]], bilinear, half-pixel centres (no corner align)."""
    if tuple(batch.shape[-2:]) == tuple(size):
        return batch
    return F.interpolate(batch, size=tuple(size), mode='bilinear', align_corners=False,
                         antialias=antialias)


def preprocess_image(image: np.ndarray, cfg: PreprocessConfig, *,
                     size: tuple[int, int] | None = None,
                     device: torch.device | str = 'cpu') -> torch.Tensor:
    """One RGB uint8 image [H, W, 3] of any size -> [3, h, w] float32, (h, w) = ``size``.

    ``size`` defaults to ``cfg.test_size``. The uint8 pixels go to ``device`` first, so the
    float work runs there (4x less to copy to a GPU).
    """
    pixels = torch.from_numpy(np.ascontiguousarray(check_image(image))).to(device)
    batch = pixels.permute(2, 0, 1).unsqueeze(0).to(torch.float32).div_(255.0)
    out = resize(normalize(batch, cfg), size or cfg.test_size, antialias=cfg.antialias)
    return out[0]


def preprocess_batch(images: Sequence[np.ndarray], cfg: PreprocessConfig, *,
                     size: tuple[int, int] | None = None,
                     device: torch.device | str = 'cpu') -> torch.Tensor:
    """N RGB uint8 images (sizes may differ) -> [N, 3, h, w] float32 on ``device``.

    Images of one size are converted together; each is resized on its own, exactly as
    :func:`preprocess_image` would.
    """
    if len(images) == 0:
        raise UnsupportedImageError('expected at least one image, got an empty sequence')
    checked = [check_image(image) for image in images]
    if len({image.shape for image in checked}) == 1:
        pixels = torch.from_numpy(np.ascontiguousarray(np.stack(checked))).to(device)
        batch = pixels.permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
        return resize(normalize(batch, cfg), size or cfg.test_size, antialias=cfg.antialias)
    return torch.stack([preprocess_image(image, cfg, size=size, device=device)
                        for image in checked])
