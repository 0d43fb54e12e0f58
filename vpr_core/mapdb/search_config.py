"""How a map is searched: :class:`SearchConfig` and the mode it resolves to.

Kept apart from the index so that configuration modules (``localization/config.py``) and the
index builders (``approximate.py``) read it without loading the search itself.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from vpr_core.errors import ConfigError

MODES = ('auto', 'rerank', 'binary', 'float')


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


def structure_key(config: SearchConfig) -> SearchConfig:
    """``config`` without its query-time settings: configs with equal keys share an index."""
    return dataclasses.replace(config, top_k=1, rerank_k=1, ivf_nprobe=1, hnsw_ef_search=1)


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
