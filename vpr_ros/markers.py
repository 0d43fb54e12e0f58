"""RViz markers for the candidates of one query (spheres coloured by score, rank labels and
an arrow on the accepted pose) and, in SLAM mode, the loop edges of the session."""
from __future__ import annotations

from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point
import numpy as np
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from vpr_ros.conversions import header, pose_message

NAMESPACE = 'vpr_candidates'
LOOP_NAMESPACE = 'vpr_loops'


def candidate_markers(stamp: Time, frame_id: str, poses: np.ndarray, scores: np.ndarray,
                      accepted_pose: np.ndarray | None, scale_m: float = 1.0) -> MarkerArray:
    """Markers for ranked candidate ``poses`` [K, 7] with ``scores`` [K].

    Starts with a DELETEALL so the previous query's markers disappear; ``accepted_pose`` [7]
    (or None) adds a green arrow.
    """
    markers = [Marker(header=header(stamp, frame_id), ns=NAMESPACE, action=Marker.DELETEALL)]
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 7)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    for rank, (pose, score) in enumerate(zip(poses, scores)):
        markers.append(_sphere(stamp, frame_id, rank, pose, score, scale_m))
        markers.append(_label(stamp, frame_id, rank, pose, score, scale_m))
    if accepted_pose is not None:
        arrow = _marker(stamp, frame_id, 2 * len(poses), Marker.ARROW, accepted_pose)
        arrow.scale.x, arrow.scale.y, arrow.scale.z = 2.0 * scale_m, 0.3 * scale_m, 0.3 * scale_m
        arrow.color = ColorRGBA(r=0.1, g=0.9, b=0.1, a=1.0)
        markers.append(arrow)
    return MarkerArray(markers=markers)


def _marker(stamp: Time, frame_id: str, marker_id: int, kind: int, pose: np.ndarray) -> Marker:
    marker = Marker(header=header(stamp, frame_id), ns=NAMESPACE, id=marker_id, type=kind,
                    action=Marker.ADD, pose=pose_message(pose))
    marker.lifetime = Duration(sec=0, nanosec=0)
    return marker


def _sphere(stamp: Time, frame_id: str, rank: int, pose: np.ndarray, score: float,
            scale_m: float) -> Marker:
    sphere = _marker(stamp, frame_id, 2 * rank, Marker.SPHERE, pose)
    size = scale_m * (1.0 if rank == 0 else 0.6)
    sphere.scale.x = sphere.scale.y = sphere.scale.z = size
    strength = float(np.clip(score, 0.0, 1.0))
    sphere.color = ColorRGBA(r=1.0 - strength, g=strength, b=0.2, a=0.8)
    return sphere


def _label(stamp: Time, frame_id: str, rank: int, pose: np.ndarray, score: float,
           scale_m: float) -> Marker:
    label = _marker(stamp, frame_id, 2 * rank + 1, Marker.TEXT_VIEW_FACING, pose)
    label.pose.position.z += 1.2 * scale_m
    label.scale.z = 0.5 * scale_m
    label.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
    label.text = f'#{rank + 1} {score:.2f}'
    return label


def loop_edge_markers(stamp: Time, frame_id: str, edges: np.ndarray,
                      scale_m: float = 1.0) -> MarkerArray:
    """One LINE_LIST (namespace ``vpr_loops``, id 0, replaced on every call) joining the two
    keyframe positions of each loop edge given: ``edges`` [E, 2, 3] (the caller keeps the
    newest few hundred)."""
    marker = _marker(stamp, frame_id, 0, Marker.LINE_LIST,
                     np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]))
    marker.ns = LOOP_NAMESPACE
    marker.scale.x = 0.1 * scale_m
    marker.color = ColorRGBA(r=1.0, g=0.2, b=0.8, a=1.0)
    marker.points = [Point(x=float(x), y=float(y), z=float(z))
                     for x, y, z in np.asarray(edges, dtype=np.float64).reshape(-1, 3)]
    return MarkerArray(markers=[marker])
