"""ROS messages <-> numpy arrays: camera images in, poses, candidates and loop closures out.

Only standard messages. Image payloads are decoded by :mod:`vpr_core.image` (one decoder for
the node and the bag tools); PointCloud2 is packed with numpy (no sensor_msgs_py).
"""
from __future__ import annotations

from typing import Any

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseArray, PoseWithCovarianceStamped
import numpy as np
from sensor_msgs.msg import CompressedImage, PointCloud2, PointField
from std_msgs.msg import Float64MultiArray, Header, MultiArrayDimension

from vpr_core.errors import UnsupportedImageError
from vpr_core.image import (compressed_size, decode_compressed, decode_raw,
                            DEFAULT_MAX_IMAGE_PIXELS, SUPPORTED_ENCODINGS)

# Nav2's message validator rejects any covariance element above 1e9; robot_localization
# raises variances below 1e-9 to 1e-9, which it then treats as an exact measurement.
MAX_COVARIANCE = 1e9
MIN_VARIANCE = 1e-6

CLOUD_DTYPE = np.dtype({
    'names': ['x', 'y', 'z', 'score', 'place_id', 'rank'],
    'formats': ['<f4', '<f4', '<f4', '<f4', '<u4', '<u2'],
    'offsets': [0, 4, 8, 12, 16, 20],
    'itemsize': 24,
})
_POINT_FIELD_TYPES = {np.dtype('<f4'): PointField.FLOAT32, np.dtype('<u4'): PointField.UINT32,
                      np.dtype('<u2'): PointField.UINT16}
_NUMPY_TYPES = {PointField.INT8: 'i1', PointField.UINT8: 'u1', PointField.INT16: 'i2',
                PointField.UINT16: 'u2', PointField.INT32: 'i4', PointField.UINT32: 'u4',
                PointField.FLOAT32: 'f4', PointField.FLOAT64: 'f8'}


def image_to_rgb(message: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """``sensor_msgs/Image`` or ``CompressedImage`` -> RGB [H, W, 3] uint8.

    Raises UnsupportedImageError for an unknown encoding, a wrong data length, a zero size,
    more than ``max_pixels`` pixels (checked before decoding) or a payload that does not
    decode.
    """
    if isinstance(message, CompressedImage) or hasattr(message, 'format'):
        return decode_compressed(message.format, message.data, max_pixels=max_pixels)
    return decode_raw(message.encoding, message.height, message.width, message.step,
                      bool(message.is_bigendian), message.data, max_pixels=max_pixels)


def rejection_reason(message: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> str:
    """Short category of why ``message`` could not be decoded (a diagnostics key)."""
    if hasattr(message, 'format'):
        if len(message.data) == 0:
            return 'empty_payload'
        try:
            size = compressed_size(message.data)
        except UnsupportedImageError:
            return 'corrupt_payload'
        if size is None:
            return 'unknown_format'
        return 'too_large' if size[0] * size[1] > max_pixels else 'corrupt_payload'
    if message.encoding not in SUPPORTED_ENCODINGS:
        return 'unknown_encoding'
    if message.height == 0 or message.width == 0:
        return 'zero_size'
    if message.height * message.width > max_pixels:
        return 'too_large'
    if len(message.data) != message.step * message.height:
        return 'wrong_data_length'
    return 'corrupt_payload'


def stamp_seconds(stamp: Time) -> float:
    """``builtin_interfaces/Time`` -> seconds as float."""
    return stamp.sec + stamp.nanosec * 1e-9


def stamp_ns(stamp: Time) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds (exact)."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def stamp_from_seconds(seconds: float) -> Time:
    """Seconds -> ``builtin_interfaces/Time`` (nanosecond rounding)."""
    total_ns = int(round(seconds * 1e9))
    return Time(sec=total_ns // 1_000_000_000, nanosec=total_ns % 1_000_000_000)


def header(stamp: Time, frame_id: str) -> Header:
    """A header with a copy of ``stamp``."""
    return Header(stamp=Time(sec=stamp.sec, nanosec=stamp.nanosec), frame_id=frame_id)


def pose_message(pose: np.ndarray) -> Pose:
    """[7] (x, y, z, qx, qy, qz, qw) -> ``geometry_msgs/Pose`` with a unit quaternion."""
    values = np.asarray(pose, dtype=np.float64).reshape(7)
    quaternion = values[3:]
    norm = float(np.linalg.norm(quaternion))
    quaternion = quaternion / norm if norm > 1e-12 else np.array([0.0, 0.0, 0.0, 1.0])
    message = Pose()
    message.position.x, message.position.y, message.position.z = map(float, values[:3])
    (message.orientation.x, message.orientation.y, message.orientation.z,
     message.orientation.w) = map(float, quaternion)
    return message


def pose_vector(message: Pose) -> np.ndarray:
    """``geometry_msgs/Pose`` -> [7] (x, y, z, qx, qy, qz, qw) float64."""
    p, q = message.position, message.orientation
    return np.array([p.x, p.y, p.z, q.x, q.y, q.z, q.w], dtype=np.float64)


def safe_covariance(covariance: np.ndarray) -> np.ndarray | None:
    """Last guard before publishing a 6x6 pose covariance: [6, 6] -> [6, 6] or None.

    Variances are clipped into [MIN_VARIANCE, MAX_COVARIANCE]; if any off-diagonal element is
    negative or the matrix is not positive semi-definite, only the diagonal is kept (always
    valid and accepted by every consumer). A non-finite matrix cannot be repaired: None.
    """
    matrix = np.asarray(covariance, dtype=np.float64).reshape(6, 6)
    if not np.all(np.isfinite(matrix)):
        return None
    matrix = 0.5 * (matrix + matrix.T)
    variances = np.clip(np.diag(matrix), MIN_VARIANCE, MAX_COVARIANCE)
    off_diagonal = matrix - np.diag(np.diag(matrix))
    repaired = off_diagonal + np.diag(variances)
    if np.any(off_diagonal < 0) or np.linalg.eigvalsh(repaired).min() < 0:
        repaired = np.diag(variances)
    return repaired


def pose_prior_message(stamp: Time, frame_id: str, pose: np.ndarray,
                       covariance: np.ndarray) -> PoseWithCovarianceStamped | None:
    """Pose [7] + covariance [6, 6] -> ``PoseWithCovarianceStamped``; None if unrepairable."""
    guarded = safe_covariance(covariance)
    if guarded is None:
        return None
    message = PoseWithCovarianceStamped(header=header(stamp, frame_id))
    message.pose.pose = pose_message(pose)
    message.pose.covariance = [float(v) for v in guarded.reshape(36)]
    return message


def pose_array_message(stamp: Time, frame_id: str, poses: np.ndarray) -> PoseArray:
    """Ranked poses [K, 7] -> ``PoseArray`` (rank order kept)."""
    message = PoseArray(header=header(stamp, frame_id))
    message.poses = [pose_message(pose) for pose in np.asarray(poses).reshape(-1, 7)]
    return message


def candidates_cloud(stamp: Time, frame_id: str, positions: np.ndarray, scores: np.ndarray,
                     place_ids: np.ndarray, ranks: np.ndarray) -> PointCloud2:
    """Candidates -> ``PointCloud2`` with fields x, y, z, score, place_id, rank.

    ``positions`` [K, 3], ``scores`` [K], ``place_ids`` [K], ``ranks`` [K] (0 = best).
    """
    count = len(scores)
    points = np.zeros(count, dtype=CLOUD_DTYPE)
    xyz = np.asarray(positions, dtype=np.float32).reshape(count, 3)
    points['x'], points['y'], points['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    points['score'] = np.asarray(scores, dtype=np.float32)
    points['place_id'] = np.asarray(place_ids, dtype=np.uint32)
    points['rank'] = np.asarray(ranks, dtype=np.uint16)
    fields = [PointField(name=name, offset=CLOUD_DTYPE.fields[name][1],
                         datatype=_POINT_FIELD_TYPES[CLOUD_DTYPE.fields[name][0]], count=1)
              for name in CLOUD_DTYPE.names]
    return PointCloud2(header=header(stamp, frame_id), height=1, width=count, fields=fields,
                       is_bigendian=False, point_step=CLOUD_DTYPE.itemsize,
                       row_step=CLOUD_DTYPE.itemsize * count, data=points.tobytes(),
                       is_dense=True)


def cloud_to_array(cloud: PointCloud2) -> np.ndarray:
    """``PointCloud2`` -> structured array [height * width] with one column per field."""
    order = '>' if cloud.is_bigendian else '<'
    dtype = np.dtype({
        'names': [f.name for f in cloud.fields],
        'formats': [order + _NUMPY_TYPES[f.datatype] for f in cloud.fields],
        'offsets': [f.offset for f in cloud.fields],
        'itemsize': cloud.point_step,
    })
    return np.frombuffer(bytes(cloud.data), dtype=dtype, count=cloud.width * cloud.height)


def loop_closure_message(t_query_s: float, t_match_s: float) -> Float64MultiArray:
    """``[t_query, t_match]`` in seconds: the LIO-SAM ``loop_closure_detection`` contract."""
    message = Float64MultiArray(data=[float(t_query_s), float(t_match_s)])
    message.layout.dim = [MultiArrayDimension(label='t_query_t_match', size=2, stride=2)]
    return message
