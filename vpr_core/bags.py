"""rosbag2 input and output through ``rosbags`` (sqlite3 and MCAP alike, no ROS install).

Reading gives what the map builder and the evaluators need: image stamps, decoded RGB images
of chosen frames (a second pass, so a long bag never sits in memory), and a pose track from
``nav_msgs/Odometry``, ``geometry_msgs/PoseStamped``, ``PoseWithCovarianceStamped`` or
``sensor_msgs/NavSatFix`` (converted to east-north-up metres around the first fix, heading
from the direction of travel). Writing makes small bags for tests and the demo.
"""
from __future__ import annotations

import logging
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from vpr_core.errors import BagError, UnsupportedImageError
from vpr_core.image import decode_compressed, decode_raw, encode_compressed, encode_raw
from vpr_core.mapdb.pose import (geodetic_to_enu, heading_from_track, normalise_quaternions,
                                 Pose, quaternions_from_yaw)

logger = logging.getLogger(__name__)

IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')
POSE_TYPES = ('nav_msgs/msg/Odometry', 'geometry_msgs/msg/PoseStamped',
              'geometry_msgs/msg/PoseWithCovarianceStamped', 'sensor_msgs/msg/NavSatFix')
STORAGES = ('sqlite3', 'mcap')
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'


@dataclass(frozen=True)
class PoseTrack:
    """Time-ordered poses read from one topic.

    ``stamps_ns`` [M] int64, ``positions`` [M, 3], ``orientations`` [M, 4] (x, y, z, w);
    ``orientation_source``: ``pose`` (from the messages) or ``track`` (direction of travel,
    for NavSatFix); ``geo_origin``: (lat, lon, alt) of the local frame for NavSatFix tracks.
    """

    stamps_ns: np.ndarray
    positions: np.ndarray
    orientations: np.ndarray
    frame_id: str
    msgtype: str
    orientation_source: str = 'pose'
    geo_origin: tuple[float, float, float] | None = None
    skipped: int = 0


def _typestore():
    from rosbags.typesys import get_typestore, Stores
    return get_typestore(Stores.ROS2_HUMBLE)


def open_reader(path: str | Path):
    """An opened rosbags ``AnyReader`` of the bag at ``path`` (close it); BagError if none."""
    from rosbags.highlevel import AnyReader, AnyReaderError
    path = Path(path)
    if not path.exists():
        raise BagError(f'bag not found: {path}')
    try:
        reader = AnyReader([path], default_typestore=_typestore())
        reader.open()
    except (AnyReaderError, OSError, ValueError, KeyError) as exc:
        raise BagError(f'cannot open bag {path}: {exc}') from exc
    return reader


def list_topics(path: str | Path) -> dict[str, tuple[str, int]]:
    """Topic -> (message type, message count) of a bag."""
    reader = open_reader(path)
    try:
        return {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
    finally:
        reader.close()


def topic_connections(reader, path, topic: str, allowed: Sequence[str]):
    """The connections of ``topic`` in an open reader; BagError if absent or of another type."""
    found = [c for c in reader.connections if c.topic == topic]
    if not found:
        topics = ', '.join(sorted({f'{c.topic} ({c.msgtype})' for c in reader.connections}))
        raise BagError(f"bag {path} has no topic '{topic}' (topics: {topics or 'none'})")
    if found[0].msgtype not in allowed:
        raise BagError(f"topic '{topic}' in {path} carries {found[0].msgtype}; expected one "
                       f"of {', '.join(allowed)}")
    return found


def header_stamp_ns(header, fallback_ns: int) -> int:
    """A message header's stamp in ns, or ``fallback_ns`` (bag time) where the stamp is zero."""
    stamp = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
    return stamp if stamp > 0 else int(fallback_ns)


def read_image_stamps(path: str | Path, topic: str) -> np.ndarray:
    """[N] int64 header stamps (bag time where a header stamp is zero), in bag order."""
    reader = open_reader(path)
    try:
        connections = topic_connections(reader, path, topic, IMAGE_TYPES)
        stamps = [header_stamp_ns(reader.deserialize(raw, c.msgtype).header, t)
                  for c, t, raw in reader.messages(connections=connections)]
    finally:
        reader.close()
    return np.asarray(stamps, dtype=np.int64)


@dataclass(frozen=True)
class BagImage:
    """One image message of a topic: ``index`` in bag order, header ``stamp_ns`` (bag time
    where the header stamp is zero), and either ``image`` (RGB [H, W, 3] uint8) or ``error``
    (why it could not be decoded)."""

    index: int
    stamp_ns: int
    image: np.ndarray | None
    error: UnsupportedImageError | None = None


def iter_image_frames(path: str | Path, topic: str,
                      indices: Sequence[int] | None = None) -> Iterator[BagImage]:
    """Yield a :class:`BagImage` for each chosen message (all if None), in bag order; an
    undecodable payload is yielded with its error and the stream goes on."""
    wanted = None if indices is None else set(int(i) for i in indices)
    reader = open_reader(path)
    try:
        connections = topic_connections(reader, path, topic, IMAGE_TYPES)
        for i, (c, t, raw) in enumerate(reader.messages(connections=connections)):
            if wanted is not None and i not in wanted:
                continue
            msg = reader.deserialize(raw, c.msgtype)
            stamp_ns = header_stamp_ns(msg.header, t)
            try:
                frame = BagImage(i, stamp_ns, decode_image_message(msg, c.msgtype))
            except UnsupportedImageError as exc:
                frame = BagImage(i, stamp_ns, None, exc)
            yield frame
    finally:
        reader.close()


def iter_images(path: str | Path, topic: str,
                indices: Sequence[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(message index, RGB [H, W, 3] uint8)`` for the chosen messages (all if None),
    raw or compressed, in bag order; an undecodable one raises its UnsupportedImageError
    (:func:`iter_image_frames` yields it instead and goes on)."""
    with closing(iter_image_frames(path, topic, indices)) as frames:
        for frame in frames:
            if frame.error is not None:
                raise frame.error
            yield frame.index, frame.image


def decode_image_message(msg, msgtype: str) -> np.ndarray:
    """A deserialised Image or CompressedImage -> RGB [H, W, 3] uint8."""
    if msgtype == 'sensor_msgs/msg/CompressedImage':
        return decode_compressed(msg.format, msg.data)
    return decode_raw(msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian),
                      msg.data)


def read_pose_track(path: str | Path, topic: str) -> PoseTrack:
    """The poses of ``topic`` sorted by stamp; NavSatFix without a fix are skipped."""
    reader = open_reader(path)
    try:
        connections = topic_connections(reader, path, topic, POSE_TYPES)
        msgtype = connections[0].msgtype
        rows, frame_id, skipped = [], '', 0
        for c, t, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, c.msgtype)
            frame_id = frame_id or msg.header.frame_id
            row = _pose_row(msg, msgtype)
            if row is None:
                skipped += 1
                continue
            rows.append((header_stamp_ns(msg.header, t), *row))
    finally:
        reader.close()
    rows.sort(key=lambda r: r[0])
    if msgtype == 'sensor_msgs/msg/NavSatFix':
        return _fix_track(rows, frame_id, msgtype, skipped)
    stamps = np.array([r[0] for r in rows], dtype=np.int64)
    values = np.array([r[1:] for r in rows], dtype=np.float64).reshape(-1, 7)
    return PoseTrack(stamps, values[:, :3], normalise_quaternions(values[:, 3:]),
                     frame_id or 'map', msgtype, skipped=skipped)


def _pose_row(msg, msgtype: str) -> tuple | None:
    if msgtype == 'sensor_msgs/msg/NavSatFix':
        values = (msg.latitude, msg.longitude, msg.altitude)
        if msg.status.status < 0 or not np.all(np.isfinite(values[:2])):
            return None
        return values
    pose = msg.pose if msgtype == 'geometry_msgs/msg/PoseStamped' else msg.pose.pose
    p, q = pose.position, pose.orientation
    return (p.x, p.y, p.z, q.x, q.y, q.z, q.w)


def _fix_track(rows, frame_id: str, msgtype: str, skipped: int) -> PoseTrack:
    stamps = np.array([r[0] for r in rows], dtype=np.int64)
    fixes = np.array([r[1:] for r in rows], dtype=np.float64).reshape(-1, 3)
    if not len(fixes):
        return PoseTrack(stamps, np.zeros((0, 3)), np.zeros((0, 4)), 'enu', msgtype, 'track',
                         None, skipped)
    origin = tuple(float(v) for v in np.nan_to_num(fixes[0]))
    positions = geodetic_to_enu(fixes[:, 0], fixes[:, 1], fixes[:, 2], origin)
    orientations = quaternions_from_yaw(heading_from_track(positions))
    logger.info('NavSatFix track: %d fixes in an east-north-up frame at lat %.7f lon %.7f',
                len(fixes), origin[0], origin[1])
    return PoseTrack(stamps, positions, orientations, 'enu', msgtype, 'track', origin, skipped)


@dataclass(frozen=True)
class CameraInfoRecord:
    """Intrinsics of a ``sensor_msgs/CameraInfo``: ``k`` (9, row-major), ``d`` and the size."""

    k: tuple[float, ...]
    d: tuple[float, ...]
    width: int
    height: int


def read_camera_info(path: str | Path, topic: str) -> CameraInfoRecord:
    """The first CameraInfo message of ``topic`` (a camera's intrinsics do not change)."""
    reader = open_reader(path)
    try:
        connections = topic_connections(reader, path, topic, (CAMERA_INFO_TYPE,))
        for c, _, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, c.msgtype)
            return CameraInfoRecord(tuple(float(v) for v in msg.k),
                                    tuple(float(v) for v in msg.d), int(msg.width),
                                    int(msg.height))
    finally:
        reader.close()
    raise BagError(f"topic '{topic}' in {path} has no CameraInfo message")


class BagWriter:
    """Write a rosbag2 (``storage`` sqlite3 or mcap) of images, poses and fixes.

    Use as a context manager; topics are created on first use.
    """

    def __init__(self, path: str | Path, storage: str = 'mcap') -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        if storage not in STORAGES:
            raise BagError(f"unknown bag storage '{storage}' (valid: {', '.join(STORAGES)})")
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        self._store = _typestore()
        self._writer = Writer(Path(path), version=9, storage_plugin=plugin)
        self._connections: dict[str, object] = {}

    def __enter__(self) -> 'BagWriter':
        self._writer.open()
        return self

    def __exit__(self, *exc_info) -> None:
        self._writer.close()

    def add_image(self, topic: str, stamp_ns: int, rgb: np.ndarray, *, compressed: bool = False,
                  frame_id: str = 'camera') -> None:
        """An RGB image as ``sensor_msgs/Image`` (rgb8) or ``CompressedImage`` (jpeg)."""
        types = self._store.types
        header = self._header(stamp_ns, frame_id)
        if compressed:
            fmt, data = encode_compressed(rgb, 'jpeg')
            msg = types['sensor_msgs/msg/CompressedImage'](header, fmt,
                                                           np.frombuffer(data, np.uint8))
        else:
            step, data = encode_raw(rgb, 'rgb8')
            msg = types['sensor_msgs/msg/Image'](header, rgb.shape[0], rgb.shape[1], 'rgb8', 0,
                                                 step, np.frombuffer(data, np.uint8))
        self._write(topic, msg, stamp_ns)

    def add_compressed(self, topic: str, stamp_ns: int, fmt: str, data: bytes, *,
                       frame_id: str = 'camera') -> None:
        """A ``CompressedImage`` with the given payload as is (tests write broken ones)."""
        msg = self._store.types['sensor_msgs/msg/CompressedImage'](
            self._header(stamp_ns, frame_id), fmt, np.frombuffer(bytes(data), np.uint8))
        self._write(topic, msg, stamp_ns)

    def add_pose(self, topic: str, stamp_ns: int, pose: Pose, *, kind: str = 'odometry',
                 frame_id: str = 'map', child_frame_id: str = 'base_link') -> None:
        """A pose as Odometry (``kind`` odometry), PoseStamped (pose) or
        PoseWithCovarianceStamped (pose_covariance)."""
        types = self._store.types
        geometry = types['geometry_msgs/msg/Pose'](
            types['geometry_msgs/msg/Point'](*pose.position),
            types['geometry_msgs/msg/Quaternion'](*pose.orientation))
        header = self._header(stamp_ns, frame_id)
        covariance = types['geometry_msgs/msg/PoseWithCovariance'](
            geometry, np.diag([0.01] * 6).reshape(-1))
        if kind == 'odometry':
            twist = types['geometry_msgs/msg/TwistWithCovariance'](
                types['geometry_msgs/msg/Twist'](types['geometry_msgs/msg/Vector3'](0, 0, 0),
                                                 types['geometry_msgs/msg/Vector3'](0, 0, 0)),
                np.zeros(36))
            msg = types['nav_msgs/msg/Odometry'](header, child_frame_id, covariance, twist)
        elif kind == 'pose':
            msg = types['geometry_msgs/msg/PoseStamped'](header, geometry)
        elif kind == 'pose_covariance':
            msg = types['geometry_msgs/msg/PoseWithCovarianceStamped'](header, covariance)
        else:
            raise BagError(f"unknown pose kind '{kind}' (valid: odometry, pose, "
                           'pose_covariance)')
        self._write(topic, msg, stamp_ns)

    def add_fix(self, topic: str, stamp_ns: int, latitude: float, longitude: float,
                altitude: float = 0.0, *, status: int = 0, frame_id: str = 'gps') -> None:
        """A ``sensor_msgs/NavSatFix`` (status -1 means no fix)."""
        types = self._store.types
        msg = types['sensor_msgs/msg/NavSatFix'](
            self._header(stamp_ns, frame_id), types['sensor_msgs/msg/NavSatStatus'](status, 1),
            latitude, longitude, altitude, np.zeros(9), 0)
        self._write(topic, msg, stamp_ns)

    def add_camera_info(self, topic: str, stamp_ns: int, k: Sequence[float], width: int,
                        height: int, d: Sequence[float] = (), *,
                        frame_id: str = 'camera') -> None:
        """A ``sensor_msgs/CameraInfo`` with camera matrix ``k`` (9 numbers), plumb_bob ``d``."""
        types = self._store.types
        k = np.asarray(k, dtype=np.float64).reshape(9)
        projection = np.zeros((3, 4))
        projection[:, :3] = k.reshape(3, 3)
        roi = types['sensor_msgs/msg/RegionOfInterest'](0, 0, 0, 0, False)
        msg = types[CAMERA_INFO_TYPE](
            self._header(stamp_ns, frame_id), int(height), int(width), 'plumb_bob',
            np.asarray(d, dtype=np.float64), k, np.eye(3).reshape(-1), projection.reshape(-1),
            0, 0, roi)
        self._write(topic, msg, stamp_ns)

    def _header(self, stamp_ns: int, frame_id: str):
        types = self._store.types
        stamp = types['builtin_interfaces/msg/Time'](int(stamp_ns // 1_000_000_000),
                                                     int(stamp_ns % 1_000_000_000))
        return types['std_msgs/msg/Header'](stamp, frame_id)

    def _write(self, topic: str, msg, stamp_ns: int) -> None:
        msgtype = msg.__msgtype__
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, msgtype,
                                                                   typestore=self._store)
        self._writer.write(self._connections[topic], int(stamp_ns),
                           self._store.serialize_cdr(msg, msgtype))
