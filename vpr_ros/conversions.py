"""ROS messages <-> numpy arrays: camera images, camera_info and depth in, poses, candidates
and loop closures out.

Only standard messages. Image payloads are decoded by :mod:`vpr_core.image` (one decoder for
the node and the bag tools); depth images and CameraInfo are read with numpy; PointCloud2 is
packed with numpy (no sensor_msgs_py).
"""
from __future__ import annotations

from typing import Any

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, PoseArray, PoseWithCovarianceStamped
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, PointCloud2, PointField
from std_msgs.msg import Float64MultiArray, Header, MultiArrayDimension

from vpr_core.errors import ConfigError, UnsupportedImageError
from vpr_core.geometry import CameraModel
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
# SLAM mode's ~/candidates_cloud: the ranked candidate keyframes of an accepted loop (rank 0
# is the match) with their database row, exact header stamp and session
LOOP_CLOUD_DTYPE = np.dtype({
    'names': ['x', 'y', 'z', 'score', 'place_id', 'rank', 'camera', 'keyframe', 'stamp_sec',
              'stamp_nanosec', 'previous_session'],
    'formats': ['<f4', '<f4', '<f4', '<f4', '<u4', '<u2', '<u4', '<u4', '<i4', '<u4', '<u1'],
    'offsets': [0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40],
    'itemsize': 44,
})
_POINT_FIELD_TYPES = {np.dtype('<f4'): PointField.FLOAT32, np.dtype('<u4'): PointField.UINT32,
                      np.dtype('<u2'): PointField.UINT16, np.dtype('<i4'): PointField.INT32,
                      np.dtype('<u1'): PointField.UINT8}
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
    return pack_cloud(stamp, frame_id, points)


def pack_cloud(stamp: Time, frame_id: str, points: np.ndarray) -> PointCloud2:
    """A structured array [N] (little-endian numeric fields) -> ``PointCloud2`` (1 x N);
    ``is_dense`` is False when a position is not finite."""
    dtype = points.dtype
    fields = [PointField(name=name, offset=dtype.fields[name][1],
                         datatype=_POINT_FIELD_TYPES[dtype.fields[name][0]], count=1)
              for name in dtype.names]
    dense = all(np.all(np.isfinite(points[axis])) for axis in ('x', 'y', 'z'))
    return PointCloud2(header=header(stamp, frame_id), height=1, width=len(points),
                       fields=fields, is_bigendian=False, point_step=dtype.itemsize,
                       row_step=dtype.itemsize * len(points), data=points.tobytes(),
                       is_dense=bool(dense))


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


def loop_closure_message(t_query_s: float, t_match_s: float,
                         label: str = 't_query_t_match') -> Float64MultiArray:
    """``[t_query, t_match]`` in seconds: the LIO-SAM ``loop_closure_detection`` contract
    (``[t_cur, t_prev]``; LIO-SAM ignores a message without exactly two elements)."""
    message = Float64MultiArray(data=[float(t_query_s), float(t_match_s)])
    message.layout.dim = [MultiArrayDimension(label=label, size=2, stride=2)]
    return message


# sensor_msgs/CameraInfo distortion models whose ``d`` OpenCV reads as given
_OPENCV_DISTORTION = ('plumb_bob', 'rational_polynomial', '')
# REP-118 depth encodings: 16-bit millimetres, 32-bit float metres
_DEPTH_TYPES = {'16UC1': np.uint16, 'mono16': np.uint16, '32FC1': np.float32}


def camera_model(message: CameraInfo) -> CameraModel:
    """``sensor_msgs/CameraInfo`` -> CameraModel for its (binned) image size.

    ``k`` gives the intrinsics, ``d`` the distortion (plumb_bob / rational_polynomial;
    another model, e.g. equidistant, is refused); binning divides the intrinsics; a region of
    interest is not supported (its offset is ignored). Raises ConfigError for an
    uncalibrated camera (``k`` all zero) or values CameraModel refuses.
    """
    k = np.asarray(message.k, dtype=np.float64).reshape(3, 3)
    if not np.any(k):
        raise ConfigError('camera_info is uncalibrated (k is all zero)')
    model = str(message.distortion_model)
    if model not in _OPENCV_DISTORTION:
        raise ConfigError(f"camera_info distortion model '{model}' is not supported "
                          f"(plumb_bob, rational_polynomial; or rectified images)")
    distortion = tuple(float(v) for v in message.d)
    if distortion and not any(distortion):
        distortion = ()
    camera = CameraModel.from_matrix(k, int(message.width), int(message.height), distortion)
    binning_x, binning_y = max(1, int(message.binning_x)), max(1, int(message.binning_y))
    if binning_x > 1 or binning_y > 1:
        camera = camera.scaled(camera.width // binning_x, camera.height // binning_y)
    return camera


def depth_to_array(message: Any, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """A depth ``sensor_msgs/Image`` -> [H, W] uint16 (millimetres: 16UC1, mono16) or
    float32 (metres: 32FC1), as REP-118 defines them. Raises UnsupportedImageError for
    another encoding, a wrong data length or too many pixels."""
    dtype = _DEPTH_TYPES.get(message.encoding)
    if dtype is None:
        raise UnsupportedImageError(f"unsupported depth encoding '{message.encoding}' "
                                    f"(supported: {', '.join(_DEPTH_TYPES)})")
    height, width, step = int(message.height), int(message.width), int(message.step)
    if height <= 0 or width <= 0 or height * width > max_pixels:
        raise UnsupportedImageError(f'depth image of {width}x{height} pixels refused')
    itemsize = np.dtype(dtype).itemsize
    buffer = np.frombuffer(bytes(message.data), dtype=np.uint8)
    if step < width * itemsize or buffer.size != step * height:
        raise UnsupportedImageError(
            f'depth image data has {buffer.size} bytes, expected step x height = '
            f'{step} x {height} with step >= {width * itemsize}')
    order = '>' if message.is_bigendian else '<'
    rows = np.ascontiguousarray(buffer.reshape(height, step)[:, :width * itemsize])
    return rows.view(np.dtype(dtype).newbyteorder(order)).reshape(height, width).astype(dtype)
