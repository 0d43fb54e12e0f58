"""Teach mode: record keyframes (descriptor + camera pose) from a live stream into a map.

A frame becomes a keyframe when the robot moved, turned or waited enough since the last one
(vpr_core's keyframe rule); its descriptor is computed then, so saving is only a write. The
map is saved atomically (vpr_core map storage) on request and when the node stops; an existing
map at ``map_dir`` is extended, never overwritten with fewer places.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from vpr_core import devices
from vpr_core.config import from_dict, to_dict
from vpr_core.descriptors import Descriptors
from vpr_core.extractor import Extractor
from vpr_core.localization.recognizer import LocalizationResult
from vpr_core.mapdb.builder import model_info
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.keyframe import KeyframeConfig, KeyframeSelector
from vpr_core.mapdb.manifest import creation_info, MapManifest
from vpr_core.mapdb.pose import compose, Pose
from vpr_core.mapdb.storage import MANIFEST


class TeachPipeline:
    """Keyframe recorder with the node's ``Pipeline`` surface (results carry no candidates)."""

    def __init__(self, extractor: Extractor, map_dir: str, keyframes: dict[str, Any],
                 extrinsics: list[Pose], frame_id: str) -> None:
        self._extractor = extractor
        self._device = str(extractor.device)
        self._path = Path(map_dir)
        self._rule = from_dict(KeyframeConfig, keyframes, where='teach')
        self._extrinsics = extrinsics
        self._frame_id = frame_id
        self._selectors: dict[int, KeyframeSelector] = {}
        self._rows: list[tuple[Descriptors, np.ndarray, np.ndarray, int]] = []
        self._saved_rows = 0
        self._lock = threading.Lock()
        self._existing = MapDatabase.load(self._path, expected_fingerprint=extractor.fingerprint) \
            if (self._path / MANIFEST).is_file() else None

    @property
    def keyframes(self) -> int:
        """Keyframes recorded since start-up."""
        return len(self._rows)

    def process(self, image: np.ndarray, stamp: float, odometry: Pose | None = None,
                camera: int = 0) -> LocalizationResult:
        stamp_ns = int(round(stamp * 1e9))
        if odometry is None:
            return _result(stamp_ns, 'no pose at the image stamp')
        if not self._is_keyframe(camera, stamp_ns, odometry):
            return _result(stamp_ns, 'not a keyframe')
        descriptors = self._extractor.extract([image])
        position, orientation = compose(np.array([odometry.position]),
                                        np.array([odometry.orientation]),
                                        self._extrinsics[camera])
        with self._lock:
            self._rows.append((descriptors, position[0], orientation[0], stamp_ns))
        return _result(stamp_ns, 'keyframe recorded')

    def _is_keyframe(self, camera: int, stamp_ns: int, pose: Pose) -> bool:
        """vpr_core's keyframe rule, one incremental selector per camera."""
        selector = self._selectors.setdefault(camera, KeyframeSelector(self._rule))
        return selector.offer(pose.position, pose.orientation, stamp_ns)

    def database(self) -> MapDatabase:
        """The recorded keyframes (after the existing map's places) as a map."""
        with self._lock:
            rows = list(self._rows)
        floats = [r[0].floats for r in rows if r[0].floats is not None]
        codes = [r[0].codes for r in rows if r[0].codes is not None]
        descriptors = Descriptors(np.concatenate(floats) if floats else None,
                                  np.concatenate(codes) if codes else None)
        positions = np.array([r[1] for r in rows]).reshape(-1, 3)
        recorded = MapDatabase(self._manifest(len(rows), positions), descriptors, positions,
                               np.array([r[2] for r in rows]).reshape(-1, 4),
                               np.array([r[3] for r in rows], dtype=np.int64))
        return recorded if self._existing is None else self._existing.append(recorded)

    def save(self) -> str:
        with self._lock:
            count = len(self._rows)
        if count == self._saved_rows:
            return f'map {self._path}: nothing new to save ({count} keyframes recorded)'
        database = self.database()
        database.save(self._path, tool='vpr_node teach')
        self._saved_rows = count
        return f'saved map {self._path}: {database.size} places ({count} recorded now)'

    def reset(self) -> None:
        self._selectors = {}

    def update(self, changes: dict[str, Any]) -> None:
        """Thresholds do not apply while teaching."""

    def close(self) -> None:
        device = self._extractor.device
        self._extractor = None
        devices.release_memory(device)

    def describe(self) -> dict[str, str]:
        return {'device': self._device, 'map_dir': str(self._path),
                'keyframes_recorded': str(self.keyframes),
                'map_size': str(self.keyframes + (self._existing.size if self._existing
                                                  else 0))}

    def _manifest(self, count: int, positions: np.ndarray) -> MapManifest:
        model, preprocess = model_info(self._extractor)
        floats = self._extractor.descriptor_dim
        z_range = float(np.ptp(positions[:, 2])) if count else 0.0
        return MapManifest(
            model_fingerprint=self._extractor.fingerprint, descriptor_dim=floats,
            code_bits=self._extractor.code_bits, num_places=count,
            float_dtype='float32' if floats else 'none', frame_id=self._frame_id,
            pose_frame='camera', planar=z_range <= 2.0, preprocess=preprocess, model=model,
            source={'kind': 'teach', 'keyframes': count},
            keyframing=dict(to_dict(self._rule), applied=True),
            created=creation_info('vpr_node teach'))


def _result(stamp_ns: int, reason: str) -> LocalizationResult:
    return LocalizationResult(stamp_ns, (), False, 0.0, reason, None, None, float('nan'), 0)
