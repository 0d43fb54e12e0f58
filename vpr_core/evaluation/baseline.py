"""Reference baseline that needs no weights: patch-normalised raw pixels (SeqSLAM's front end).

Milford and Wyeth, "SeqSLAM: Visual route-based navigation for sunny summer days and stormy
winter nights", ICRA 2012: grey, down-sampled images whose small patches are normalised to zero
mean and unit variance, compared by the mean absolute difference. Every evaluation report shows
it next to the model, so one sees how far above a trivial method the model is.
"""
from __future__ import annotations

from typing import Iterable

import cv2
import faiss
import numpy as np

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


def pixel_distances(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """[Q, N] mean absolute difference between patch-normalised pixel vectors."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    database = np.ascontiguousarray(database, dtype=np.float32)
    total = faiss.pairwise_distances(queries, database, faiss.METRIC_L1)
    return total / max(queries.shape[1], 1)


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
