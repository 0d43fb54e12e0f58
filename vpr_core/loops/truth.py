"""Ground truth of loop closures in one stream, and the precision / recall of accepted loops.

Two forms are read (:func:`read_truth`), both in 0-based stream indices:

- an N x N same-place matrix image (BMP, PNG, ...; RTAB-Map's ``samples_GT.bmp`` convention):
  pixel (row r, column c) non-zero when frame r shows the place of frame c; only pairs with
  r != c count, either triangle (the matrix is made symmetric);
- a CSV of pairs: two integer columns (a header such as ``query,match`` is skipped), one
  same-place pair per line, either order.

Scores (:func:`score_loops`): ``precision`` = correct accepted loops / accepted loops;
``recall`` = frames with a true loop (a same-place partner earlier in the stream) that got
at least one correct accepted loop / frames with a true loop.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from vpr_core.errors import ConfigError

_IMAGE_SUFFIXES = ('.bmp', '.png', '.pgm', '.tif', '.tiff')


def read_truth(path: str | Path, count: int) -> np.ndarray:
    """[count, count] bool symmetric same-place matrix of a stream of ``count`` frames."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f'ground truth not found: {path}')
    if path.suffix.lower() in _IMAGE_SUFFIXES:
        matrix = _read_matrix(path)
    elif path.suffix.lower() in ('.csv', '.txt'):
        matrix = _read_pairs(path, count)
    else:
        raise ConfigError(f'ground truth {path}: unknown kind (an N x N matrix image '
                          f"{', '.join(_IMAGE_SUFFIXES)} or a CSV of pairs)")
    if matrix.shape != (count, count):
        raise ConfigError(f'ground truth {path} is {matrix.shape[0]} x {matrix.shape[1]}, but '
                          f'the stream has {count} frames')
    matrix = matrix | matrix.T
    np.fill_diagonal(matrix, False)
    return matrix


def _read_matrix(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ConfigError(f'ground truth image {path} cannot be read')
    if image.shape[0] != image.shape[1]:
        raise ConfigError(f'ground truth image {path} must be square (N x N), got '
                          f'{image.shape[0]} x {image.shape[1]}')
    return image > 0


def _read_pairs(path: Path, count: int) -> np.ndarray:
    matrix = np.zeros((count, count), dtype=bool)
    with open(path, newline='', encoding='utf-8') as handle:
        for number, row in enumerate(csv.reader(handle), start=1):
            if not row or not ''.join(row).strip() or row[0].lstrip().startswith('#'):
                continue
            try:
                a, b = int(row[0]), int(row[1])
            except (ValueError, IndexError) as exc:
                if number == 1:
                    continue            # a header
                raise ConfigError(f'ground truth {path} line {number}: expected two frame '
                                  f'indices, got {row}') from exc
            if not (0 <= a < count and 0 <= b < count):
                raise ConfigError(f'ground truth {path} line {number}: pair ({a}, {b}) is '
                                  f'outside the stream of {count} frames (0-based indices)')
            matrix[a, b] = True
    return matrix


def score_loops(loops: Sequence[tuple[int, int]], truth: np.ndarray,
                frames: Sequence[int] | None = None) -> dict:
    """Precision and recall of accepted (query, match) stream-index pairs against ``truth``.

    ``frames``: the stream indices that were processed (default: all); a frame with a true
    loop that was skipped (undecodable) still counts as one to find.
    """
    count = len(truth)
    earlier = np.tril(truth, k=-1)                   # partner before the frame
    with_loop = np.flatnonzero(earlier.any(axis=1))
    correct = [bool(truth[q, m]) for q, m in loops]
    found = {q for (q, _), ok in zip(loops, correct) if ok}
    accepted = len(loops)
    processed = count if frames is None else len(frames)
    return {
        'frames': int(count), 'frames_processed': int(processed),
        'frames_with_true_loop': int(len(with_loop)), 'true_pairs': int(earlier.sum()),
        'accepted': int(accepted), 'correct': int(sum(correct)),
        'wrong': int(accepted - sum(correct)),
        'precision': float(sum(correct) / accepted) if accepted else None,
        'recall': float(len(found) / len(with_loop)) if len(with_loop) else None,
        'frames_found': int(len(found)),
    }
