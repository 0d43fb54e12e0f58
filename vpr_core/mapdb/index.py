"""Nearest-place search: binary Hamming top-K, float re-rank, float-only, and numpy reference.

The arithmetic (Hamming distances, top-k selection, the re-rank's gather and dot products) is
in :mod:`~vpr_core.mapdb.kernels`, shared with ``vpr evaluate``; the faiss binary indexes
(flat, IVF, HNSW, GPU) and how an approximate one is stored with its map are in
:mod:`~vpr_core.mapdb.approximate`. The numpy path computes the same exact results without
faiss and is the reference the tests compare against.

An approximate index can be kept with its map (:class:`PlaceIndex` ``store``, see
:meth:`~vpr_core.mapdb.database.MapDatabase.index`): loaded instead of rebuilt when its
parameters match; bytes that do not deserialise into an index of those parameters over this
map are rebuilt with a warning.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from vpr_core.descriptors import Descriptors, RERANK_K
from vpr_core.errors import ConfigError, MapError
from vpr_core.mapdb import approximate
from vpr_core.mapdb.approximate import approximate_params, deserialize_binary, IndexStore
from vpr_core.mapdb.kernels import (as_float32, as_table, best_scores, candidate_scores,
                                    canonical, hamming_distances, threads_for,
                                    top_k_smallest)
from vpr_core.mapdb.search_config import (MODES, resolve_mode, SearchConfig,  # noqa: F401
                                          structure_key)

logger = logging.getLogger(__name__)

# Share of the map re-ranked at 256 bits, and its halving per doubling of the code length
# (bench/rerank_depth.py, the bundled model's descriptors of Nordland: at 10% of a 5342-place
# map the hashed path keeps 97% of the correct float top-1s, 94% of all float top-1s; the
# Hamming rank of the float top-1 shrinks 1.5x (p99) to 3.6x (median) per doubling of bits).
_RERANK_SHARE_256 = 0.1
_RERANK_BITS_EXPONENT = 1.0


@dataclass(frozen=True)
class SearchHits:
    """Ranked hits of Q queries: ``indices`` [Q, K] map rows (-1 where an approximate index
    found fewer), ``scores`` [Q, K] higher is better (cosine, or 1 - 2 h / bits for codes),
    ``distances`` [Q, K] lower is better (squared L2 of unit floats, or Hamming bits)."""

    indices: np.ndarray
    scores: np.ndarray
    distances: np.ndarray
    metric: str


def rerank_depth(code_bits: int, num_places: int) -> int:
    """Hamming candidates to re-rank so that the float top-1 is among them (``rerank_k`` 0).

    The float top-1's Hamming rank grows in proportion to the map (a fixed share of the
    places look closer in Hamming space than it), and shrinks as codes get longer. The depth
    is the larger of :data:`RERANK_K` (what every map used before, so maps under 2,000
    places at 256 bits search as they did) and 10% of the map at 256 bits, 5% at 512: the
    share at which the bundled model's codes keep R@1 within one point of its float
    descriptor on Nordland (``bench/rerank_depth.py``). Codes that follow their float branch
    more closely than the bundled model's can use a fixed ``rerank_k``.
    """
    if num_places <= 0:
        return 0
    share = _RERANK_SHARE_256 * (256.0 / max(int(code_bits), 64)) ** _RERANK_BITS_EXPONENT
    depth = max(RERANK_K, int(np.ceil(share * num_places)))
    return int(min(depth, num_places))


class PlaceIndex:
    """Searchable view of a map's descriptors.

    ``floats``: [N, D] float32/float16 L2-normalised, or None; ``codes``: [N, bits / 8] uint8
    packed codes, or None; ``store``: where an approximate (ivf, hnsw) binary index of these
    codes is loaded from instead of built, and saved to after a build (None: always built);
    ``loaded`` says which happened.
    """

    def __init__(self, floats: np.ndarray | None, codes: np.ndarray | None, code_bits: int,
                 config: SearchConfig = SearchConfig(), store: IndexStore | None = None
                 ) -> None:
        self.floats = floats
        self.codes = codes
        self.code_bits = int(code_bits)
        self.config = config
        self.mode = resolve_mode(config.mode, floats is not None, codes is not None)
        self.size = len(floats) if floats is not None else len(codes)
        self._binary = None
        self._float = None
        self._float32: np.ndarray | None = None
        self._table = None
        self.kind = 'flat' if self.mode == 'float' else approximate.index_kind(config, self.size)
        self.loaded = False         # the approximate index came from ``store``
        if self.size and config.backend == 'faiss':
            self._build_faiss(store)

    def search(self, queries: Descriptors, k: int | None = None,
               config: SearchConfig | None = None) -> SearchHits:
        """Top-``k`` places for every query, best first. ``config`` may change the query-time
        settings (``top_k``, ``rerank_k``, ``ivf_nprobe``, ``hnsw_ef_search``) of this index."""
        config = config or self.config
        k = config.top_k if k is None else int(k)
        if k < 1:
            raise ConfigError(f'top_k must be >= 1, got {k}')
        count = len(queries)
        if self.size == 0 or count == 0:
            empty = np.zeros((count, 0))
            return SearchHits(empty.astype(np.int64), empty, empty, self._metric())
        if self.mode == 'float':
            return self._search_float(_require(queries.floats, 'floats'), k)
        codes = _require(queries.codes, 'codes')
        depth = max(k, self.rerank_depth(config)) if self.mode == 'rerank' else k
        self._tune(config)
        indices, hamming = self.binary_candidates(codes, depth, ordered=self.mode == 'binary')
        if self.mode == 'binary':
            scores = np.where(indices >= 0, 1.0 - 2.0 * hamming / self.code_bits, -np.inf)
            return SearchHits(indices, scores, hamming.astype(np.float64), 'hamming')
        return self.rerank(_require(queries.floats, 'floats'), indices, k)

    def rerank_depth(self, config: SearchConfig | None = None) -> int:
        """Hamming candidates re-ranked per query under ``config`` (this index's own if None)."""
        rerank_k = (config or self.config).rerank_k
        if rerank_k < 0:
            raise ConfigError(f'rerank_k must be >= 0 (0: automatic), got {rerank_k}')
        return int(rerank_k) if rerank_k else rerank_depth(self.code_bits, self.size)

    def _tune(self, config: SearchConfig) -> None:
        if self.kind == 'ivf' and self._binary is not None:
            self._binary.nprobe = config.ivf_nprobe
        elif self.kind == 'hnsw' and self._binary is not None:
            self._binary.hnsw.efSearch = config.hnsw_ef_search

    def _metric(self) -> str:
        return 'hamming' if self.mode == 'binary' else 'cosine'

    def _build_faiss(self, store: IndexStore | None) -> None:
        import faiss
        gpu = approximate.gpu_resources(self.config.device)
        if self.mode == 'float':
            index = faiss.IndexFlatIP(self.floats.shape[1])
            index.add(np.ascontiguousarray(self.floats, dtype=np.float32))
            self._float = faiss.index_cpu_to_gpu(gpu, 0, index) if gpu is not None else index
            return
        if store is None or self.kind == 'flat':
            self._binary = approximate.build_binary(faiss, self.codes, self.code_bits,
                                                    self.kind, self.config, gpu)
            return
        params = approximate_params(self.kind, self.config, self.size, self.code_bits)
        data = store.load(params)
        if data is not None:
            try:
                self._binary = deserialize_binary(faiss, data, params)
                self.loaded = True
                logger.info('loaded the stored binary %s index of %d places', self.kind,
                            self.size)
                return
            except MapError as exc:
                logger.warning('%s; rebuilding it', exc)
        self._binary = approximate.build_binary(faiss, self.codes, self.code_bits, self.kind,
                                                self.config, gpu)
        store.save(params, faiss.serialize_index_binary(self._binary).tobytes())

    def binary_candidates(self, codes: np.ndarray, depth: int, *,
                          ordered: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The first stage: [Q, depth] map rows of the Hamming top-``depth`` and their
        distances, ordered by (distance, row); ``ordered`` False: the same set, any order."""
        depth = min(depth, self.size)
        codes = np.ascontiguousarray(codes, dtype=np.uint8)
        if self._binary is None:
            distances = hamming_distances(codes, self.codes)
            indices = top_k_smallest(distances, depth)
            return indices.astype(np.int64), np.take_along_axis(distances, indices, axis=1)
        if self.kind == 'flat' and hasattr(self._binary, 'use_heap'):     # CPU flat index
            # faiss's counting selection beats its heap from a few dozen results on (2x at
            # 200, 5x at 100k); equal below
            self._binary.use_heap = depth <= 32
        with threads_for(len(codes)):
            distances, indices = self._binary.search(codes, depth)
        if not ordered:
            return indices.astype(np.int64), distances
        return canonical(indices.astype(np.int64), distances.astype(np.int64))

    def _search_float(self, floats: np.ndarray, k: int) -> SearchHits:
        k = min(k, self.size)
        floats = np.ascontiguousarray(floats, dtype=np.float32)
        if self._float is None:
            scores = floats @ self._float32_rows().T          # a view: no copy of the map
            indices = top_k_smallest(-scores, k).astype(np.int64)
            scores = np.take_along_axis(scores, indices, axis=1)
        else:
            with threads_for(len(floats)):
                scores, indices = self._float.search(floats, k)
            indices, negative = canonical(indices.astype(np.int64), -scores.astype(np.float64))
            scores = -negative
        scores = scores.astype(np.float64)
        return SearchHits(indices, scores, np.maximum(2.0 - 2.0 * scores, 0.0), 'cosine')

    def _rerank_table(self):
        if self._table is None:
            self._table = as_table(self.floats)
        return self._table

    def _float32_rows(self) -> np.ndarray:
        """The map floats as float32, converted once (what faiss's flat index holds too)."""
        if self._float32 is None:
            self._float32 = self.floats if self.floats.dtype == np.float32 else \
                as_float32(self.floats)
        return self._float32

    def rerank(self, floats: np.ndarray, candidates: np.ndarray, k: int) -> SearchHits:
        """The second stage: the best ``k`` of each query's ``candidates`` [Q, C] map rows
        (-1: none) by float similarity, ties by smaller row."""
        k = min(k, candidates.shape[1])
        indices = np.full((len(candidates), k), -1, dtype=np.int64)
        scores = np.full((len(candidates), k), -np.inf)
        table = self._rerank_table()
        for row, ids in enumerate(candidates):
            if (ids < 0).any():         # an approximate index found fewer
                ids = ids[ids >= 0]
            values = candidate_scores(table, ids, floats[row])
            best = best_scores(values, ids, k)
            indices[row, :len(best)] = ids[best]
            scores[row, :len(best)] = values[best]
        return SearchHits(indices, scores, np.maximum(2.0 - 2.0 * scores, 0.0), 'cosine')


def _require(array: np.ndarray | None, what: str) -> np.ndarray:
    if array is None:
        raise MapError(f'the queries have no {what}, but the search mode needs them')
    return array
