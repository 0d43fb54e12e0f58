"""Binary faiss indexes for places: flat (exact, CPU or GPU), IVF and HNSW (approximate).

faiss facts this relies on: binary indexes store d bits as d / 8 bytes and return int32
Hamming distances; only the flat binary index has a GPU version (``GpuIndexBinaryFlat``,
built by hand because ``index_cpu_to_gpu`` does not take binary indexes); ``IndexBinaryIVF``
and ``IndexBinaryHNSW`` are the approximate indexes for large maps.

An approximate index can be kept with its map: it is described by
:func:`approximate_params`, stored as faiss's serialised bytes and loaded instead of rebuilt
(IVF takes 9-23 s at 1 M places) when the parameters match; bytes that do not deserialise
into an index of those parameters over this map are refused (:func:`deserialize_binary`).
"""
from __future__ import annotations

import logging
from typing import Protocol

import numpy as np

from vpr_core.errors import ConfigError, MapError
from vpr_core.mapdb.search_config import SearchConfig

logger = logging.getLogger(__name__)

KINDS = ('auto', 'flat', 'hnsw', 'ivf')


class IndexStore(Protocol):
    """Where built approximate indexes are kept: ``load`` gives the bytes stored for exactly
    ``params`` (None: none, or they are stale and the store said so), ``save`` keeps them."""

    def load(self, params: dict) -> bytes | None: ...

    def save(self, params: dict, data: bytes) -> None: ...


def index_kind(config: SearchConfig, size: int) -> str:
    """The concrete binary index kind of ``config`` for a map of ``size`` places."""
    if config.index not in KINDS:
        raise ConfigError(f"index kind '{config.index}' is unknown (valid: {', '.join(KINDS)})")
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
        nlist = ivf_nlist(config, size)
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


def ivf_nlist(config: SearchConfig, size: int) -> int:
    """Inverted lists of an IVF index over ``size`` codes (``ivf_nlist`` 0: automatic)."""
    nlist = config.ivf_nlist or int(min(4 * np.sqrt(size), 1024, size // 39))
    return max(1, min(nlist, size))


def build_binary(faiss, codes: np.ndarray, bits: int, kind: str, config: SearchConfig,
                 gpu):
    """A binary index of ``kind`` holding ``codes`` (``gpu``: faiss GPU resources or None)."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if kind == 'flat':
        index = faiss.GpuIndexBinaryFlat(gpu, bits) if gpu is not None else \
            faiss.IndexBinaryFlat(bits)
    elif kind == 'hnsw':
        index = faiss.IndexBinaryHNSW(bits, config.hnsw_m)
        index.hnsw.efConstruction = config.hnsw_ef_construction
        index.hnsw.efSearch = config.hnsw_ef_search
    else:
        nlist = ivf_nlist(config, len(codes))
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


def gpu_resources(device: str):
    """faiss GPU resources for ``device`` (auto: when a CUDA faiss sees a GPU), else None."""
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
