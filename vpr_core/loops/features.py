"""Local features of a map's keyframes, kept in the map folder beside the map's own files.

The map (:class:`~vpr_core.mapdb.database.MapDatabase`) stores global descriptors only. For
geometric verification against a previous session the loop detector also keeps each
keyframe's local features (:class:`~vpr_core.geometry.LocalFeatures`), written by
:func:`save_features` into the temporary directory of the map's own atomic write, so the map
and its features are swapped in together (one commit): ``local_features_<name>.npy`` arrays
(every keyframe's keypoints and descriptors concatenated, with row offsets) and
``local_features.json`` naming the map id they belong to and every file's sha256, bytes,
shape and dtype. A later rewrite of the map (``vpr build-map --append``) swaps the folder
and drops them; a map whose id differs from the recorded one, or a damaged file, loads with
a warning and no features (its keyframes are then matched without verification, reason
``no_features``).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from vpr_core.errors import MapError
from vpr_core.geometry.features import LocalFeatures
from vpr_core.mapdb import storage

logger = logging.getLogger(__name__)

INDEX_FILE = 'local_features.json'
_ARRAYS = ('present', 'offsets', 'keypoints', 'descriptors', 'kinds', 'sizes')


def pack_features(features: Sequence[LocalFeatures | None]) -> dict[str, np.ndarray]:
    """The features of K keyframes (None: none) as six plain arrays."""
    present = np.array([f is not None for f in features], dtype=bool)
    kept = [f for f in features if f is not None]
    counts = [len(f) for f in kept]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    kinds = {f.kind for f in kept}
    if len(kinds) > 1:
        raise MapError(f'keyframes hold local features of several kinds {sorted(kinds)}; a map '
                       'keeps one kind')
    width = kept[0].descriptors.shape[1] if kept else 0
    dtype = kept[0].descriptors.dtype if kept else np.uint8
    return {
        'present': present, 'offsets': offsets,
        'keypoints': np.concatenate([f.keypoints for f in kept]) if kept
        else np.zeros((0, 2), np.float32),
        'descriptors': np.concatenate([f.descriptors for f in kept]) if kept
        else np.zeros((0, width), dtype),
        'kinds': np.array([f.kind for f in kept], dtype='<U8'),
        'sizes': np.array([[f.width, f.height] for f in kept], dtype=np.int64).reshape(-1, 2)}


def unpack_features(arrays: dict[str, np.ndarray]) -> list[LocalFeatures | None]:
    """Inverse of :func:`pack_features`."""
    present, offsets = arrays['present'], arrays['offsets']
    if len(offsets) != int(present.sum()) + 1 or offsets[-1] != len(arrays['keypoints']):
        raise MapError('stored local features are inconsistent (offsets do not match)')
    out: list[LocalFeatures | None] = []
    kept = 0
    for has in present:
        if not has:
            out.append(None)
            continue
        rows = slice(int(offsets[kept]), int(offsets[kept + 1]))
        out.append(LocalFeatures.from_arrays({
            'keypoints': arrays['keypoints'][rows], 'descriptors': arrays['descriptors'][rows],
            'kind': arrays['kinds'][kept], 'size': arrays['sizes'][kept]}))
        kept += 1
    return out


def save_features(map_dir: str | Path, features: Sequence[LocalFeatures | None],
                  map_id: str) -> None:
    """Write the keyframes' features into ``map_dir``: the temporary directory of the map's
    atomic write (:meth:`MapDatabase.save`'s ``extra_files``), so they are swapped in with
    the map. Each array is streamed to its file (fsynced) with its sha256."""
    map_dir = Path(map_dir)
    entries = {}
    for name, array in pack_features(features).items():
        filename = f'local_features_{name}.npy'
        entries[filename] = storage.write_array(map_dir, filename, array)
    text = json.dumps({'map_id': map_id, 'keyframes': len(features), 'files': entries},
                      indent=2, sort_keys=True)
    storage.write_text(map_dir, INDEX_FILE, text)


def load_features(map_dir: str | Path | None, map_id: str, count: int
                  ) -> list[LocalFeatures | None]:
    """The ``count`` keyframes' features stored in ``map_dir`` for map ``map_id``; all None
    (with a warning saying why) when there are none for this map or they are damaged."""
    if map_dir is None:
        return [None] * count
    map_dir = Path(map_dir)
    try:
        return _read(map_dir, map_id, count)
    except MapError as exc:
        logger.warning('map %s: %s; its keyframes are matched without geometric '
                       'verification', map_dir, exc)
        return [None] * count


def _read(map_dir: Path, map_id: str, count: int) -> list[LocalFeatures | None]:
    path = map_dir / INDEX_FILE
    if not path.is_file():
        raise MapError('no local features stored')
    try:
        index = json.loads(path.read_text(encoding='utf-8'))
        files = index['files']
        if index['map_id'] != map_id or index['keyframes'] != count:
            raise MapError(f"stored local features belong to map {index['map_id']} of "
                           f"{index['keyframes']} keyframes, not to this one ({map_id}, "
                           f'{count}): stale')
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MapError(f'{path} cannot be read: {exc}') from exc
    arrays = {}
    for name in _ARRAYS:
        filename = f'local_features_{name}.npy'
        if not isinstance(files.get(filename), dict):
            raise MapError(f'{path} does not describe {filename}')
        arrays[name] = storage.read_array(map_dir, filename, files[filename], verify='full')
    features = unpack_features(arrays)
    if len(features) != count:
        raise MapError(f'stored local features hold {len(features)} keyframes, not {count}')
    return features
