"""Teach mode: grow a map from a live stream of posed frames, save it atomically on request.

The ROS node feeds every frame with the base pose at the image stamp; the recorder keeps only
keyframes (distance, heading, time; see :mod:`~vpr_core.mapdb.keyframe`), extracts their
descriptors at once and writes the map with the same manifest and atomic save as
``vpr build-map``.
"""
from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from vpr_core.descriptors import Descriptors
from vpr_core.errors import MapError
from vpr_core.mapdb.builder import BuildConfig, DescriptorSource, model_info
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.keyframe import KeyframeSelector
from vpr_core.mapdb.manifest import creation_info, MapManifest
from vpr_core.mapdb.pose import compose, Pose

logger = logging.getLogger(__name__)


class MapRecorder:
    """Collects keyframes of one stream; ``frame_id`` is the frame of the poses given."""

    def __init__(self, extractor: DescriptorSource, config: BuildConfig = BuildConfig(),
                 frame_id: str = 'map') -> None:
        self.extractor = extractor
        self.config = config
        self.frame_id = config.frame_id or frame_id
        self.selector = KeyframeSelector(config.keyframes)
        self.camera_in_base = Pose.from_sequence(config.camera_in_base)
        self._rows: list[tuple[Descriptors, np.ndarray, np.ndarray, int]] = []
        self._thumbnails: list[np.ndarray] = []
        self.frames_seen = 0

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, image: np.ndarray | None, stamp_ns: int, pose: Pose,
            descriptors: Descriptors | None = None) -> bool:
        """Offer a frame (the base ``pose`` at ``stamp_ns``); True when kept as a keyframe.

        ``descriptors`` (one row) skip the extraction when the caller already has them.
        """
        self.frames_seen += 1
        if not self.selector.offer(np.asarray(pose.position), np.asarray(pose.orientation),
                                   stamp_ns):
            return False
        if descriptors is None:
            if image is None:
                raise MapError('MapRecorder.add needs an image or its descriptors')
            descriptors = self.extractor.extract([image])
        position, orientation = compose(np.array([pose.position]),
                                        np.array([pose.orientation]), self.camera_in_base)
        self._rows.append((descriptors, position[0], orientation[0], int(stamp_ns)))
        if self.config.thumbnail_size[0] > 0 and image is not None:
            height, width = self.config.thumbnail_size
            self._thumbnails.append(cv2.resize(image, (width, height),
                                               interpolation=cv2.INTER_AREA))
        return True

    def to_map(self) -> MapDatabase:
        """The keyframes so far as a map."""
        parts = [row[0] for row in self._rows]
        floats = _stack([p.floats for p in parts], self.config.store != 'codes')
        codes = _stack([p.codes for p in parts], self.config.store != 'floats')
        if floats is None and codes is None:
            floats = np.zeros((0, self.extractor.descriptor_dim), np.float32) \
                if self.extractor.descriptor_dim else None
            codes = np.zeros((0, self.extractor.code_bits // 8), np.uint8) \
                if floats is None else None
        model, preprocess = model_info(self.extractor)
        positions = np.array([row[1] for row in self._rows]).reshape(-1, 3)
        manifest = MapManifest(
            model_fingerprint=self.extractor.fingerprint,
            descriptor_dim=0 if floats is None else floats.shape[1],
            code_bits=0 if codes is None else codes.shape[1] * 8, num_places=len(self),
            float_dtype=self.config.float_dtype if floats is not None else 'none',
            frame_id=self.frame_id,
            planar=bool(np.ptp(positions[:, 2]) <= self.config.planar_max_z_range_m)
            if len(positions) else True,
            preprocess=preprocess, model=model,
            source={'kind': 'teach', 'frames': self.frames_seen, 'keyframes': len(self)},
            created=creation_info('teach'))
        thumbnails = np.stack(self._thumbnails) if len(self._thumbnails) == len(self) and \
            self._thumbnails else None
        return MapDatabase(manifest, Descriptors(floats, codes), positions,
                           np.array([row[2] for row in self._rows]).reshape(-1, 4),
                           np.array([row[3] for row in self._rows], dtype=np.int64),
                           thumbnails=thumbnails)

    def save(self, path: str | Path, append: bool = True) -> MapDatabase:
        """Write the keyframes to ``path`` atomically; with ``append`` and a map already
        there, the keyframes are added to it. Returns the map written."""
        database = self.to_map()
        path = Path(path)
        if append and (path / 'manifest.json').is_file():
            database = MapDatabase.load(path).append(database)
        database.save(path, tool='teach')
        logger.info('teach: saved %d places to %s (%d frames seen)', database.size, path,
                    self.frames_seen)
        return database


def _stack(arrays: list, keep: bool) -> np.ndarray | None:
    if not keep or not arrays or any(a is None for a in arrays):
        return None
    return np.concatenate(arrays)
