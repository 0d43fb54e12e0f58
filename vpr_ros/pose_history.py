"""The recent poses of ``pose_topic`` (odometry or a SLAM pose), looked up at image stamps.

A live, bounded history that the node fills from its subscription; not to be confused with
:class:`vpr_core.bags.PoseTrack`, a complete trajectory read from a bag.
"""
from __future__ import annotations

import bisect
from collections import deque
import threading

from geometry_msgs.msg import PoseStamped, PoseWithCovarianceStamped
from nav_msgs.msg import Odometry
import numpy as np

from vpr_core.mapdb import interpolate_poses, Pose
from vpr_ros.conversions import pose_vector, stamp_ns

POSE_TYPES = {
    'odometry': Odometry,
    'pose': PoseStamped,
    'pose_with_covariance': PoseWithCovarianceStamped,
}


def pose_of(message) -> np.ndarray:
    """Odometry / PoseStamped / PoseWithCovarianceStamped -> [7] (x y z qx qy qz qw)."""
    pose = message.pose
    return pose_vector(pose.pose if hasattr(pose, 'pose') else pose)


class PoseHistory:
    """Thread-safe ring buffer of stamped poses with interpolation at query stamps.

    A sample more than ``tolerance_s`` older than the newest means time went back (a bag
    replay restarted, a simulation reset): the history starts again from it.
    """

    def __init__(self, capacity: int = 2000, tolerance_s: float = 0.5) -> None:
        self._stamps_ns: deque[int] = deque(maxlen=capacity)
        self._poses: deque[np.ndarray] = deque(maxlen=capacity)
        self._tolerance_s = tolerance_s
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._stamps_ns)

    def add(self, stamp_ns: int, pose: np.ndarray) -> None:
        """Append a pose [7]; slightly out-of-order samples are ignored, a jump back in time
        restarts the history."""
        with self._lock:
            if self._stamps_ns and stamp_ns <= self._stamps_ns[-1]:
                if self._stamps_ns[-1] - stamp_ns <= self._tolerance_s * 1e9:
                    return
                self._clear()
            self._stamps_ns.append(int(stamp_ns))
            self._poses.append(np.asarray(pose, dtype=np.float64).reshape(7))

    def add_message(self, message) -> None:
        """Append the pose of an Odometry / PoseStamped / PoseWithCovarianceStamped."""
        self.add(stamp_ns(message.header.stamp), pose_of(message))

    def clear(self) -> None:
        """Forget every pose (the node stops its inputs)."""
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self._stamps_ns.clear()
        self._poses.clear()

    def pose_at(self, stamp_ns: int) -> Pose | None:
        """Pose interpolated at ``stamp_ns``; None without a sample within the tolerance."""
        with self._lock:
            count = len(self._stamps_ns)
            if not count:
                return None
            # Only the samples on either side of the stamp matter to the interpolation.
            index = bisect.bisect_left(self._stamps_ns, stamp_ns)
            lo = max(min(index, count - 1) - 1, 0)
            window = range(lo, min(lo + 2, count))
            stamps = np.array([self._stamps_ns[i] for i in window], dtype=np.int64)
            poses = np.stack([self._poses[i] for i in window])
        positions, orientations, valid = interpolate_poses(
            stamps, poses[:, :3], poses[:, 3:], np.array([stamp_ns]), self._tolerance_s)
        if not valid[0]:
            return None
        return Pose(tuple(float(v) for v in positions[0]),
                    tuple(float(v) for v in orientations[0]))
