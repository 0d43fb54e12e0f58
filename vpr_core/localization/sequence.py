"""Sequence matching over a query-by-database matrix (SeqSLAM-style, speed-tolerant).

Milford and Wyeth, "SeqSLAM: Visual route-based navigation for sunny summer days and stormy
winter nights", ICRA 2012. A query is matched not alone but with the frames before it: for
every database place and every assumed speed (places per query frame) the distances along the
straight trajectory through the difference matrix are averaged, and the best trajectory wins.
The window trails the query (frames ``q - length + 1 .. q``), so the result is causal: a robot
gets the same answer online. Local contrast enhancement (SeqSLAM's ``D-hat``) normalises every
query row over a window of neighbouring places, so places that look like everything (tunnels,
blank walls) stop winning.
"""
from __future__ import annotations

import numpy as np

from vpr_core.errors import ConfigError

DEFAULT_VELOCITIES = (0.8, 0.9, 1.0, 1.1, 1.25)


def enhance_contrast(distances: np.ndarray, window: int) -> np.ndarray:
    """[Q, N] distances -> [Q, N], each row normalised by the local mean and standard deviation.

    The statistics of element ``(q, n)`` come from places ``n - window // 2 .. n + window // 2``
    of row ``q`` (clipped at the ends of the map).
    """
    distances = np.asarray(distances, dtype=np.float64)
    if window <= 1 or distances.size == 0:
        return distances.copy()
    num_places = distances.shape[1]
    half = window // 2
    padded = np.zeros((distances.shape[0], num_places + 1))
    padded_sq = np.zeros_like(padded)
    np.cumsum(distances, axis=1, out=padded[:, 1:])
    np.cumsum(distances ** 2, axis=1, out=padded_sq[:, 1:])
    lo = np.clip(np.arange(num_places) - half, 0, num_places)
    hi = np.clip(np.arange(num_places) + half + 1, 0, num_places)
    count = (hi - lo).astype(np.float64)
    mean = (padded[:, hi] - padded[:, lo]) / count
    var = (padded_sq[:, hi] - padded_sq[:, lo]) / count - mean ** 2
    return (distances - mean) / np.sqrt(np.maximum(var, 1e-12))


def sequence_score_matrix(matrix: np.ndarray, length: int, *,
                          velocities: tuple[float, ...] = DEFAULT_VELOCITIES,
                          similarity: bool = False, contrast_window: int = 0) -> np.ndarray:
    """[Q, N] per-frame distances (or similarities) -> [Q, N] sequence scores, same direction.

    Element ``(q, n)`` is the best, over ``velocities``, mean of the (contrast-enhanced) matrix
    along the trajectory ending at query ``q`` and place ``n``: frames ``q - t`` against places
    ``n - round(v * t)`` for ``t = 0 .. length - 1``. The first queries use the frames they
    have; trajectories running off the start of the database are not scored (unless none fits).
    ``length`` 1 returns the (enhanced) matrix.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2:
        raise ConfigError(f'expected a [Q, N] matrix, got shape {matrix.shape}')
    if length < 1:
        raise ConfigError(f'sequence length must be >= 1, got {length}')
    if not velocities or min(velocities) < 0:
        raise ConfigError(f'velocities must be non-empty and >= 0, got {velocities}')
    distances = enhance_contrast(-matrix if similarity else matrix, contrast_window)
    best = np.full(distances.shape, np.inf)
    for velocity in velocities:
        best = np.minimum(best, _trajectory_mean(distances, length, velocity))
    return -best if similarity else best


def sequence_match(matrix: np.ndarray, length: int, *,
                   velocities: tuple[float, ...] = DEFAULT_VELOCITIES, similarity: bool = False,
                   contrast_window: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Best place of every query after sequence matching.

    ``matrix``: [Q, N] distances (lower is better) or similarities (``similarity=True``).
    Returns ``(best_index [Q] int64, score [Q] float64)``; the score is the sequence score of
    the best place, in the direction of the input. An empty database gives index -1 and NaN.
    """
    scores = sequence_score_matrix(matrix, length, velocities=velocities,
                                   similarity=similarity, contrast_window=contrast_window)
    if scores.shape[1] == 0:
        return (np.full(scores.shape[0], -1, np.int64), np.full(scores.shape[0], np.nan))
    best = np.argmax(scores, axis=1) if similarity else np.argmin(scores, axis=1)
    return best.astype(np.int64), scores[np.arange(scores.shape[0]), best]


def _trajectory_mean(distances: np.ndarray, length: int, velocity: float) -> np.ndarray:
    """Mean along each trajectory; a trajectory that leaves the start of the database while
    the query window still has frames is invalid (inf), since fewer, noisier terms would
    favour it, unless a whole row has no complete trajectory."""
    num_queries, num_places = distances.shape
    total = np.zeros_like(distances)
    count = np.zeros_like(distances)
    for step in range(min(length, num_queries)):
        shift = int(round(velocity * step))
        if shift >= num_places:
            break
        total[step:, shift:] += distances[:num_queries - step, :num_places - shift]
        count[step:, shift:] += 1.0
    mean = total / np.maximum(count, 1.0)
    needed = np.minimum(np.arange(num_queries) + 1, length)[:, None]
    complete = count >= needed
    return np.where(complete | ~complete.any(axis=1, keepdims=True), mean, np.inf)
