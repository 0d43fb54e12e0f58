"""Teach mode: grow a map from a live stream of posed frames, save it atomically on request.

The ROS node feeds every frame with the base pose at the image stamp; the recorder keeps only
keyframes (distance, heading, time; see :mod:`~vpr_core.mapdb.keyframe`, one selector per
camera), extracts their descriptors at once and appends them to the map with the same schema,
lock and atomic save as ``vpr build-map --append``, so either tool extends the other's maps.

A map already at the recorder's ``path`` is checked when the recorder is made (model, frame,
measured poses), so a mismatch fails at start-up instead of losing a drive at save time.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
from pathlib import Path
import threading
from typing import Sequence

import cv2
import numpy as np

from vpr_core.config import to_dict
from vpr_core.descriptors import Descriptors
from vpr_core.errors import IncompatibleMapError, MapError
from vpr_core.mapdb.builder import BuildConfig, DescriptorSource, manifest_model
from vpr_core.mapdb.database import append_to_map, MapDatabase, map_exists
from vpr_core.mapdb.keyframe import KeyframeSelector
from vpr_core.mapdb.manifest import creation_info, MapManifest
from vpr_core.mapdb.pose import compose, Pose

logger = logging.getLogger(__name__)


class MapRecorder:
    """Collects keyframes of one or more camera streams posed in ``frame_id``.

    ``extrinsics``: each camera's pose in the base frame (default: ``config.camera_in_base``
    for one camera), so the map stores camera poses; ``path``: the map that :meth:`save`
    extends (checked now when it exists). ``keep_descriptors`` False: the caller keeps every
    keyframe's descriptors (a loop detector's search store) and hands them to :meth:`to_map`,
    so they are not held twice; such a recorder extracts nothing.
    """

    def __init__(self, extractor: DescriptorSource, config: BuildConfig = BuildConfig(),
                 frame_id: str = 'map', *, extrinsics: Sequence[Pose] | None = None,
                 path: str | Path | None = None, lock_timeout_s: float | None = None,
                 keep_descriptors: bool = True) -> None:
        self.extractor = extractor
        self.keep_descriptors = keep_descriptors
        self.frame_id = config.frame_id or frame_id
        self.path = None if path is None else Path(path)
        self.extrinsics = list(extrinsics or [Pose.from_sequence(config.camera_in_base)])
        self.lock_timeout_s = lock_timeout_s
        if self.path is not None and map_exists(self.path):
            config = adopt_layout(config, check_extendable(self.path, extractor, self.frame_id))
        elif self.path is not None and self.path.exists() and \
                not (self.path.is_dir() and not any(self.path.iterdir())):
            raise MapError(f'{self.path} exists and is not a map directory (no manifest.json); '
                           'teach into a new or empty directory')
        self.config = config
        self._selectors = [KeyframeSelector(config.keyframes) for _ in self.extrinsics]
        self._rows: list[tuple] = []     # descriptors, position, orientation, stamp, name, thumb
        self._lock = threading.Lock()
        self._recorded = 0
        self.frames_seen = 0

    def __len__(self) -> int:
        """Keyframes recorded (saved ones included)."""
        return self._recorded

    @property
    def pending(self) -> int:
        """Keyframes recorded but not saved yet."""
        with self._lock:
            return len(self._rows)

    def add(self, image: np.ndarray | None, stamp_ns: int, pose: Pose,
            descriptors: Descriptors | None = None, camera: int = 0) -> bool:
        """Offer a frame of ``camera`` (the base ``pose`` at ``stamp_ns``); True when kept as
        a keyframe. ``descriptors`` (one row) skip the extraction when the caller has them."""
        self.frames_seen += 1
        if not self._selectors[camera].offer(np.asarray(pose.position),
                                             np.asarray(pose.orientation), stamp_ns):
            return False
        if not self.keep_descriptors:
            descriptors = None
        elif descriptors is None:
            if image is None:
                raise MapError('MapRecorder.add needs an image or its descriptors')
            descriptors = self.extractor.extract([image])
        position, orientation = compose(np.array([pose.position]),
                                        np.array([pose.orientation]), self.extrinsics[camera])
        row = (descriptors, position[0], orientation[0], int(stamp_ns),
               f'camera{camera}@{int(stamp_ns)}', self._thumbnail(image))
        with self._lock:
            self._rows.append(row)
            self._recorded += 1
        return True

    def restart(self) -> None:
        """Forget the last keyframe of every camera: the next frame of each is kept."""
        self._selectors = [KeyframeSelector(self.config.keyframes) for _ in self.extrinsics]

    def to_map(self, descriptors: Descriptors | None = None) -> MapDatabase:
        """The keyframes not saved yet as a map (the schema of ``vpr build-map``);
        ``descriptors``: their rows, for a recorder that does not keep them."""
        with self._lock:
            rows = list(self._rows)
        return self._map_of(rows, descriptors)

    def save(self, path: str | Path | None = None) -> MapDatabase | None:
        """Append the unsaved keyframes to the map at ``path`` (default: the recorder's),
        creating it when missing, under the map's write lock; returns the map written, None
        when there was nothing to save. On failure the keyframes are kept for a retry."""
        path = self.path if path is None else Path(path)
        if path is None:
            raise MapError('MapRecorder.save needs a map path')
        with self._lock:
            rows = list(self._rows)
        if not rows:
            return None
        database = append_to_map(path, self._map_of(rows), tool='teach',
                                 lock_timeout_s=self.lock_timeout_s)
        with self._lock:
            del self._rows[:len(rows)]
        logger.info('teach: saved %d new places to %s, %d in all (%d frames seen)', len(rows),
                    path, database.size, self.frames_seen)
        return database

    def rescue(self, path: str | Path | None = None) -> Path | None:
        """Last resort when :meth:`save` failed and the recorder is going away: write the
        unsaved keyframes as a map of their own beside the map (``<map>.unsaved-<utc>``), so
        the drive is not lost; returns that path (None when nothing was pending)."""
        path = self.path if path is None else Path(path)
        with self._lock:
            rows = list(self._rows)
        if not rows or path is None:
            return None
        utc = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%S')
        target = path.parent / f'{path.name}.unsaved-{utc}'
        self._map_of(rows).save(target, tool='teach (unsaved keyframes)',
                                lock_timeout_s=self.lock_timeout_s)
        with self._lock:
            del self._rows[:len(rows)]
        logger.warning('teach: %d keyframes could not be added to %s; they were saved as the '
                       'map %s', len(rows), path, target)
        return target

    def _map_of(self, rows: list[tuple], descriptors: Descriptors | None = None
                ) -> MapDatabase:
        config, extractor = self.config, self.extractor
        if descriptors is None and not self.keep_descriptors:
            raise MapError('this recorder keeps no descriptors: pass them to to_map()')
        if descriptors is not None and len(descriptors) != len(rows):
            raise MapError(f'{len(descriptors)} descriptor rows for {len(rows)} keyframes')
        parts = [r[0] for r in rows] if descriptors is None else [descriptors]
        keep_floats = config.store != 'codes' and extractor.descriptor_dim > 0
        keep_codes = config.store != 'floats' and extractor.code_bits > 0
        floats = _stack([d.floats for d in parts], keep_floats,
                        (0, extractor.descriptor_dim), np.float32)
        codes = _stack([d.codes for d in parts], keep_codes, (0, extractor.code_bits // 8),
                       np.uint8)
        positions = np.array([r[1] for r in rows]).reshape(-1, 3)
        model, preprocess = manifest_model(extractor)
        manifest = MapManifest(
            model_fingerprint=extractor.fingerprint,
            descriptor_dim=0 if floats is None else floats.shape[1],
            code_bits=0 if codes is None else codes.shape[1] * 8, num_places=len(rows),
            float_dtype=config.float_dtype if floats is not None else 'none',
            frame_id=self.frame_id, pose_frame='camera', orientation_source='pose',
            planar=bool(np.ptp(positions[:, 2]) <= config.planar_max_z_range_m)
            if len(rows) else True,
            preprocess=preprocess, model=model,
            source={'kind': 'teach', 'frames': self.frames_seen, 'keyframes': len(rows),
                    'cameras': len(self.extrinsics)},
            keyframing=dict(to_dict(config.keyframes), applied=True,
                            camera_in_base=[_sequence(p) for p in self.extrinsics]),
            created=creation_info('teach'))
        thumbnails = np.stack([r[5] for r in rows]) if rows and rows[0][5] is not None else None
        return MapDatabase(manifest, Descriptors(floats, codes), positions,
                           np.array([r[2] for r in rows]).reshape(-1, 4),
                           np.array([r[3] for r in rows], dtype=np.int64),
                           thumbnails=thumbnails, names=np.array([r[4] for r in rows], str))

    def _thumbnail(self, image: np.ndarray | None) -> np.ndarray | None:
        height, width = self.config.thumbnail_size
        if height <= 0:
            return None
        if image is None:
            return np.zeros((height, width, 3), np.uint8)
        return cv2.resize(np.ascontiguousarray(image), (width, height),
                          interpolation=cv2.INTER_AREA)


def check_extendable(path: str | Path, extractor: DescriptorSource, frame_id: str
                     ) -> MapManifest:
    """The manifest of the map at ``path`` when teach mode with ``extractor`` and poses in
    ``frame_id`` can extend it; otherwise an error that says what differs and what to do.
    Every file is read and checked, so a damaged map fails now, not when the drive is saved."""
    manifest = MapDatabase.load(path).manifest
    if manifest.model_fingerprint != extractor.fingerprint:
        raise IncompatibleMapError(
            f'map {path} was built by model {manifest.model_fingerprint}, but the model in use '
            f'is {extractor.fingerprint}; load the matching weights or teach into another '
            'map directory')
    if manifest.frame_id != frame_id:
        raise IncompatibleMapError(
            f"map {path} is posed in frame '{manifest.frame_id}', but this teach run poses "
            f"keyframes in frame '{frame_id}'; set map_frame to '{manifest.frame_id}' (if "
            'the poses really are in that frame) or teach into another map directory')
    if manifest.synthetic_poses:
        raise MapError(f'map {path} has synthetic poses (1 m per image along x, built without '
                       'poses); teach mode records measured poses: teach into another map '
                       'directory')
    return manifest


def adopt_layout(config: BuildConfig, manifest: MapManifest) -> BuildConfig:
    """``config`` with the stored layout of an existing map (floats and/or codes, float
    dtype, thumbnail size), so the keyframes recorded append to it."""
    store = 'both' if manifest.descriptor_dim and manifest.code_bits else \
        'floats' if manifest.descriptor_dim else 'codes'
    thumbs = manifest.files.get('thumbnails.npy', {}).get('shape') or [0, 0, 0]
    return dataclasses.replace(
        config, store=store, thumbnail_size=(int(thumbs[1]), int(thumbs[2])),
        float_dtype=manifest.float_dtype if manifest.float_dtype != 'none'
        else config.float_dtype)


def _sequence(pose: Pose) -> list[float]:
    return [*map(float, pose.position), *map(float, pose.orientation)]


def _stack(arrays: list, keep: bool, empty_shape: tuple[int, int], dtype
           ) -> np.ndarray | None:
    if not keep or any(a is None for a in arrays):
        return None
    return np.concatenate(arrays).astype(dtype, copy=False) if arrays else \
        np.zeros(empty_shape, dtype)
