"""Exact retrieval for evaluation: float L2, binary Hamming, and Hamming top-K + float re-rank.

These follow the seeds' evaluation code: ``IndexFlatL2`` on L2-normalised floats (cosine
ranking), ``IndexBinaryFlat`` on MSB-first packed codes, and re-ranking that re-orders only the
K Hamming candidates by float L2 distance (candidates outside the K are never recovered).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

from vpr_core.descriptors import Descriptors, RERANK_K, unpack_codes
from vpr_core.errors import ConfigError

Mode = Literal['float', 'hash', 'rerank']
MODES = ('float', 'hash', 'rerank')


@dataclass(frozen=True)
class Ranking:
    """``indices`` / ``distances``: [Q, K] best first; ``seconds``: stage -> per-query times."""

    indices: np.ndarray
    distances: np.ndarray
    seconds: dict[str, list[float]]


def check_mode(mode: str, database: Descriptors) -> None:
    """Raise ConfigError when ``database`` lacks what ``mode`` needs."""
    if mode not in MODES:
        raise ConfigError(f'unknown evaluation mode {mode!r} (valid: {", ".join(MODES)})')
    if mode in ('float', 'rerank') and database.floats is None:
        raise ConfigError(f'mode {mode!r} needs float descriptors; this model is hashing-only '
                          '(use --mode hash)')
    if mode in ('hash', 'rerank') and database.codes is None:
        raise ConfigError(f'mode {mode!r} needs binary codes; this model has no hashing branch '
                          '(use --mode float)')


def rank(database: Descriptors, queries: Descriptors, mode: Mode, k: int,
         rerank_k: int = RERANK_K, timed_queries: int = 200) -> Ranking:
    """Top-``k`` database indices of every query (``rerank``: top ``max(k, rerank_k)``).

    The first ``timed_queries`` queries are also searched one by one to time each stage.
    """
    check_mode(mode, database)
    k = max(1, min(k, len(database)))
    if mode == 'float':
        index = _float_index(database.floats)
        distances, indices = index.search(_f32(queries.floats), k)
        seconds = {'search': _time_each(lambda q: index.search(q, k), queries.floats,
                                        timed_queries)}
        return Ranking(indices, distances, seconds)
    index = _binary_index(database.codes)
    depth = k if mode == 'hash' else max(1, min(max(k, rerank_k), len(database)))
    distances, indices = index.search(np.ascontiguousarray(queries.codes), depth)
    seconds = {'search': _time_each(lambda q: index.search(q, depth), queries.codes,
                                    timed_queries)}
    if mode == 'hash':
        return Ranking(indices, distances.astype(np.float32), seconds)
    indices, distances = rerank(database.floats, queries.floats, indices)
    seconds['rerank'] = _time_each_pair(database.floats, queries.floats, indices, timed_queries)
    return Ranking(indices, distances, seconds)


def rerank(database: np.ndarray, queries: np.ndarray,
           candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-order ``candidates`` [Q, K] by squared L2 between float descriptors (stable)."""
    distances = np.empty(candidates.shape, dtype=np.float64)
    for start in range(0, len(candidates), 256):
        rows = slice(start, start + 256)
        gathered = database[candidates[rows]]                         # [q, K, D]
        distances[rows] = ((gathered - queries[rows, None, :]) ** 2).sum(-1)
    order = np.argsort(distances, axis=1, kind='stable')
    return (np.take_along_axis(candidates, order, axis=1),
            np.take_along_axis(distances, order, axis=1).astype(np.float32))


def distance_matrix(database: Descriptors, queries: Descriptors, mode: Mode,
                    rerank_k: int = RERANK_K) -> np.ndarray:
    """[Q, N] distances for sequence matching (lower is better).

    ``float``: squared L2; ``hash``: Hamming distance / bits; ``rerank``: squared L2 for the
    Hamming top-``rerank_k`` candidates and, elsewhere, the largest of those candidate
    distances in the row: the first stage ranked every other place below all of them, and
    its float distance was never computed. (The largest possible distance, 4, would let one
    frame whose true place missed the candidates sink a true trajectory; on the Nordland
    validation split it gave 3-frame sequence R@1 0.804 against 0.880.)
    """
    check_mode(mode, database)
    if mode == 'float':
        return _squared_l2(database.floats, queries.floats)
    bits = database.codes.shape[1] * 8
    hamming = _hamming(database.codes, queries.codes, bits)
    if mode == 'hash':
        return hamming / bits
    depth = max(1, min(rerank_k, len(database)))
    candidates = np.argsort(hamming, axis=1, kind='stable')[:, :depth]
    rows = np.arange(len(hamming))[:, None]
    reranked = _squared_l2(database.floats, queries.floats)[rows, candidates]
    matrix = np.repeat(reranked.max(axis=1, keepdims=True), hamming.shape[1], axis=1)
    matrix[rows, candidates] = reranked
    return matrix


def _squared_l2(database: np.ndarray, queries: np.ndarray) -> np.ndarray:
    return faiss.pairwise_distances(_f32(queries), _f32(database))


def _hamming(database: np.ndarray, queries: np.ndarray, bits: int) -> np.ndarray:
    db_signs = unpack_codes(database, bits)
    q_signs = unpack_codes(queries, bits)
    return ((bits - q_signs @ db_signs.T) / 2.0).astype(np.float32)


def _float_index(floats: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatL2(floats.shape[1])
    index.add(_f32(floats))
    return index


def _binary_index(codes: np.ndarray) -> faiss.IndexBinary:
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(np.ascontiguousarray(codes))
    return index


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _time_each(search, queries: np.ndarray, count: int) -> list[float]:
    times = []
    for i in range(min(count, len(queries))):
        start = time.perf_counter()
        search(np.ascontiguousarray(queries[i:i + 1]))
        times.append(time.perf_counter() - start)
    return times


def _time_each_pair(database: np.ndarray, queries: np.ndarray, candidates: np.ndarray,
                    count: int) -> list[float]:
    times = []
    for i in range(min(count, len(queries))):
        start = time.perf_counter()
        rerank(database, queries[i:i + 1], candidates[i:i + 1])
        times.append(time.perf_counter() - start)
    return times
