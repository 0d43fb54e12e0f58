"""The array files of a map: written fsynced with their manifest entry, read back checked.

What a load checks, and when (:func:`read_array`): every time, that the file exists, has the
size the manifest records (a truncated or extended file is always caught) and a header of the
recorded shape and dtype. The sha256 of the content is computed in full the first time a file
is read on this machine and whenever it may have changed since
(:class:`~vpr_core.mapdb.verification.VerificationCache`). What the stat cannot see, a disk
that alters data without a write (bit rot), only a full hash finds: ``verify='full'`` always
hashes (``False`` never). No pickle, ever.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
import time

import numpy as np

from vpr_core.errors import MapError
from vpr_core.files import sha256_file
from vpr_core.mapdb.verification import VerificationCache


class _HashingFile:
    """File-like writer that hashes and counts the bytes it writes."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        view = memoryview(data).cast('B')
        self.sha256.update(view)
        self.size += len(view)
        return self.handle.write(view)


def write_array(directory: Path, name: str, array: np.ndarray) -> dict:
    """Write ``array`` as ``directory/name`` (.npy, no pickle), fsynced; returns its entry
    for the manifest: sha256, bytes, shape, dtype."""
    array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise MapError(f'{name}: object arrays cannot be stored in a map (no pickle)')
    with open(directory / name, 'wb') as handle:
        hashed = _HashingFile(handle)
        np.lib.format.write_array(hashed, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    return {'sha256': hashed.sha256.hexdigest(), 'bytes': hashed.size,
            'shape': list(array.shape), 'dtype': array.dtype.str}


def write_text(directory: Path, name: str, text: str) -> None:
    """Write a small text file, fsynced."""
    with open(directory / name, 'w', encoding='utf-8') as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def read_array(directory: Path, name: str, entry: dict | None, *, verify: bool | str,
               mmap: bool = False, cache: VerificationCache | None = None) -> np.ndarray:
    """Read ``directory/name`` checked against its manifest ``entry``; any damage raises a
    :class:`MapError` that names the file. ``verify``: True hashes unless ``cache`` vouches
    for the file, ``'full'`` always hashes, False checks size and header only."""
    path = directory / name
    if not path.is_file():
        raise MapError(f'map file missing: {path}')
    if entry is not None:
        size = path.stat().st_size
        if size != entry['bytes']:
            raise MapError(f'map file {path} has {size} bytes, the manifest says '
                           f"{entry['bytes']} (truncated or replaced)")
        if verify:
            _verify_sha256(path, entry['sha256'], None if verify == 'full' else cache)
    try:
        array = np.load(path, allow_pickle=False, mmap_mode='r' if mmap else None)
    except (ValueError, OSError, EOFError) as exc:
        raise MapError(f'map file {path} cannot be read: {exc}') from exc
    if entry is not None and (list(array.shape) != entry['shape']
                              or array.dtype.str != entry['dtype']):
        raise MapError(f"map file {path} holds {array.dtype.str}{list(array.shape)}, the "
                       f"manifest says {entry['dtype']}{entry['shape']}")
    return array


def _verify_sha256(path: Path, expected: str, cache: VerificationCache | None) -> None:
    if cache is not None and cache.vouches(path, expected):
        return
    started_ns = _now_ns()
    if sha256_file(path) != expected:
        raise MapError(f'map file {path} is corrupt: its sha256 differs from the manifest')
    if cache is not None:
        cache.record(path, expected, started_ns)


def _now_ns() -> int:
    return time.time_ns()
