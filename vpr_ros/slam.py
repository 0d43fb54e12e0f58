"""SLAM mode: the node's ``Pipeline`` surface over vpr_core's :class:`LoopDetector`.

The detector keeps this session's keyframes (and a previous session's, loaded from
``map_dir`` when a map is there), searches each new keyframe against the past outside the
recent stretch, applies temporal consistency and verifies candidates geometrically; this
adapter only feeds it the frame, the odometry at its stamp, the newest ``camera_info``
intrinsics and the depth image nearest in time (:class:`SensorCache`, filled by the node's
subscriptions), and turns its result into :class:`~vpr_ros.result.LoopArrays` (stamps,
place ids and positions of the candidate keyframes, the relative pose as a base-frame
constraint). ``save`` writes the previous map plus this session to ``map_dir`` atomically
(a snapshot taken under the lock, written outside it), so the next session closes loops
against this one.
"""
from __future__ import annotations

from collections import Counter, deque
import logging
import threading
from typing import Any

import numpy as np

from vpr_core import devices
from vpr_core.errors import MapError
from vpr_core.extractor import Extractor
from vpr_core.geometry import CameraModel
from vpr_core.loops import LoopConfig, LoopDetector, LoopResult, write_session
from vpr_core.mapdb import map_exists, MapDatabase, Pose
from vpr_ros.loop_constraint import base_constraint
from vpr_ros.parameter_specs import loop_config
from vpr_ros.parameters import loop_values
from vpr_ros.result import loop_arrays, LoopArrays

logger = logging.getLogger(__name__)
DEPTH_HISTORY = 10      # depth frames kept for matching by stamp


class SensorCache:
    """The newest camera intrinsics and the recent depth frames of the one SLAM camera,
    written by subscription callbacks and read by the worker (thread-safe)."""

    def __init__(self, depth_history: int = DEPTH_HISTORY) -> None:
        self._lock = threading.Lock()
        self._camera: CameraModel | None = None
        self._depth: deque[tuple[int, np.ndarray]] = deque(maxlen=depth_history)
        self.camera_infos = 0

    def set_camera(self, model: CameraModel) -> None:
        """Cache the intrinsics of the newest ``camera_info``."""
        with self._lock:
            self._camera = model
            self.camera_infos += 1

    def camera(self) -> CameraModel | None:
        """The newest intrinsics, None before any ``camera_info``."""
        with self._lock:
            return self._camera

    def add_depth(self, stamp_ns: int, depth: np.ndarray) -> None:
        """Keep one depth image (its header stamp)."""
        with self._lock:
            self._depth.append((int(stamp_ns), depth))

    def depth_at(self, stamp_ns: int, tolerance_ns: int) -> np.ndarray | None:
        """The depth image nearest to ``stamp_ns`` if within ``tolerance_ns``, else None."""
        with self._lock:
            frames = list(self._depth)
        if not frames:
            return None
        gaps = [abs(stamp - int(stamp_ns)) for stamp, _ in frames]
        nearest = int(np.argmin(gaps))
        return frames[nearest][1] if gaps[nearest] <= tolerance_ns else None


class KeyframeTable:
    """Place ids, stamps and odometry positions of the detector's rows: the previous map's
    rows first, then this session's keyframes as they come."""

    def __init__(self, previous: MapDatabase | None) -> None:
        self.previous_rows = 0 if previous is None else previous.size
        self._place_offset = 0
        self._stamps: list[int] = []
        self._positions: list[np.ndarray] = []
        self._place_ids: list[int] = []
        if previous is not None and previous.size:
            unknown = bool(previous.manifest.synthetic_poses)
            self._stamps = [int(s) for s in previous.stamps_ns]
            self._positions = list(np.full((previous.size, 3), np.nan) if unknown
                                   else previous.positions)
            self._place_ids = [int(p) for p in previous.place_ids]
            self._place_offset = int(previous.place_ids.max()) + 1

    def add(self, row: int, stamp_ns: int, position: np.ndarray | None) -> None:
        """Record this session's keyframe ``row`` (the detector's index). Rows the table
        missed (a frame that failed after the detector stored it) get stamp 0 and no
        position; a row already recorded is an error."""
        if row < len(self._stamps):
            raise ValueError(f'keyframe row {row} recorded twice')
        while len(self._stamps) <= row:
            missed = len(self._stamps) < row
            self._stamps.append(0 if missed else int(stamp_ns))
            self._positions.append(np.full(3, np.nan) if missed or position is None
                                   else np.asarray(position, dtype=np.float64).reshape(3))
            self._place_ids.append(self._place_offset + len(self._place_ids) -
                                   self.previous_rows)

    def position(self, row: int) -> np.ndarray:
        """Odometry position of ``row`` (NaN when unknown)."""
        return self._positions[row]

    def keyframe_rows(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(place ids [K], stamps ns [K], positions [K, 3]) of database ``rows``."""
        rows = [int(r) for r in rows]
        return (np.array([self._place_ids[r] for r in rows], dtype=np.int64),
                np.array([self._stamps[r] for r in rows], dtype=np.int64),
                np.array([self._positions[r] for r in rows], dtype=np.float64).reshape(-1, 3))


class SlamPipeline:
    """Loop detection for one camera with the node's ``Pipeline`` surface."""

    def __init__(self, extractor: Extractor, config: LoopConfig, *, map_dir: str,
                 camera_in_base: Pose, frame_id: str, depth_tolerance_s: float = 0.02,
                 expects_depth: bool = False) -> None:
        self._extractor = extractor
        self._map_dir = map_dir
        self._camera_in_base = camera_in_base
        self._tolerance_ns = int(round(depth_tolerance_s * 1e9))
        self._expects_depth = expects_depth
        previous = load_previous(map_dir, extractor)
        self._detector = LoopDetector(extractor, config, previous=previous, frame_id=frame_id)
        self._table = KeyframeTable(previous)
        self._previous_id = '' if previous is None else previous.manifest.map_id
        self.sensors = SensorCache()
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._counts: Counter = Counter()
        self._camera_source = 'none yet'
        self._info = {'device': str(extractor.device), 'backend': extractor.backend,
                      'model': extractor.fingerprint[:16], 'map_dir': map_dir or '(none)',
                      'map_frame_id': self._detector.frame_id}

    def process(self, image: np.ndarray, stamp: float | int, odometry: Pose | None = None,
                camera: int = 0) -> LoopArrays:
        """One frame (stamp: int ns, or float s) -> what the node publishes for it."""
        stamp_ns = int(stamp) if isinstance(stamp, (int, np.integer)) else \
            int(round(float(stamp) * 1e9))
        model = self._camera_model(image)
        with self._lock:
            depth = self._depth(stamp_ns, image)
            result = self._detector.process(image, stamp_ns, odometry, depth=depth,
                                            camera=model)
            if result.keyframe_index is not None:
                self._table.add(result.keyframe_index, stamp_ns,
                                None if odometry is None or 'invalid_odometry' in result.events
                                else np.asarray(odometry.position))
            self._count(result)
            return self._arrays(result)

    def _camera_model(self, image: np.ndarray) -> CameraModel | None:
        cached = self.sensors.camera()
        height, width = image.shape[:2]
        if cached is None:
            if self._camera_source == 'none yet':
                logger.warning('slam: no camera_info received yet; the intrinsics are guessed '
                               'from the image size (%dx%d, 60 degrees horizontal field of '
                               'view) until one arrives', width, height)
            self._camera_source = f'guessed {width}x{height}'
            return None
        self._camera_source = f'camera_info {cached.width}x{cached.height}'
        return cached.scaled(width, height)

    def _depth(self, stamp_ns: int, image: np.ndarray) -> np.ndarray | None:
        if not self._expects_depth:
            return None
        depth = self.sensors.depth_at(stamp_ns, self._tolerance_ns)
        if depth is not None and not registered(depth, image.shape[0], image.shape[1]):
            depth = None
        self._counts['depth_used' if depth is not None else 'depth_missing'] += 1
        return depth

    def _count(self, result: LoopResult) -> None:
        counts = self._counts
        counts['keyframes'] += int(result.keyframe)
        loop = result.loop
        if loop is not None:
            counts['loops_accepted'] += 1
            counts['loops_unverified'] += int(not loop.verification.accepted)
            counts[f'verification.{loop.verification.reason}'] += 1
        elif result.reason not in ('not_keyframe', 'too_recent', 'low_score', 'inconsistent'):
            counts[f'verification.{result.reason}'] += 1

    def _arrays(self, result: LoopResult) -> LoopArrays:
        loop = result.loop
        constraint = None
        if loop is not None and loop.verification.pose is not None:
            pose = loop.verification.pose
            constraint = base_constraint(pose.rotation, pose.translation, pose.covariance,
                                         self._camera_in_base, metric=pose.metric)
        query = None if result.keyframe_index is None else \
            self._table.position(result.keyframe_index)
        return loop_arrays(result, self._table, self._table.previous_rows, query, constraint)

    def reset(self) -> None:
        """Forget the temporal consistency state (the keyframes stay)."""
        with self._lock:
            self._detector.reset()

    def update(self, changes: dict[str, Any]) -> None:
        """Apply runtime ``loops.*`` changes."""
        values = loop_values(changes)
        if values:
            with self._lock:
                self._detector.update_config(loop_config(values, self._detector.config))

    def save(self) -> str:
        """Write the previous map plus this session's keyframes to ``map_dir``: a snapshot
        taken under the pipeline lock, written outside it (frames keep flowing), one save
        at a time."""
        if not self._map_dir:
            raise MapError('slam mode without map_dir: there is nowhere to save the session')
        with self._save_lock:
            with self._lock:
                session = self._detector.size - self._table.previous_rows
                if session == 0:
                    return (f'map {self._map_dir}: nothing new to save (no keyframes this '
                            'session)')
                snapshot = self._detector.snapshot()
            map_id = write_session(snapshot, self._map_dir)
        return (f'saved map {self._map_dir}: {snapshot.database.size} keyframes ({session} of '
                f'this session, id {map_id})')

    def close(self) -> None:
        """Free the model and the database."""
        device = self._extractor.device
        with self._lock:
            self._detector = None
            self._extractor = None
        devices.release_memory(device)

    def status(self) -> dict[str, str]:
        """Device, model, map, keyframes, database size, loops and verification outcomes."""
        with self._lock:
            counts = dict(self._counts)
            size = self._detector.size if self._detector is not None else 0
        values = dict(self._info, previous_map_id=self._previous_id or '(none)',
                      previous_keyframes=str(self._table.previous_rows),
                      database_size=str(size), camera_model=self._camera_source,
                      camera_infos=str(self.sensors.camera_infos))
        for name in ('keyframes', 'loops_accepted', 'loops_unverified'):
            values[name] = str(counts.pop(name, 0))
        values.update({name: str(count) for name, count in sorted(counts.items())})
        return values


def load_previous(map_dir: str, extractor: Extractor) -> MapDatabase | None:
    """The map at ``map_dir`` (a previous session, or any map of this model), None when
    ``map_dir`` is empty or holds no map yet. Raises VPRError for a map of another model."""
    if not map_dir or not map_exists(map_dir):
        if map_dir:
            logger.info('slam: no map at %s yet; ~/save_map will create it', map_dir)
        return None
    return MapDatabase.load(map_dir, expected_fingerprint=extractor.fingerprint)


def registered(depth: np.ndarray, height: int, width: int) -> bool:
    """Whether ``depth`` can be registered to a ``height`` x ``width`` colour image: the same
    aspect ratio (within 1 %), any resolution. It is passed on as it is: the geometry reads
    depth only at matched keypoints, scaling their pixel coordinates
    (:func:`vpr_core.geometry.pnp.sample_depth`), so nothing is resampled per frame (a depth
    image of another aspect ratio is counted as ``depth_missing``)."""
    ratio = (depth.shape[1] / depth.shape[0]) / (width / height)
    return abs(ratio - 1.0) <= 0.01


def slam_pipeline(settings: Any, extractor: Extractor, camera_in_base: Pose) -> SlamPipeline:
    """The SLAM pipeline of a node's ``settings`` (NodeSettings)."""
    return SlamPipeline(extractor, settings.loops, map_dir=settings.map_dir,
                        camera_in_base=camera_in_base, frame_id=settings.map_frame,
                        depth_tolerance_s=settings.depth_tolerance_s,
                        expects_depth=bool(settings.depth_topic))
