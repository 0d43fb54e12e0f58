"""RGB uint8 images -> the normalised tensors the models expect.

The uint8 image is resized first, to ``test_size`` (aspect ratio not kept), then converted to
float in [0, 1] and ImageNet-normalised. The kernel is the seeds' (bilinear, half-pixel
centres, antialias as configured); only the order differs from their ``hard_resize``, which
normalises the full-size float image first. Both orders agree in exact arithmetic (the
normalisation is affine per channel); here the resized pixels are rounded to uint8 (OpenCV
also rounds its weights), which moves a pixel by at most one grey level, and a 640x480 frame
costs a fraction of a millisecond instead of several (``bench/preprocess.py``). On 106 real
photos the bundled model's descriptors stay above cosine 0.9997 of the published order's
(test_io_preprocess.py). :func:`preprocess_reference` keeps the published order.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vpr_core.errors import UnsupportedImageError
from vpr_core.image import check_rgb
from vpr_core.model.config import PreprocessConfig


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


def resize_pixels(image: np.ndarray, size: tuple[int, int], *,
                  antialias: bool) -> np.ndarray:
    """[H, W, 3] uint8 -> [size[0], size[1], 3] uint8, the bilinear kernel of :func:`resize`.

    Without antialias, OpenCV's INTER_LINEAR is that kernel (two taps, half-pixel centres).
    With antialias, torch's uint8 bilinear antialias keeps the configured triangle filter
    (OpenCV's INTER_AREA is a box filter: different pixels, and slower here).
    """
    height, width = int(size[0]), int(size[1])
    if image.shape[:2] == (height, width):
        return image
    if not antialias:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
    out = F.interpolate(pixels, size=(height, width), mode='bilinear', align_corners=False,
                        antialias=True)
    return out[0].permute(1, 2, 0).numpy()


def preprocess_image(image: np.ndarray, cfg: PreprocessConfig, *,
                     size: tuple[int, int] | None = None,
                     device: torch.device | str = 'cpu') -> torch.Tensor:
    """One RGB uint8 image [H, W, 3] of any size -> [3, h, w] float32, (h, w) = ``size``.

    ``size`` defaults to ``cfg.test_size``. The uint8 image is resized on the CPU, then the
    small uint8 image goes to ``device`` (4x less to copy to a GPU than floats) and the
    float work runs there.
    """
    return preprocess_batch([image], cfg, size=size, device=device)[0]


def preprocess_batch(images: Sequence[np.ndarray], cfg: PreprocessConfig, *,
                     size: tuple[int, int] | None = None,
                     device: torch.device | str = 'cpu') -> torch.Tensor:
    """N RGB uint8 images (sizes may differ) -> [N, 3, h, w] float32 on ``device``.

    Each image is resized on its own, so a row never depends on the others.
    """
    if len(images) == 0:
        raise UnsupportedImageError('expected at least one image, got an empty sequence')
    size = tuple(size or cfg.test_size)
    resized = [resize_pixels(check_rgb(image), size, antialias=cfg.antialias)
               for image in images]
    pixels = torch.from_numpy(np.ascontiguousarray(np.stack(resized))).to(device)
    batch = pixels.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
    # one in-place pass: x / 255 then (x - mean) / std, as x * scale - shift
    std = torch.tensor(cfg.std, dtype=torch.float64)
    scale = (1.0 / (255.0 * std)).to(torch.float32).view(1, 3, 1, 1).to(batch.device)
    shift = (torch.tensor(cfg.mean, dtype=torch.float64) / std).to(torch.float32)
    return batch.mul_(scale).sub_(shift.view(1, 3, 1, 1).to(batch.device))


def preprocess_reference(images: Sequence[np.ndarray], cfg: PreprocessConfig, *,
                         size: tuple[int, int] | None = None) -> torch.Tensor:
    """The seeds' published order (full-size float, normalise, resize the tensor) on the CPU:
    the reference that :func:`preprocess_batch` is tested against."""
    rows = []
    for image in images:
        pixels = torch.from_numpy(np.ascontiguousarray(check_rgb(image)))
        batch = pixels.permute(2, 0, 1).unsqueeze(0).to(torch.float32).div_(255.0)
        rows.append(resize(normalize(batch, cfg), size or cfg.test_size,
                           antialias=cfg.antialias)[0])
    return torch.stack(rows)
