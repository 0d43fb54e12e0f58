"""Ground truth of a query bag against a map: by pose topic and radius, or by index alignment.

Pose topic: the base pose in the map frame (Odometry, PoseStamped, PoseWithCovarianceStamped
or NavSatFix) is interpolated at every image stamp; the query camera is that pose composed
with the camera's extrinsic, and its positives are the map places (camera poses) within the
radius, horizontal distance inclusive, as in ``vpr evaluate``. A frame without a pose sample
within the tolerance is not scored.

Index alignment: frame k of the bag shows map row k; rows within ``tolerance`` of k are
positives, and map row k's pose (as a base pose) is the ground truth position. Frames past the
end of the map keep no positive (they count as failures) and no position.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vpr_core import bags
from vpr_core.errors import ConfigError
from vpr_core.evaluation.datasets import positives_within
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.pose import compose, geodetic_to_enu, interpolate_poses, invert, Pose

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroundTruth:
    """Per bag frame (F frames, bag order).

    ``known`` [F] bool: the frame is scored; ``positives``: F int64 arrays of map rows;
    ``positions`` [F, 3] and ``orientations`` [F, 4]: the base pose in the map frame (NaN
    where unknown); ``places`` [F] int64: the aligned map row (index alignment, else -1);
    ``orientation_known``: yaw errors are meaningful; ``info``: what the report records.
    """

    known: np.ndarray
    positives: tuple[np.ndarray, ...]
    positions: np.ndarray
    orientations: np.ndarray
    places: np.ndarray
    orientation_known: bool
    info: dict = field(default_factory=dict)


def radius_truth(bag: str | Path, topic: str, stamps_ns: np.ndarray, map_db: MapDatabase,
                 radius_m: float, tolerance_s: float, camera_in_base: Pose,
                 same_frame: bool = False) -> GroundTruth:
    """Positives within ``radius_m`` of the poses on ``topic`` at ``stamps_ns`` [F]."""
    if radius_m <= 0:
        raise ConfigError(f'--radius must be > 0 m, got {radius_m}')
    track = bags.read_pose_track(bag, topic)
    if not len(track.stamps_ns):
        raise ConfigError(f"ground-truth topic '{topic}' in {bag} holds no usable pose")
    positions = track.positions + map_offset(track, map_db, same_frame)
    positions, orientations, known = interpolate_poses(track.stamps_ns, positions,
                                                       track.orientations, stamps_ns,
                                                       tolerance_s)
    cameras, _ = compose(positions, orientations, camera_in_base)
    query_xy = np.where(known[:, None], cameras[:, :2], np.nan)
    positives = positives_within(map_db.positions[:, :2], query_xy, radius_m)
    positions[~known] = np.nan
    orientations[~known] = np.nan
    if (~known).any():
        logger.warning('%d of %d frames have no ground-truth pose within %.2f s: not scored',
                       int((~known).sum()), len(known), tolerance_s)
    info = {'kind': 'radius', 'gt_topic': topic, 'gt_type': track.msgtype,
            'gt_frame_id': track.frame_id, 'radius_m': float(radius_m),
            'gt_tolerance_s': float(tolerance_s), 'gt_messages': int(len(track.stamps_ns)),
            'gt_messages_skipped': int(track.skipped)}
    orientation_known = map_db.manifest.orientation_source != 'none'
    return GroundTruth(known, positives, positions, orientations,
                       np.full(len(known), -1, dtype=np.int64), orientation_known, info)


def index_truth(count: int, map_db: MapDatabase, tolerance: int,
                camera_in_base: Pose) -> GroundTruth:
    """Frame k of ``count`` matches map rows within ``tolerance`` of row k."""
    if tolerance < 0:
        raise ConfigError(f'--index-tolerance must be >= 0 places, got {tolerance}')
    if map_db.manifest.keyframing.get('applied'):
        logger.warning('the map was built with keyframe selection: its row k need not show '
                       'the place of frame k, so index alignment may not hold')
    if count != map_db.size:
        logger.warning('index alignment of %d frames against %d map places', count, map_db.size)
    frames = np.arange(count, dtype=np.int64)
    positives = tuple(np.arange(max(0, k - tolerance), min(map_db.size, k + tolerance + 1),
                                dtype=np.int64) for k in frames)
    inside = frames < map_db.size
    positions = np.full((count, 3), np.nan)
    orientations = np.full((count, 4), np.nan)
    rows = frames[inside]
    positions[inside], orientations[inside] = compose(
        map_db.positions[rows], map_db.orientations[rows], invert(camera_in_base))
    info = {'kind': 'index', 'index_tolerance': int(tolerance)}
    return GroundTruth(np.ones(count, dtype=bool), positives, positions, orientations,
                       np.where(inside, frames, -1), map_db.manifest.orientation_source != 'none',
                       info)


def map_offset(track: bags.PoseTrack, map_db: MapDatabase, same_frame: bool) -> np.ndarray:
    """[3] shift that expresses ``track`` in the map frame (zero unless two NavSatFix tracks
    have different origins); a frame the map does not share raises ConfigError."""
    manifest = map_db.manifest
    track_geo, map_geo = track.geo_origin is not None, manifest.geo_origin is not None
    if track_geo and map_geo:
        # East-north-up frames at two origins: shift by the track origin seen from the map's.
        # The tangent planes tilt by distance / earth radius (0.16 m error per km apart).
        origin = np.array(track.geo_origin, dtype=np.float64)
        return geodetic_to_enu(origin[:1], origin[1:2], origin[2:], manifest.geo_origin)[0]
    if track_geo != map_geo and not same_frame:
        have = 'NavSatFix (geodetic)' if track_geo else f"frame '{track.frame_id}'"
        want = 'geodetic' if map_geo else f"frame '{manifest.frame_id}'"
        raise ConfigError(f'ground-truth poses are {have} but the map is {want}; build the map '
                          'from the same kind of pose source')
    if track.frame_id != manifest.frame_id and not same_frame:
        raise ConfigError(f"ground-truth poses are in frame '{track.frame_id}' but the map is "
                          f"in frame '{manifest.frame_id}'; pass --same-frame if they are one "
                          'frame under two names')
    return np.zeros(3)
