"""The map: descriptors, poses, stamps and place ids of keyframes, with search and storage.

On disk a map is a directory: ``manifest.json`` plus one ``.npy`` per array (``floats``
[N, D] float32/float16, ``codes`` [N, bits / 8] uint8, ``positions`` [N, 3] float64,
``orientations`` [N, 4] float64 (x, y, z, w), ``stamps`` [N] int64 ns, ``place_ids`` [N] int64,
optional ``thumbnails`` [N, h, w, 3] uint8 and ``names`` [N] unicode). Saves and appends are
atomic (see :mod:`vpr_core.mapdb.storage`); loads check every file against the manifest.
"""
from __future__ import annotations

from collections.abc import Callable
import logging
from pathlib import Path

import cv2
import numpy as np

from vpr_core.descriptors import Descriptors
from vpr_core.errors import IncompatibleMapError, MapError
from vpr_core.mapdb import storage
from vpr_core.mapdb.index import PlaceIndex, SearchConfig, SearchHits, structure_key
from vpr_core.mapdb.lock import map_write_lock
from vpr_core.mapdb.manifest import MapManifest, creation_info, map_id_of, read_manifest
from vpr_core.mapdb.match import PlaceMatch

logger = logging.getLogger(__name__)

_FILES = {'floats': 'floats.npy', 'codes': 'codes.npy', 'positions': 'positions.npy',
          'orientations': 'orientations.npy', 'stamps_ns': 'stamps.npy',
          'place_ids': 'place_ids.npy', 'thumbnails': 'thumbnails.npy', 'names': 'names.npy'}
_OPTIONAL = ('floats', 'codes', 'thumbnails', 'names')


class MapDatabase:
    """Keyframes of a map: descriptors, poses in ``manifest.frame_id``, stamps and place ids."""

    def __init__(self, manifest: MapManifest, descriptors: Descriptors, positions: np.ndarray,
                 orientations: np.ndarray, stamps_ns: np.ndarray,
                 place_ids: np.ndarray | None = None, thumbnails: np.ndarray | None = None,
                 names: np.ndarray | None = None, path: Path | None = None) -> None:
        count = len(stamps_ns)
        self.floats = _cast_floats(descriptors.floats, manifest.float_dtype)
        self.codes = None if descriptors.codes is None else np.asarray(descriptors.codes,
                                                                       np.uint8)
        self.positions = np.asarray(positions, dtype=np.float64).reshape(count, 3)
        self.orientations = np.asarray(orientations, dtype=np.float64).reshape(count, 4)
        self.stamps_ns = np.asarray(stamps_ns, dtype=np.int64).reshape(count)
        self.place_ids = np.arange(count, dtype=np.int64) if place_ids is None else \
            np.asarray(place_ids, dtype=np.int64).reshape(count)
        self.thumbnails = thumbnails
        self.names = None if names is None else np.asarray(names, dtype=str)
        self.path = path
        self._indexes: dict[SearchConfig, PlaceIndex] = {}
        # where built approximate indexes are kept: set only while the arrays are exactly
        # the files of a map folder (by load and save)
        self._index_store: storage.StoredIndexes | None = None
        self._check(manifest, count)
        self._spacing_m = _median_spacing(self.positions)
        metric = 'cosine' if self.floats is not None else 'hamming'
        self.manifest = manifest.with_changes(num_places=count, metric=metric)

    @property
    def size(self) -> int:
        """Number of places."""
        return len(self.stamps_ns)

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the model whose descriptors the map holds."""
        return self.manifest.model_fingerprint

    @property
    def descriptors(self) -> Descriptors:
        """All stored descriptors (floats in their stored dtype)."""
        return Descriptors(self.floats, self.codes)

    @property
    def keyframe_spacing_m(self) -> float:
        """Median distance between consecutive places (1.0 when it cannot be measured);
        measured once when the map is made, since the localizer reads it on every frame."""
        return self._spacing_m

    def memory_bytes(self) -> dict[str, int]:
        """Bytes held per array (the search index adds its own, see ``bench/retrieval.py``)."""
        return {name: int(getattr(self, name).nbytes) for name in _FILES
                if getattr(self, name) is not None}

    def index(self, config: SearchConfig = SearchConfig()) -> PlaceIndex:
        """The search index for ``config``, built on first use and cached (configs that
        differ only in query-time settings share it)."""
        key = structure_key(config)
        if key not in self._indexes:
            self._indexes[key] = PlaceIndex(self.floats, self.codes, self.manifest.code_bits,
                                            config, self._index_store)
        return self._indexes[key]

    def search_hits(self, queries: Descriptors, k: int | None = None,
                    config: SearchConfig = SearchConfig()) -> SearchHits:
        """Ranked hits as arrays ([Q, K] rows, scores, distances)."""
        return self.index(config).search(queries, k, config)

    def search(self, queries: Descriptors, k: int | None = None,
               config: SearchConfig = SearchConfig()) -> list[list[PlaceMatch]]:
        """Top-``k`` places for each of the Q queries, best first, as named records."""
        return self.records(self.search_hits(queries, k, config))

    def records(self, hits: SearchHits) -> list[list[PlaceMatch]]:
        """Turn ranked hit arrays into lists of :class:`PlaceMatch` (missing hits dropped)."""
        return [[self.record(int(i), rank, float(s), float(d))
                 for rank, (i, s, d) in enumerate(zip(row, scores, dists)) if i >= 0]
                for row, scores, dists in zip(hits.indices, hits.scores, hits.distances)]

    def record(self, index: int, rank: int, score: float, distance: float) -> PlaceMatch:
        """The named record of map row ``index``."""
        return PlaceMatch(place_id=int(self.place_ids[index]), rank=rank, score=score,
                          distance=distance, index=index,
                          position=tuple(float(v) for v in self.positions[index]),
                          orientation=tuple(float(v) for v in self.orientations[index]),
                          stamp_ns=int(self.stamps_ns[index]))

    def check_compatible(self, fingerprint: str, descriptor_dim: int | None = None,
                         code_bits: int | None = None) -> None:
        """Raise :class:`IncompatibleMapError` unless the map was built by this model."""
        where = f' ({self.path})' if self.path else ''
        if fingerprint != self.fingerprint:
            raise IncompatibleMapError(
                f'map{where} was built by model {self.fingerprint}, but the model in use is '
                f'{fingerprint}; rebuild the map with this model or load the matching weights')
        for name, want, have in (('descriptor_dim', descriptor_dim, self.manifest.descriptor_dim),
                                 ('code_bits', code_bits, self.manifest.code_bits)):
            if want is not None and have and want != have:
                raise IncompatibleMapError(f'map{where} has {name} {have}, the model gives {want}')

    def append(self, other: 'MapDatabase') -> 'MapDatabase':
        """A new map holding these places then ``other``'s; clashing place ids are renumbered.

        Both maps must come from the same model and frame, and both have measured poses or
        both synthetic ones (then ``other``'s index positions continue after this map's): a
        place at a made-up position in a real frame would give a wrong pose prior, and the
        manifest's one ``synthetic_poses`` flag cannot mark only some places.
        """
        other_manifest = other.manifest
        self.check_compatible(other.fingerprint, other_manifest.descriptor_dim,
                              other_manifest.code_bits)
        if other_manifest.frame_id != self.manifest.frame_id:
            raise MapError(f"cannot append places posed in frame '{other_manifest.frame_id}' to "
                           f"a map in frame '{self.manifest.frame_id}'")
        positions = self._check_poses_match(other)
        ids = other.place_ids
        if self.size and np.intersect1d(ids, self.place_ids).size:
            ids = ids - ids.min() + self.place_ids.max() + 1
        joined = {name: _concat(getattr(self, name), getattr(other, name), name)
                  for name in ('floats', 'codes', 'orientations', 'stamps_ns')}
        source = dict(self.manifest.source)
        source['appended'] = [*source.get('appended', []), other_manifest.source]
        manifest = self.manifest.with_changes(source=source, planar=self.manifest.planar and
                                              other_manifest.planar)
        return MapDatabase(manifest,
                           Descriptors(joined['floats'], joined['codes']),
                           np.concatenate([self.positions, positions]),
                           joined['orientations'], joined['stamps_ns'],
                           np.concatenate([self.place_ids, ids]),
                           _join_thumbnails(self.thumbnails, other.thumbnails, other.size),
                           _join_names(self, other), self.path)

    def _check_poses_match(self, other: 'MapDatabase') -> np.ndarray:
        """``other``'s positions as appended (synthetic ones continue this map's index)."""
        check_pose_kinds(self.manifest.with_changes(num_places=self.size),
                         other.manifest.synthetic_poses, other.size, self.path)
        positions = np.array(other.positions)
        if self.manifest.synthetic_poses and other.manifest.synthetic_poses and self.size \
                and other.size:
            positions[:, 0] += self.positions[:, 0].max() + 1.0 - positions[:, 0].min()
        return positions

    def save(self, path: str | Path, tool: str = 'vpr_core', *,
             lock_timeout_s: float | None = None,
             extra_files: Callable[[Path, MapManifest], None] | None = None) -> None:
        """Write the map to directory ``path`` atomically (an old map there is replaced),
        holding the map's write lock (waiting up to ``lock_timeout_s``). ``extra_files(tmp,
        manifest)``, when given, writes further files into the same temporary directory
        after the manifest (so they are swapped in with the map, in one commit)."""
        path = Path(path)

        def fill(tmp: Path) -> None:
            files = {}
            for name, filename in _FILES.items():
                array = getattr(self, name)
                if array is not None:
                    files[filename] = storage.write_array(tmp, filename, array)
            created = self.manifest.created or creation_info(tool)
            manifest = self.manifest.with_changes(files=files, map_id=map_id_of(files),
                                                  created=created, indexes={})
            storage.write_text(tmp, storage.MANIFEST, manifest.to_json())
            if extra_files is not None:
                extra_files(tmp, manifest)
            self.manifest = manifest

        storage.write_map_dir(path, fill, lock_timeout_s=lock_timeout_s)
        self.path = path
        self._index_store = _index_store(path, self.manifest)
        logger.info('saved map %s: %d places (id %s)', path, self.size, self.manifest.map_id)

    @classmethod
    def load(cls, path: str | Path, *, expected_fingerprint: str | None = None,
             verify: bool | str = True, mmap: bool = False) -> 'MapDatabase':
        """Read a map directory, checking every file; refuse another model's map when
        ``expected_fingerprint`` is given. ``mmap`` maps arrays read-only instead of reading.
        ``verify``: True checks sizes and headers always and the sha256 of every file whose
        unchanged copy this machine has not hashed before (see :mod:`~.storage`); ``'full'``
        hashes every file; False checks sizes and headers only."""
        directory = storage.resolve_map_dir(path)
        manifest = read_manifest(directory)
        if expected_fingerprint is not None and expected_fingerprint != \
                manifest.model_fingerprint:
            raise IncompatibleMapError(
                f'map {path} was built by model {manifest.model_fingerprint}, but the model in '
                f'use is {expected_fingerprint}; rebuild the map with this model or load the '
                'matching weights')
        arrays = {}
        cache = storage.VerificationCache() if verify is True else None
        for name, filename in _FILES.items():
            entry = manifest.files.get(filename)
            if entry is None and name in _OPTIONAL:
                arrays[name] = None
                continue
            arrays[name] = storage.read_array(directory, filename, entry, verify=verify,
                                              mmap=mmap and name in ('floats', 'codes'),
                                              cache=cache)
        if cache is not None:
            cache.save()
        database = cls(manifest, Descriptors(arrays['floats'], arrays['codes']),
                       arrays['positions'], arrays['orientations'], arrays['stamps_ns'],
                       arrays['place_ids'], arrays['thumbnails'], arrays['names'], Path(path))
        if directory == Path(path):         # not the backup of an interrupted save
            database._index_store = _index_store(directory, manifest)
        return database

    def _check(self, manifest: MapManifest, count: int) -> None:
        if self.floats is None and self.codes is None:
            raise MapError('a map needs float descriptors, binary codes or both')
        if self.floats is not None and self.floats.shape != (count, manifest.descriptor_dim):
            raise MapError(f'floats have shape {self.floats.shape}, expected '
                           f'({count}, {manifest.descriptor_dim})')
        if self.codes is not None and self.codes.shape != (count, manifest.code_bits // 8):
            raise MapError(f'codes have shape {self.codes.shape}, expected '
                           f'({count}, {manifest.code_bits // 8})')
        if not _all_distinct(self.place_ids):
            raise MapError('place ids must be unique')
        for name in ('thumbnails', 'names'):
            array = getattr(self, name)
            if array is not None and len(array) != count:
                raise MapError(f'{name} has {len(array)} rows, the map has {count} places')


def _index_store(directory: Path, manifest: MapManifest) -> storage.StoredIndexes | None:
    entry = manifest.files.get(_FILES['codes'])
    if entry is None or not manifest.map_id:
        return None
    return storage.StoredIndexes(directory, manifest.map_id, entry['sha256'])


def _all_distinct(ids: np.ndarray) -> bool:
    """No id twice: one pass for the usual increasing ids, else a sort (np.unique's hashing
    took 0.5 s at 1 M places, most of a load)."""
    if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):
        return True
    ordered = np.sort(ids)
    return not bool(np.any(ordered[1:] == ordered[:-1]))


def _median_spacing(positions: np.ndarray) -> float:
    if len(positions) < 2:
        return 1.0
    steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    steps = steps[steps > 1e-6]
    return float(np.median(steps)) if len(steps) else 1.0


def _cast_floats(floats: np.ndarray | None, dtype: str) -> np.ndarray | None:
    if floats is None or dtype == 'none':
        return None
    return floats if floats.dtype == np.dtype(dtype) else np.asarray(floats, dtype=dtype)


def _concat(a: np.ndarray | None, b: np.ndarray | None, name: str) -> np.ndarray | None:
    if a is None and b is None:
        return None
    if (a is None) != (b is None):
        raise MapError(f'cannot append: only one of the two maps has {name} (build both with '
                       'the same --store)')
    return np.concatenate([np.asarray(a), np.asarray(b)])


def _join_thumbnails(mine: np.ndarray | None, theirs: np.ndarray | None, count: int
                     ) -> np.ndarray | None:
    """Debug thumbnails of a merged map: this map's size rules; missing ones are black."""
    if mine is None:
        if theirs is not None:
            logger.warning('the map has no thumbnails: the %d appended ones are dropped', count)
        return None
    height, width = mine.shape[1:3]
    if theirs is None:
        theirs = np.zeros((count, *mine.shape[1:]), mine.dtype)
    elif theirs.shape[1:3] != (height, width):
        theirs = np.stack([cv2.resize(np.ascontiguousarray(t), (width, height),
                                      interpolation=cv2.INTER_AREA) for t in theirs])
    return np.concatenate([np.asarray(mine), theirs.astype(mine.dtype, copy=False)])


def _join_names(mine: MapDatabase, theirs: MapDatabase) -> np.ndarray | None:
    """Frame names of a merged map ('' for places of a map that stored none)."""
    if mine.names is None and theirs.names is None:
        return None
    parts = [m.names if m.names is not None else np.full(m.size, '', dtype=str)
             for m in (mine, theirs)]
    return np.concatenate([np.asarray(p, dtype=str) for p in parts])


def check_pose_kinds(manifest: MapManifest, synthetic: bool, count: int,
                     path: str | Path | None = None) -> None:
    """Refuse to append ``count`` places with ``synthetic`` poses to a map (``manifest``)
    whose poses are of the other kind: measured and made-up poses cannot share a map."""
    where = f' {path}' if path else ''
    if not manifest.num_places or not count or synthetic == manifest.synthetic_poses:
        return
    if synthetic:
        raise MapError(
            f'cannot append {count} places without poses (synthetic: 1 m per image along x) '
            f"to map{where}, whose places are posed in frame '{manifest.frame_id}': they "
            'would sit at made-up positions of a real frame. Give the images poses (--poses '
            'CSV, the VG layout, or --pose-topic with --bag) or build them into a map of '
            'their own')
    raise MapError(
        f'cannot append {count} posed places to map{where}, whose poses are synthetic (1 m '
        'per image along x, built without poses): rebuild that map with poses, or build the '
        'posed places into a map of their own')


def map_exists(path: str | Path) -> bool:
    """True when ``path`` holds a map (or the backup of an interrupted save)."""
    try:
        storage.resolve_map_dir(path)
    except MapError:
        return False
    return True


def append_to_map(path: str | Path, addition: MapDatabase, *, tool: str = 'append',
                  lock_timeout_s: float | None = None) -> MapDatabase:
    """Append ``addition``'s places to the map at ``path`` atomically; returns the new map.

    Load, merge and write happen under the map's write lock, so concurrent appends keep every
    place; a missing map is created. The whole map is rewritten into a temporary sibling and
    swapped in, so a crash leaves either the old or the new map, never a mix.
    """
    with map_write_lock(path, timeout_s=lock_timeout_s, purpose=tool):
        merged = MapDatabase.load(path).append(addition) if map_exists(path) else addition
        merged.save(path, tool=tool)
    return merged
