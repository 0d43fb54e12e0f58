"""The node's output topics: one localization result -> standard messages, all stamped with the
image stamp and framed in ``map_frame``; in SLAM mode one loop result -> the loop closure,
its relative-pose constraint, the candidate keyframes and the loop edges (docs/loop_closure.md).

Which camera produced a result (several ``image_topics``) travels in ``~/candidates_cloud``:
every point carries a ``camera`` field (uint32, the index into ``image_topics``) after x, y,
z, score, place_id and rank. A PointCloud2 reader that selects fields by name is unaffected;
the pose prior and the candidates PoseArray published for the same frame carry the same stamp,
so the cloud names their camera too.
"""
from __future__ import annotations

from collections import deque

from builtin_interfaces.msg import Time
from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
import numpy as np
from rclpy.lifecycle import LifecycleNode
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Float64MultiArray
from visualization_msgs.msg import MarkerArray

from vpr_ros.conversions import (candidates_cloud, LOOP_CLOUD_DTYPE, loop_closure_message,
                                 pack_cloud, pose_array_message, pose_prior_message,
                                 stamp_seconds)
from vpr_ros.markers import candidate_markers, loop_edge_markers
from vpr_ros.result import LoopArrays, ResultArrays

OUTPUT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
MAX_LOOP_EDGES = 500     # newest loop edges drawn in ~/markers (the oldest go first)


class OutputPublishers:
    """Lifecycle publishers of ~/pose_prior, ~/candidates, ~/candidates_cloud,
    ~/loop_closure and ~/markers (they only publish while the node is active)."""

    def __init__(self, node: LifecycleNode, map_frame: str, prior_frame_id: str = '', *,
                 base_frame: str = 'base_link', slam: bool = False) -> None:
        self._node = node
        self.map_frame = map_frame
        self.prior_frame_id = prior_frame_id or map_frame
        self.base_frame = base_frame
        self.publish_markers = True
        self.marker_scale_m = 1.0
        self._edges: deque[np.ndarray] = deque(maxlen=MAX_LOOP_EDGES)
        make = node.create_lifecycle_publisher
        self._prior = make(PoseWithCovarianceStamped, '~/pose_prior', OUTPUT_QOS)
        self._candidates = make(PoseArray, '~/candidates', OUTPUT_QOS)
        self._cloud = make(PointCloud2, '~/candidates_cloud', OUTPUT_QOS)
        self._loop = make(Float64MultiArray, '~/loop_closure', OUTPUT_QOS)
        self._markers = make(MarkerArray, '~/markers', OUTPUT_QOS)
        self._constraint = make(PoseWithCovarianceStamped, '~/loop_constraint', OUTPUT_QOS) \
            if slam else None

    def publish(self, stamp: Time, arrays: ResultArrays, camera: int = 0) -> str:
        """Publish one result of camera ``camera``; returns 'accepted', 'rejected' or
        'invalid_covariance'.

        The pose prior and the loop closure go out only for accepted matches, and only with a
        covariance that passes the final guard.
        """
        frame = self.map_frame
        self._candidates.publish(pose_array_message(stamp, frame, arrays.poses))
        self._cloud.publish(with_camera(candidates_cloud(
            stamp, frame, arrays.poses[:, :3], arrays.scores, arrays.place_ids, arrays.ranks),
            camera))
        outcome = 'rejected'
        prior = None
        if arrays.accepted:
            prior = pose_prior_message(stamp, self.prior_frame_id, arrays.prior_pose,
                                       arrays.covariance)
            outcome = 'accepted' if prior is not None else 'invalid_covariance'
        if prior is not None:
            self._prior.publish(prior)
            if arrays.match_stamp_s is not None:
                self._loop.publish(loop_closure_message(stamp_seconds(stamp),
                                                        arrays.match_stamp_s))
        if self.publish_markers:
            accepted_pose = arrays.prior_pose if prior is not None else None
            self._markers.publish(candidate_markers(stamp, frame, arrays.poses, arrays.scores,
                                                    accepted_pose, self.marker_scale_m))
        return outcome

    def publish_loop(self, stamp: Time, arrays: LoopArrays, camera: int = 0) -> str:
        """Publish one SLAM-mode result; returns 'accepted', 'rejected' or
        'invalid_covariance'. Nothing goes out unless a loop was accepted; then, in this
        order: ~/loop_constraint (when the loop has a relative pose), ~/candidates_cloud,
        ~/loop_closure ``[t_cur, t_prev]`` (only when the match is a keyframe of this
        session: a previous session's t_prev is not in a live back-end's graph) and ~/markers
        (when both keyframe positions are known; the newest ``MAX_LOOP_EDGES`` edges), all
        stamped ``stamp`` (t_cur). A constraint whose covariance cannot be repaired withholds
        the whole loop."""
        if not arrays.accepted:
            return 'rejected'
        constraint = None
        if arrays.constraint is not None:
            constraint = pose_prior_message(stamp, self.base_frame, arrays.constraint,
                                            arrays.covariance)
            if constraint is None:
                return 'invalid_covariance'
            self._constraint.publish(constraint)
        self._cloud.publish(pack_cloud(stamp, self.map_frame, loop_points(arrays, camera)))
        if not previous_session(arrays):
            self._loop.publish(loop_closure_message(stamp_seconds(stamp),
                                                    arrays.match_stamp_ns / 1e9,
                                                    't_cur_t_prev'))
        edge = loop_edge(arrays)
        if edge is not None:
            self._edges.append(edge)
            if self.publish_markers:
                self._markers.publish(loop_edge_markers(stamp, self.map_frame,
                                                        np.stack(self._edges),
                                                        self.marker_scale_m))
        return 'accepted'

    def destroy(self) -> None:
        """Destroy every publisher (cleanup)."""
        for publisher in (self._prior, self._candidates, self._cloud, self._loop, self._markers,
                          self._constraint):
            if publisher is not None:
                self._node.destroy_lifecycle_publisher(publisher)


def loop_points(arrays: LoopArrays, camera: int) -> np.ndarray:
    """The ranked candidate keyframes of an accepted loop as LOOP_CLOUD_DTYPE points."""
    count = len(arrays.keyframes)
    points = np.zeros(count, dtype=LOOP_CLOUD_DTYPE)
    xyz = np.asarray(arrays.positions, dtype=np.float32).reshape(count, 3)
    points['x'], points['y'], points['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    points['score'] = np.nan
    if count:
        points['score'][0] = arrays.score
    points['place_id'] = arrays.place_ids
    points['rank'] = np.arange(count)
    points['camera'] = camera
    points['keyframe'] = arrays.keyframes
    points['stamp_sec'] = arrays.stamps_ns // 1_000_000_000
    points['stamp_nanosec'] = arrays.stamps_ns % 1_000_000_000
    points['previous_session'] = arrays.previous
    return points


def previous_session(arrays: LoopArrays) -> bool:
    """True when the accepted match (rank 0) is a keyframe of a previous session."""
    return bool(len(arrays.previous) and arrays.previous[0]) or bool(arrays.match_session)


def loop_edge(arrays: LoopArrays) -> np.ndarray | None:
    """[2, 3] positions of the current and the matched keyframe, when both are known in this
    session's odometry frame (a previous session's positions are in its own frame)."""
    if arrays.query_position is None or not len(arrays.positions) or arrays.previous[0]:
        return None
    edge = np.stack([np.asarray(arrays.query_position, dtype=np.float64).reshape(3),
                     arrays.positions[0]])
    return edge if np.all(np.isfinite(edge)) else None


def with_camera(cloud: PointCloud2, camera: int) -> PointCloud2:
    """``cloud`` with a uint32 ``camera`` field appended to every point (in place)."""
    count, step = cloud.width * cloud.height, cloud.point_step
    points = np.frombuffer(bytes(cloud.data), dtype=np.uint8).reshape(count, step)
    column = np.full((count, 1), camera, dtype='<u4').view(np.uint8)
    cloud.data = np.concatenate([points, column], axis=1).tobytes()
    cloud.fields.append(PointField(name='camera', offset=step, datatype=PointField.UINT32,
                                   count=1))
    cloud.point_step = step + 4
    cloud.row_step = cloud.point_step * cloud.width
    return cloud
