"""What the node asks of vpr_core, and how it gets it from the parameters.

The node only sees :class:`Pipeline`: one ``process`` call per frame. Building it (model,
map, recognizer) is vpr_core's job; this module only turns node settings into those calls.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np

from vpr_core import devices
from vpr_core.extractor import Extractor
from vpr_core.localization import LocalizationConfig, LocalizationResult, PlaceRecognizer
from vpr_core.mapdb import MapDatabase, multiply_quaternions, Pose
from vpr_ros.parameter_specs import engine_config
from vpr_ros.parameters import engine_values, NodeSettings


class Pipeline(Protocol):
    """The localization (or teach-mode recording) engine of one configured node."""

    def process(self, image: np.ndarray, stamp: float, odometry: Pose | None = None,
                camera: int = 0) -> Any:
        """RGB [H, W, 3] uint8 at ``stamp`` (s) -> a vpr_core ``LocalizationResult`` (SLAM
        mode: ``stamp`` in integer ns -> :class:`~vpr_ros.result.LoopArrays`)."""

    def reset(self) -> None:
        """Forget the temporal state (relocalization from scratch)."""

    def update(self, changes: dict[str, Any]) -> None:
        """Apply runtime parameter changes (``localization.*`` names and ``top_k``, typed
        ROS values, validated already)."""

    def save(self) -> str:
        """Teach mode: write the map atomically; returns a summary."""

    def close(self) -> None:
        """Free model and map memory (GPU included)."""

    def status(self) -> dict[str, str]:
        """Device, map id and size, model: for diagnostics."""


PipelineFactory = Callable[[NodeSettings], Pipeline]


def extrinsic_pose(xyz_rpy: tuple[float, ...]) -> Pose:
    """(x, y, z, roll, pitch, yaw) -> Pose; fixed axes X, Y, Z (REP-103 roll/pitch/yaw)."""
    x, y, z, roll, pitch, yaw = (float(v) for v in xyz_rpy)
    rotations = [np.array([np.sin(a / 2) * axis[0], np.sin(a / 2) * axis[1],
                           np.sin(a / 2) * axis[2], np.cos(a / 2)])
                 for a, axis in ((yaw, (0, 0, 1)), (pitch, (0, 1, 0)), (roll, (1, 0, 0)))]
    quaternion = multiply_quaternions(multiply_quaternions(rotations[0], rotations[1]),
                                      rotations[2])
    return Pose.from_sequence((x, y, z, *quaternion))


class LocalizationPipeline:
    """One :class:`PlaceRecognizer` per camera over one map and one model.

    Each camera gets its own temporal window (a sequence only makes sense along one
    camera's stream); they share the map and the extractor.
    """

    def __init__(self, extractor: Extractor, map_db: MapDatabase, config: LocalizationConfig,
                 extrinsics: list[Pose]) -> None:
        self._extractor = extractor
        self._map = map_db
        self._extrinsics = extrinsics
        self._recognizers = [PlaceRecognizer(map_db, extractor, config) for _ in extrinsics]
        manifest = map_db.manifest
        self._info = {'device': str(extractor.device), 'backend': extractor.backend,
                      'map_id': manifest.map_id,
                      'map_size': str(map_db.size), 'map_frame_id': manifest.frame_id,
                      'model': extractor.fingerprint[:16],
                      'descriptor_dim': str(extractor.descriptor_dim),
                      'code_bits': str(extractor.code_bits)}

    def process(self, image: np.ndarray, stamp: float, odometry: Pose | None = None,
                camera: int = 0) -> LocalizationResult:
        return self._recognizers[camera].process(image, stamp, odometry=odometry,
                                                 camera_in_base=self._extrinsics[camera])

    def reset(self) -> None:
        for recognizer in self._recognizers:
            recognizer.reset()

    def update(self, changes: dict[str, Any]) -> None:
        values = engine_values(changes)
        if not values:
            return
        config = engine_config(values, self._recognizers[0].config)
        for recognizer in self._recognizers:
            recognizer.update_config(config)

    def save(self) -> str:
        return ''

    def close(self) -> None:
        device = self._extractor.device
        self._recognizers, self._extractor, self._map = [], None, None
        devices.release_memory(device)

    def status(self) -> dict[str, str]:
        return dict(self._info)


def load_pipeline(settings: NodeSettings) -> Pipeline:
    """Build the vpr_core engine for ``settings``; VPRError when a file is missing or the map
    and the model do not fit together (named in the message). In teach mode a map already at
    ``map_dir`` must fit the model and ``map_frame`` now (configure fails otherwise), since
    the recorded keyframes are appended to it."""
    devices.apply_thread_policy(settings.threads or None)     # one worker thread computes
    extractor = Extractor.from_weights(settings.weights or None, device=settings.device,
                                       backend=settings.backend)
    extrinsics = [extrinsic_pose(settings.extrinsic(camera))
                  for camera in range(len(settings.image_topics))]
    if settings.mode == 'slam':
        from vpr_ros.slam import slam_pipeline
        return slam_pipeline(settings, extractor, extrinsics[0])
    if settings.mode == 'teach':
        from vpr_ros.teach import TeachPipeline
        return TeachPipeline(extractor, settings.map_dir, settings.teach, extrinsics,
                             settings.map_frame)
    map_db = MapDatabase.load(settings.map_dir, expected_fingerprint=extractor.fingerprint)
    map_db.check_compatible(extractor.fingerprint, extractor.descriptor_dim,
                            extractor.code_bits)
    return LocalizationPipeline(extractor, map_db, settings.localization, extrinsics)
