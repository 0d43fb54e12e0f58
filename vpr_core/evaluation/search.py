"""Exact retrieval for ``vpr evaluate``: the node's own search, plus full distance matrices.

:func:`rank` runs :class:`~vpr_core.mapdb.index.PlaceIndex` (flat indexes: exact) in the mode
asked for, named as the node's modes (``hash`` is the deprecated name of ``binary``), so
single-frame figures come from the search the node runs: float cosine, binary Hamming (ties by
smaller place), or the Hamming top-``rerank_k`` re-ordered by the float descriptor (candidates
outside them are never recovered; ``rerank_k`` 0: the node's automatic depth).
:func:`distance_matrix` gives every query-place distance for offline sequence matching, from
the same Hamming and top-k kernels (:mod:`vpr_core.mapdb.kernels`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Literal

import faiss
import numpy as np

from vpr_core.descriptors import Descriptors, RERANK_K
from vpr_core.errors import ConfigError
from vpr_core.mapdb.index import PlaceIndex, rerank_depth, SearchConfig
from vpr_core.mapdb.kernels import hamming_distances, top_k_smallest

logger = logging.getLogger(__name__)

Mode = Literal['float', 'binary', 'rerank']
MODES = ('float', 'binary', 'rerank')          # the node's search modes, by the same names
# old names still accepted (a warning says the new one)
MODE_ALIASES = {'hash': 'binary'}
_warned: set[str] = set()


@dataclass(frozen=True)
class Ranking:
    """``indices`` / ``distances``: [Q, K] best first (squared L2 of the unit floats, or
    Hamming bits in ``binary`` mode); ``seconds``: stage -> per-query times."""

    indices: np.ndarray
    distances: np.ndarray
    seconds: dict[str, list[float]]


def evaluation_mode(mode: str) -> Mode:
    """``mode`` by its current name (``hash`` -> ``binary``, with a warning once)."""
    if mode in MODE_ALIASES:
        if mode not in _warned:
            _warned.add(mode)
            logger.warning("evaluation mode '%s' is deprecated; it is called '%s' now, as in "
                           "the node's localization.search.mode", mode, MODE_ALIASES[mode])
        return MODE_ALIASES[mode]
    if mode not in MODES:
        raise ConfigError(f'unknown evaluation mode {mode!r} (valid: {", ".join(MODES)})')
    return mode


def check_mode(mode: str, database: Descriptors) -> Mode:
    """``mode`` by its current name; ConfigError when ``database`` lacks what it needs."""
    mode = evaluation_mode(mode)
    if mode in ('float', 'rerank') and database.floats is None:
        raise ConfigError(f'mode {mode!r} needs float descriptors; this model is hashing-only '
                          '(use --mode binary)')
    if mode in ('binary', 'rerank') and database.codes is None:
        raise ConfigError(f'mode {mode!r} needs binary codes; this model has no hashing branch '
                          '(use --mode float)')
    return mode


def place_index(database: Descriptors, mode: Mode, k: int, rerank_k: int = RERANK_K
                ) -> PlaceIndex:
    """The exact (flat) :class:`PlaceIndex` over ``database`` that ``mode`` searches."""
    mode = check_mode(mode, database)
    floats = None if mode == 'binary' else database.floats
    codes = None if mode == 'float' else database.codes
    bits = 0 if codes is None else codes.shape[1] * 8
    config = SearchConfig(mode=mode, top_k=k, rerank_k=rerank_k, index='flat',
                          device='cpu')
    return PlaceIndex(floats, codes, bits, config)


def rank(database: Descriptors, queries: Descriptors, mode: Mode, k: int,
         rerank_k: int = RERANK_K, timed_queries: int = 200) -> Ranking:
    """Top-``k`` database indices of every query.

    The first ``timed_queries`` queries are also searched one by one to time each stage
    (``search``; in ``rerank`` mode ``search`` is the Hamming stage and ``rerank`` the float
    one).
    """
    k = max(1, min(k, len(database)))
    mode = check_mode(mode, database)
    index = place_index(database, mode, k, rerank_k)
    hits = index.search(queries, k)
    distances = hits.distances.astype(np.float32)
    if mode != 'rerank':
        seconds = {'search': _time_each(lambda i: index.search(queries[i:i + 1], k),
                                        min(timed_queries, len(queries)))}
        return Ranking(hits.indices, distances, seconds)
    depth = max(k, index.rerank_depth())
    stages: dict[str, list[float]] = {'search': [], 'rerank': []}
    for i in range(min(timed_queries, len(queries))):
        tic = time.perf_counter()
        candidates, _ = index.binary_candidates(queries.codes[i:i + 1], depth, ordered=False)
        middle = time.perf_counter()
        index.rerank(queries.floats[i:i + 1], candidates, k)
        stages['search'].append(middle - tic)
        stages['rerank'].append(time.perf_counter() - middle)
    return Ranking(hits.indices, distances, stages)


def distance_matrix(database: Descriptors, queries: Descriptors, mode: Mode,
                    rerank_k: int = RERANK_K) -> np.ndarray:
    """[Q, N] distances for sequence matching (lower is better).

    ``float``: squared L2; ``binary``: Hamming distance / bits; ``rerank``: squared L2 for the
    Hamming top-``rerank_k`` candidates (0: the node's automatic depth) and, elsewhere, the
    largest of those candidate distances in the row: the first stage ranked every other place
    below all of them, and its float distance was never computed. (The largest possible
    distance, 4, would let one frame whose true place missed the candidates sink a true
    trajectory; on the Nordland validation split it gave 3-frame sequence R@1 0.804 against
    0.880.)
    """
    mode = check_mode(mode, database)
    if mode == 'float':
        return _squared_l2(database.floats, queries.floats)
    bits = database.codes.shape[1] * 8
    hamming = hamming_distances(queries.codes, database.codes)
    if mode == 'binary':
        return (hamming / bits).astype(np.float32)
    depth = max(1, min(rerank_k or rerank_depth(bits, len(database)), len(database)))
    candidates = top_k_smallest(hamming, depth)
    rows = np.arange(len(hamming))[:, None]
    reranked = _squared_l2(database.floats, queries.floats)[rows, candidates]
    matrix = np.repeat(reranked.max(axis=1, keepdims=True), hamming.shape[1], axis=1)
    matrix[rows, candidates] = reranked
    return matrix


def _squared_l2(database: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """[Q, N] squared L2 of every pair (faiss's all-pairs kernel; a search needs no matrix)."""
    return faiss.pairwise_distances(_f32(queries), _f32(database))


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _time_each(search, count: int) -> list[float]:
    times = []
    for i in range(count):
        start = time.perf_counter()
        search(i)
        times.append(time.perf_counter() - start)
    return times
