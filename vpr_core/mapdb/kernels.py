"""The arithmetic of place search, shared by every search in the package.

:class:`~vpr_core.mapdb.index.PlaceIndex` (the node, the CLIs, the benches) and the offline
matrices of ``vpr evaluate`` (:mod:`vpr_core.evaluation.search`) compute Hamming distances,
pick the smallest values and score re-rank candidates with these functions only.
"""
from __future__ import annotations

import contextlib
import threading
import warnings

import numpy as np

CHUNK_BYTES = 64 << 20
# Below this many queries faiss runs on the calling thread only: OpenMP fan-out over one
# query costs more than it saves and spins badly on a loaded CPU.
PARALLEL_FROM = 16
RERANK_CHUNK_BYTES = 1 << 21
_LOCAL = threading.local()


def hamming_distances(queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """[Q, B] x [N, B] packed uint8 codes -> [Q, N] int32 Hamming distances (numpy only)."""
    queries = np.ascontiguousarray(queries, dtype=np.uint8)
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if queries.shape[1] % 8 == 0:
        queries, codes = queries.view(np.uint64), codes.view(np.uint64)
    out = np.empty((len(queries), len(codes)), dtype=np.int32)
    rows = max(1, CHUNK_BYTES // max(1, queries.shape[1] * 8 * max(1, len(queries))))
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


def best_scores(values: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` largest ``values``, best first, ties by smaller place id."""
    k = min(k, len(values))
    if k < len(values):
        kth = np.partition(values, len(values) - k)[len(values) - k]
        kept = np.flatnonzero(values >= kth)
    else:
        kept = np.arange(len(values))
    return kept[np.lexsort((ids[kept], -values[kept]))[:k]]


def canonical(indices: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort every row by (distance, index), missing (-1) entries last."""
    key = np.where(indices >= 0, distances, np.inf)
    order = np.lexsort((np.where(indices >= 0, indices, np.iinfo(np.int64).max), key), axis=1)
    return np.take_along_axis(indices, order, axis=1), np.take_along_axis(distances, order, 1)


def candidate_scores(table, ids: np.ndarray, query: np.ndarray) -> np.ndarray:
    """[len(ids)] float32 dot products of ``query`` with the map rows ``ids`` (float32
    accumulation).

    ``table`` is the map's float rows as a torch tensor sharing their memory
    (:func:`as_table`). Rows are gathered and converted into two per-thread buffers of about
    2 MB, so a deep re-rank (100k rows at 1 M places) streams through the cache instead of
    allocating (and page-faulting) a copy of every candidate; torch converts float16 10x
    faster than numpy. A re-rank of a few hundred rows is one gather, one conversion and one
    matrix-vector product.
    """
    import torch
    dim = int(table.shape[1])
    rows = max(64, RERANK_CHUNK_BYTES // (4 * dim))
    gathered, converted = _buffers(rows, dim, table.dtype)
    index = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64))
    vector = torch.from_numpy(np.ascontiguousarray(query, dtype=np.float32))
    if len(ids) <= rows:
        return _gather_dot(table, index, vector, gathered, converted).numpy()
    out = np.empty(len(ids), dtype=np.float32)
    for start in range(0, len(ids), rows):
        part = index[start:start + rows]
        out[start:start + len(part)] = _gather_dot(table, part, vector, gathered, converted)
    return out


def _gather_dot(table, index, vector, gathered, converted):
    """Rows ``index`` of ``table`` (into the buffers) times ``vector``: a new float32 tensor."""
    import torch
    count = len(index)
    rows = torch.index_select(table, 0, index, out=gathered[:count])
    if converted is not gathered:
        rows = converted[:count].copy_(rows)
    return torch.mv(rows, vector)


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


def as_table(floats: np.ndarray):
    """The map floats as a torch tensor over the same memory (float16/32; others converted)."""
    import torch
    if floats.dtype not in (np.float16, np.float32):
        floats = floats.astype(np.float32)
    floats = np.ascontiguousarray(floats)
    with warnings.catch_warnings():
        # a read-only memory map: the tensor is only ever read
        warnings.filterwarnings('ignore', message='.*not writable.*')
        return torch.from_numpy(floats)


def as_float32(array: np.ndarray) -> np.ndarray:
    """float16 rows -> float32 through torch's vectorised conversion (numpy's own is
    per-element, 10x slower, and would dominate a re-rank of 200 candidates)."""
    if array.dtype != np.float16:
        return np.asarray(array, dtype=np.float32)
    import torch
    return torch.from_numpy(np.require(array, requirements=('C', 'W'))).float().numpy()


@contextlib.contextmanager
def threads_for(num_queries: int):
    """Limit faiss to one OpenMP thread (of this calling thread) for small query batches."""
    if num_queries >= PARALLEL_FROM:
        yield
        return
    import faiss
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
