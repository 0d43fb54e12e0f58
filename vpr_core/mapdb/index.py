"""Nearest-place search: binary Hamming top-K, float re-rank, float-only, and numpy reference.

faiss facts this relies on: binary indexes store d bits as d / 8 bytes and return int32
Hamming distances; only the flat binary index has a GPU version (``GpuIndexBinaryFlat``,
built by hand because ``index_cpu_to_gpu`` does not take binary indexes); ``IndexBinaryIVF``
and ``IndexBinaryHNSW`` are the approximate indexes for large maps. The numpy path computes
the same exact results without faiss and is the reference the tests compare against.

An approximate index can be kept with its map (:class:`PlaceIndex` ``store``, see
:meth:`~vpr_core.mapdb.database.MapDatabase.index`): it is described by
:func:`approximate_params`, stored as faiss's serialised bytes and loaded instead of rebuilt
(IVF takes 9-23 s at 1 M places) when the parameters match; bytes that do not deserialise
into an index of those parameters over this map are rebuilt with a warning.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import warnings
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from vpr_core.descriptors import Descriptors, RERANK_K
from vpr_core.errors import ConfigError, MapError

logger = logging.getLogger(__name__)

MODES = ('auto', 'rerank', 'binary', 'float')
_CHUNK_BYTES = 64 << 20
# Share of the map re-ranked at 256 bits, and its halving per doubling of the code length
# (bench/rerank_depth.py, the bundled model's descriptors of Nordland: at 10% of a 5342-place
# map the hashed path keeps 97% of the correct float top-1s, 94% of all float top-1s; the
# Hamming rank of the float top-1 shrinks 1.5x (p99) to 3.6x (median) per doubling of bits).
_RERANK_SHARE_256 = 0.1
_RERANK_BITS_EXPONENT = 1.0
# Below this many queries faiss runs on the calling thread only: OpenMP fan-out over one
# query costs more than it saves and spins badly on a loaded CPU.
_PARALLEL_FROM = 16
_RERANK_CHUNK_BYTES = 1 << 21
_LOCAL = threading.local()


@dataclass(frozen=True)
class SearchConfig:
    """How a map is searched.

    ``mode``: ``rerank`` (Hamming top-``rerank_k``, then float re-rank), ``binary``, ``float``
    or ``auto`` (rerank when the map has codes and floats, else what it has). ``index``:
    ``flat`` (exact), ``hnsw`` / ``ivf`` (approximate, binary only) or ``auto`` (flat below
    ``approximate_from`` places, else ivf). ``rerank_k`` 0 (default): :func:`rerank_depth`
    of the code length and map size, which keeps the float top-1 as the map grows. Exact
    search stays the default up to 2 M places: with queries far from their place in Hamming
    space (seasons, viewpoint) the approximate indexes lose recall (``bench/retrieval.py``),
    while a flat 512-bit scan of 1 M places takes a few milliseconds on one core.
    ``ivf_nlist`` 0: min(4 sqrt(N), 1024). ``device``: ``auto`` uses a CUDA faiss
    (``GpuIndexBinaryFlat``) when present.
    """

    mode: Literal['auto', 'rerank', 'binary', 'float'] = 'auto'
    top_k: int = 10
    rerank_k: int = 0
    index: Literal['auto', 'flat', 'hnsw', 'ivf'] = 'auto'
    approximate_from: int = 2_000_000
    hnsw_m: int = 32
    hnsw_ef_search: int = 128
    hnsw_ef_construction: int = 40
    ivf_nlist: int = 0
    ivf_nprobe: int = 64
    backend: Literal['faiss', 'numpy'] = 'faiss'
    device: Literal['auto', 'cpu', 'cuda'] = 'auto'


@dataclass(frozen=True)
class SearchHits:
    """Ranked hits of Q queries: ``indices`` [Q, K] map rows (-1 where an approximate index
    found fewer), ``scores`` [Q, K] higher is better (cosine, or 1 - 2 h / bits for codes),
    ``distances`` [Q, K] lower is better (squared L2 of unit floats, or Hamming bits)."""

    indices: np.ndarray
    scores: np.ndarray
    distances: np.ndarray
    metric: str


class IndexStore(Protocol):
    """Where built approximate indexes are kept: ``load`` gives the bytes stored for exactly
    ``params`` (None: none, or they are stale and the store said so), ``save`` keeps them."""

    def load(self, params: dict) -> bytes | None: ...

    def save(self, params: dict, data: bytes) -> None: ...


def structure_key(config: SearchConfig) -> SearchConfig:
    """``config`` without its query-time settings: configs with equal keys share an index."""
    return dataclasses.replace(config, top_k=1, rerank_k=1, ivf_nprobe=1, hnsw_ef_search=1)


def hamming_distances(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """[Q, B] x [N, B] packed uint8 codes -> [Q, N] int32 Hamming distances (numpy only)."""
    queries = np.ascontiguousarray(queries, dtype=np.uint8)
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if queries.shape[1] % 8 == 0:
        queries, codes = queries.view(np.uint64), codes.view(np.uint64)
    out = np.empty((len(queries), len(codes)), dtype=np.int32)
    rows = max(1, _CHUNK_BYTES // max(1, queries.shape[1] * 8 * max(1, len(queries))))
    for start in range(0, len(codes), rows):
        xor = np.bitwise_xor(queries[:, None, :], codes[None, start:start + rows, :])
        out[:, start:start + rows] = np.bitwise_count(xor).sum(axis=2, dtype=np.int32)
    return out


def top_k_smallest(values: np.ndarray, k: int) -> np.ndarray:
    """[Q, N] -> [Q, min(k, N)] column indices of the k smallest values, ties by index.

    A partition per row, then a stable sort of the few values at or below the k-th one: the
    result of a stable full argsort in O(N) instead of O(N log N).
    """
    k = min(k, values.shape[1])
    if k == 0 or 4 * k >= values.shape[1]:
        return np.argsort(values, axis=1, kind='stable')[:, :k]
    out = np.empty((values.shape[0], k), dtype=np.int64)
    for row, line in enumerate(values):
        kth = np.partition(line, k - 1)[k - 1]
        kept = np.flatnonzero(line <= kth)
        out[row] = kept[np.argsort(line[kept], kind='stable')[:k]]
    return out


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


def resolve_mode(mode: str, has_floats: bool, has_codes: bool) -> str:
    """The concrete search mode for a map holding floats and/or codes."""
    if mode not in MODES:
        raise ConfigError(f"search mode '{mode}' is unknown (valid: {', '.join(MODES)})")
    if mode == 'auto':
        return 'rerank' if has_floats and has_codes else 'float' if has_floats else 'binary'
    needs = {'rerank': (has_floats and has_codes, 'floats and codes'),
             'binary': (has_codes, 'codes'), 'float': (has_floats, 'floats')}
    ok, what = needs[mode]
    if not ok:
        held = [name for name, kept in (('floats', has_floats), ('codes', has_codes)) if kept]
        raise ConfigError(f"search mode '{mode}' needs {what}; the map holds "
                          f"{' and '.join(held) or 'nothing'}")
    return mode


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
        self.kind = 'flat' if self.mode == 'float' else _index_kind(config, self.size)
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
        indices, hamming = self._search_binary(codes, depth, ordered=self.mode == 'binary')
        if self.mode == 'binary':
            scores = np.where(indices >= 0, 1.0 - 2.0 * hamming / self.code_bits, -np.inf)
            return SearchHits(indices, scores, hamming.astype(np.float64), 'hamming')
        return self._rerank(_require(queries.floats, 'floats'), indices, k)

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
        gpu = _gpu_resources(self.config.device)
        if self.mode == 'float':
            index = faiss.IndexFlatIP(self.floats.shape[1])
            index.add(np.ascontiguousarray(self.floats, dtype=np.float32))
            self._float = faiss.index_cpu_to_gpu(gpu, 0, index) if gpu is not None else index
            return
        if store is None or self.kind == 'flat':
            self._binary = _build_binary(faiss, self.codes, self.code_bits, self.kind,
                                         self.config, gpu)
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
        self._binary = _build_binary(faiss, self.codes, self.code_bits, self.kind,
                                     self.config, gpu)
        store.save(params, faiss.serialize_index_binary(self._binary).tobytes())

    def _search_binary(self, codes: np.ndarray, depth: int, *,
                       ordered: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Hamming top-``depth`` [Q, depth]; ``ordered`` False: the same set, any order."""
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
        with _threads_for(len(codes)):
            distances, indices = self._binary.search(codes, depth)
        if not ordered:
            return indices.astype(np.int64), distances
        return _canonical(indices.astype(np.int64), distances.astype(np.int64))

    def _search_float(self, floats: np.ndarray, k: int) -> SearchHits:
        k = min(k, self.size)
        floats = np.ascontiguousarray(floats, dtype=np.float32)
        if self._float is None:
            scores = floats @ self._float32_rows().T          # a view: no copy of the map
            indices = top_k_smallest(-scores, k).astype(np.int64)
            scores = np.take_along_axis(scores, indices, axis=1)
        else:
            with _threads_for(len(floats)):
                scores, indices = self._float.search(floats, k)
            indices, negative = _canonical(indices.astype(np.int64), -scores.astype(np.float64))
            scores = -negative
        scores = scores.astype(np.float64)
        return SearchHits(indices, scores, np.maximum(2.0 - 2.0 * scores, 0.0), 'cosine')

    def _rerank_table(self):
        if self._table is None:
            self._table = _as_table(self.floats)
        return self._table

    def _float32_rows(self) -> np.ndarray:
        """The map floats as float32, converted once (what faiss's flat index holds too)."""
        if self._float32 is None:
            self._float32 = self.floats if self.floats.dtype == np.float32 else \
                _as_float32(self.floats)
        return self._float32

    def _rerank(self, floats: np.ndarray, candidates: np.ndarray, k: int) -> SearchHits:
        """Candidate rows gathered in cache-sized chunks, one matrix-vector product each."""
        floats = np.asarray(floats, dtype=np.float32)
        k = min(k, candidates.shape[1])
        indices = np.full((len(candidates), k), -1, dtype=np.int64)
        scores = np.full((len(candidates), k), -np.inf)
        for row, (query, ids) in enumerate(zip(floats, candidates)):
            ids = ids[ids >= 0]
            values = _candidate_scores(self._rerank_table(), ids, query)
            best = _best_scores(values, ids, k)
            indices[row, :len(best)] = ids[best]
            scores[row, :len(best)] = values[best]
        return SearchHits(indices, scores, np.maximum(2.0 - 2.0 * scores, 0.0), 'cosine')


def _candidate_scores(table, ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    """[len(ids)] dot products of ``query`` with the map rows ``ids``, float32 accumulation.

    ``table`` is the map's float rows as a torch tensor sharing their memory. Rows are
    gathered and converted into two per-thread buffers of about 2 MB, so a deep re-rank
    (100k rows at 1 M places) streams through the cache instead of allocating (and
    page-faulting) a copy of every candidate; torch converts float16 10x faster than numpy.
    """
    import torch
    dim = int(table.shape[1])
    rows = max(64, _RERANK_CHUNK_BYTES // (4 * dim))
    gathered, converted = _buffers(rows, dim, table.dtype)
    index = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))
    vector = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    out = torch.empty(len(ids), dtype=torch.float32)
    for start in range(0, len(ids), rows):
        count = min(rows, len(ids) - start)
        torch.index_select(table, 0, index[start:start + count], out=gathered[:count])
        if converted is not gathered:
            converted[:count].copy_(gathered[:count])
        torch.mv(converted[:count], vector, out=out[start:start + count])
    return out.numpy().astype(np.float64)


def _buffers(rows: int, dim: int, dtype) -> tuple:
    """Per-thread (gather buffer of the map's dtype, float32 buffer) of ``rows`` x ``dim``."""
    import torch
    key = (rows, dim, dtype)
    cached = getattr(_LOCAL, 'buffers', None)
    if cached is None or cached[0] != key:
        gathered = torch.empty((rows, dim), dtype=dtype)
        converted = gathered if dtype == torch.float32 else \
            torch.empty((rows, dim), dtype=torch.float32)
        _LOCAL.buffers = cached = (key, gathered, converted)
    return cached[1], cached[2]


def _as_table(floats: np.ndarray):
    """The map floats as a torch tensor over the same memory (float16/32; others converted)."""
    import torch
    if floats.dtype not in (np.float16, np.float32):
        floats = floats.astype(np.float32)
    floats = np.ascontiguousarray(floats)
    with warnings.catch_warnings():
        # a read-only memory map: the tensor is only ever read
        warnings.filterwarnings('ignore', message='.*not writable.*')
        return torch.from_numpy(floats)


def _best_scores(values: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest ``values``, best first, ties by smaller place id."""
    k = min(k, len(values))
    if k < len(values):
        kth = np.partition(values, len(values) - k)[len(values) - k]
        kept = np.flatnonzero(values >= kth)
    else:
        kept = np.arange(len(values))
    return kept[np.lexsort((ids[kept], -values[kept]))[:k]]


def _index_kind(config: SearchConfig, size: int) -> str:
    kinds = ('auto', 'flat', 'hnsw', 'ivf')
    if config.index not in kinds:
        raise ConfigError(f"index kind '{config.index}' is unknown (valid: {', '.join(kinds)})")
    if config.index == 'auto':
        return 'ivf' if size >= config.approximate_from else 'flat'
    return config.index


def approximate_params(kind: str, config: SearchConfig, size: int, bits: int) -> dict:
    """What an approximate binary index of ``kind`` over ``size`` codes is built with: a
    stored index is used only for equal parameters."""
    if kind == 'hnsw':
        return {'kind': kind, 'code_bits': int(bits), 'size': int(size),
                'hnsw_m': int(config.hnsw_m),
                'hnsw_ef_construction': int(config.hnsw_ef_construction)}
    if kind == 'ivf':
        nlist = _ivf_nlist(config, size)
        return {'kind': kind, 'code_bits': int(bits), 'size': int(size), 'ivf_nlist': nlist,
                'train_sample': int(min(64 * nlist, size)), 'train_seed': 0}
    raise ConfigError(f"index kind '{kind}' is not approximate (valid: hnsw, ivf)")


def deserialize_binary(faiss, data: bytes, params: dict):
    """The binary index in ``data`` (faiss's serialised form); :class:`MapError` unless it
    is an index of exactly ``params``."""
    try:
        index = faiss.deserialize_index_binary(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as exc:
        raise MapError(f"the stored {params['kind']} index cannot be read ({exc})") from exc
    kind = params['kind']
    expected = faiss.IndexBinaryIVF if kind == 'ivf' else faiss.IndexBinaryHNSW
    shape = (params['code_bits'], params['size'])
    fits = isinstance(index, expected) and (index.d, index.ntotal) == shape and \
        (kind != 'ivf' or index.nlist == params['ivf_nlist'])
    if not fits:
        raise MapError(f'the stored {kind} index does not match its parameters {params}')
    return index


def _ivf_nlist(config: SearchConfig, size: int) -> int:
    nlist = config.ivf_nlist or int(min(4 * np.sqrt(size), 1024, size // 39))
    return max(1, min(nlist, size))


def _build_binary(faiss, codes: np.ndarray, bits: int, kind: str, config: SearchConfig, gpu):
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if kind == 'flat':
        index = faiss.GpuIndexBinaryFlat(gpu, bits) if gpu is not None else \
            faiss.IndexBinaryFlat(bits)
    elif kind == 'hnsw':
        index = faiss.IndexBinaryHNSW(bits, config.hnsw_m)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        index.hnsw.efSearch = config.hnsw_ef_search
    else:
        nlist = _ivf_nlist(config, len(codes))
        quantizer = faiss.IndexBinaryFlat(bits)
        index = faiss.IndexBinaryIVF(quantizer, bits, nlist)
        index.own_fields = True
        quantizer.this.disown()
        # 64 codes per list train the centroids well; more only slows the build
        sample = np.random.default_rng(0).permutation(len(codes))[:64 * nlist]
        index.train(codes[np.sort(sample)])
        index.nprobe = config.ivf_nprobe
    logger.debug('binary %s index over %d codes of %d bits', kind, len(codes), bits)
    index.add(codes)
    return index


def _gpu_resources(device: str):
    if device not in ('auto', 'cpu', 'cuda'):
        raise ConfigError(f"search device '{device}' is unknown (valid: auto, cpu, cuda)")
    if device == 'cpu':
        return None
    import faiss
    available = hasattr(faiss, 'GpuIndexBinaryFlat') and faiss.get_num_gpus() > 0
    if not available:
        if device == 'cuda':
            raise ConfigError("search device 'cuda' needs a CUDA build of faiss with a visible "
                              "GPU; install faiss-gpu or use device 'cpu' / 'auto'")
        return None
    return faiss.StandardGpuResources()


@contextlib.contextmanager
def _threads_for(num_queries: int):
    """Limit faiss to one OpenMP thread (of this calling thread) for small query batches."""
    if num_queries >= _PARALLEL_FROM:
        yield
        return
    import faiss
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def _canonical(indices: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort every row by (distance, index), missing (-1) entries last."""
    key = np.where(indices >= 0, distances, np.inf)
    order = np.lexsort((np.where(indices >= 0, indices, np.iinfo(np.int64).max), key), axis=1)
    return np.take_along_axis(indices, order, axis=1), np.take_along_axis(distances, order, 1)


def _as_float32(array: np.ndarray) -> np.ndarray:
    """float16 rows -> float32 through torch's vectorised conversion (numpy's own is
    per-element, 10x slower, and would dominate a re-rank of 200 candidates)."""
    if array.dtype != np.float16:
        return np.asarray(array, dtype=np.float32)
    import torch
    return torch.from_numpy(np.require(array, requirements=('C', 'W'))).float().numpy()


def _require(array: np.ndarray | None, what: str) -> np.ndarray:
    if array is None:
        raise MapError(f'the queries have no {what}, but the search mode needs them')
    return array
