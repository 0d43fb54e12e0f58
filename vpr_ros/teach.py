"""Teach mode: the node's ``Pipeline`` surface over vpr_core's :class:`MapRecorder`.

The recorder keeps keyframes (vpr_core's keyframe rule, one selector per camera), computes
their descriptors at once and appends them to ``map_dir`` under the map's write lock, with the
schema of ``vpr build-map``: teach mode extends a built map and ``vpr build-map --append``
extends a taught one. A map already at ``map_dir`` is checked when the node configures (model,
frame, measured poses), so a mismatch fails configure instead of losing the drive at save time.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from vpr_core import devices
from vpr_core.config import from_dict
from vpr_core.errors import VPRError
from vpr_core.extractor import Extractor
from vpr_core.localization import LocalizationResult
from vpr_core.mapdb import BuildConfig, KeyframeConfig, MapRecorder, Pose

logger = logging.getLogger(__name__)


class TeachPipeline:
    """Keyframe recorder with the node's ``Pipeline`` surface (results carry no candidates)."""

    def __init__(self, extractor: Extractor, map_dir: str, keyframes: dict[str, Any],
                 extrinsics: list[Pose], frame_id: str) -> None:
        self._extractor = extractor
        self._device = str(extractor.device)
        config = BuildConfig(keyframes=from_dict(KeyframeConfig, keyframes, where='teach'))
        self._recorder = MapRecorder(extractor, config, frame_id, extrinsics=extrinsics,
                                     path=map_dir)

    @property
    def keyframes(self) -> int:
        """Keyframes recorded since start-up."""
        return len(self._recorder)

    def process(self, image: np.ndarray, stamp: float, odometry: Pose | None = None,
                camera: int = 0) -> LocalizationResult:
        stamp_ns = int(round(stamp * 1e9))
        if odometry is None:
            return _result(stamp_ns, 'no pose at the image stamp')
        if not self._recorder.add(image, stamp_ns, odometry, camera=camera):
            return _result(stamp_ns, 'not a keyframe')
        return _result(stamp_ns, 'keyframe recorded')

    def save(self) -> str:
        path = self._recorder.path
        database = self._recorder.save()
        if database is None:
            return f'map {path}: nothing new to save ({self.keyframes} keyframes recorded)'
        return (f'saved map {path}: {database.size} places ({self.keyframes} recorded now, '
                f'id {database.manifest.map_id})')

    def reset(self) -> None:
        """Keyframe spacing restarts from the next frame of each camera."""
        self._recorder.restart()

    def update(self, changes: dict[str, Any]) -> None:
        """Thresholds do not apply while teaching."""

    def close(self) -> None:
        """Free the model; keyframes that no save could add to ``map_dir`` (the node saved
        just before) are written as a map of their own beside it rather than lost."""
        if self._recorder.pending:
            try:
                self._recorder.rescue()
            except (VPRError, OSError) as exc:
                logger.error('teach: %d keyframes are lost, they could not be saved anywhere: '
                             '%s', self._recorder.pending, exc)
        device = self._extractor.device
        self._extractor = None
        devices.release_memory(device)

    def status(self) -> dict[str, str]:
        return {'device': self._device, 'map_dir': str(self._recorder.path),
                'map_frame_id': self._recorder.frame_id,
                'keyframes_recorded': str(self.keyframes),
                'keyframes_unsaved': str(self._recorder.pending)}


def _result(stamp_ns: int, reason: str) -> LocalizationResult:
    return LocalizationResult(stamp_ns, (), False, 0.0, reason, None, None, float('nan'), 0)
