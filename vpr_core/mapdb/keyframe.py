"""Keyframe selection: keep a frame when the robot moved, turned, or enough time passed.

A robot parked for ten minutes must not fill the map, so time alone only adds a keyframe when
``max_interval_s`` is set; ``min_interval_s`` caps the keyframe rate whatever the motion.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vpr_core.mapdb.pose import yaw_from_quaternions


@dataclass(frozen=True)
class KeyframeConfig:
    """When a frame becomes a keyframe (0 disables a criterion).

    ``min_distance_m``: travelled distance since the last keyframe; ``min_heading_deg``: yaw
    change since the last keyframe; ``max_interval_s``: time since the last keyframe, even
    without motion; ``min_interval_s``: never two keyframes closer in time than this.
    """

    enabled: bool = True
    min_distance_m: float = 1.0
    min_heading_deg: float = 15.0
    max_interval_s: float = 0.0
    min_interval_s: float = 0.0


class KeyframeSelector:
    """Incremental keyframe decisions for a stream of time-ordered poses."""

    def __init__(self, config: KeyframeConfig) -> None:
        self.config = config
        self.travelled = 0.0
        self._previous: np.ndarray | None = None
        self._last: tuple[float, float, int] | None = None     # travelled, yaw, stamp

    def offer(self, position: np.ndarray, orientation: np.ndarray, stamp_ns: int) -> bool:
        """True when this frame becomes a keyframe (the first frame always does)."""
        position = np.asarray(position, dtype=np.float64).reshape(3)
        if self._previous is not None:
            self.travelled += float(np.linalg.norm(position - self._previous))
        self._previous = position
        yaw = float(yaw_from_quaternions(np.asarray(orientation).reshape(1, 4))[0])
        if self._last is None or not self.config.enabled or self._due(yaw, int(stamp_ns)):
            self._last = (self.travelled, yaw, int(stamp_ns))
            return True
        return False

    def _due(self, yaw: float, stamp_ns: int) -> bool:
        config = self.config
        last_travelled, last_yaw, last_stamp = self._last
        elapsed = (stamp_ns - last_stamp) / 1e9
        if config.min_interval_s > 0 and elapsed < config.min_interval_s:
            return False
        moved = config.min_distance_m > 0 and \
            self.travelled - last_travelled >= config.min_distance_m
        turn = abs(np.angle(np.exp(1j * (yaw - last_yaw))))
        turned = config.min_heading_deg > 0 and turn >= np.radians(config.min_heading_deg)
        waited = config.max_interval_s > 0 and elapsed >= config.max_interval_s
        return bool(moved or turned or waited)


def select_keyframes(positions: np.ndarray, orientations: np.ndarray, stamps_ns: np.ndarray,
                     config: KeyframeConfig) -> np.ndarray:
    """Indices [K] of the keyframes among time-ordered frames ([N, 3], [N, 4], [N]).

    The first frame is always a keyframe. Distance is measured along the path (the sum of the
    steps between consecutive frames), so a loop back to the start still counts as motion.
    """
    selector = KeyframeSelector(config)
    kept = [i for i in range(len(stamps_ns))
            if selector.offer(positions[i], orientations[i], stamps_ns[i])]
    return np.asarray(kept, dtype=np.int64)
