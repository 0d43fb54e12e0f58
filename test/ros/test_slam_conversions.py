"""SLAM mode's conversions without a ROS graph: CameraInfo and depth images in, the base-frame
loop constraint, the loop cloud and loop edges out."""
import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from vpr_core.errors import ConfigError, UnsupportedImageError
from vpr_core.mapdb.pose import Pose
from vpr_ros.conversions import camera_model, cloud_to_array, depth_to_array, pack_cloud
from vpr_ros.loop_constraint import base_constraint, quaternion_from_matrix, rotation_matrix
from vpr_ros.outputs import loop_edge, loop_points
from vpr_ros.result import LoopArrays


def info(k=(400.0, 0.0, 256.0, 0.0, 410.0, 192.0, 0.0, 0.0, 1.0), size=(512, 384),
         model='plumb_bob', d=(0.1, -0.05, 0.0, 0.0, 0.01), binning=(0, 0)):
    return CameraInfo(width=size[0], height=size[1], k=list(k), d=list(d),
                      distortion_model=model, binning_x=binning[0], binning_y=binning[1])


def test_camera_info_becomes_the_camera_model():
    camera = camera_model(info())
    assert (camera.fx, camera.fy, camera.cx, camera.cy) == (400.0, 410.0, 256.0, 192.0)
    assert (camera.width, camera.height) == (512, 384)
    assert camera.distortion == (0.1, -0.05, 0.0, 0.0, 0.01)
    assert camera_model(info(d=(0.0,) * 5)).distortion == ()     # rectified
    binned = camera_model(info(binning=(2, 2)))
    assert (binned.width, binned.height, binned.fx) == (256, 192, 200.0)


@pytest.mark.parametrize('message, text', [
    (info(k=(0.0,) * 9), 'uncalibrated'),
    (info(model='equidistant', d=(0.1, 0.0, 0.0, 0.0)), 'equidistant'),
])
def test_unusable_camera_info_is_refused_with_the_reason(message, text):
    with pytest.raises(ConfigError, match=text):
        camera_model(message)


def depth_message(array, encoding, bigendian=False):
    data = array.astype(array.dtype.newbyteorder('>' if bigendian else '<')).tobytes()
    return Image(height=array.shape[0], width=array.shape[1], encoding=encoding,
                 is_bigendian=bigendian, step=array.shape[1] * array.itemsize, data=data)


def test_depth_images_keep_their_units():
    millimetres = np.arange(12, dtype=np.uint16).reshape(3, 4) * 250
    for bigendian in (False, True):
        out = depth_to_array(depth_message(millimetres, '16UC1', bigendian))
        assert out.dtype == np.uint16 and np.array_equal(out, millimetres)
    metres = np.linspace(0.5, 4.0, 12, dtype=np.float32).reshape(3, 4)
    out = depth_to_array(depth_message(metres, '32FC1'))
    assert out.dtype == np.float32 and np.array_equal(out, metres)
    with pytest.raises(UnsupportedImageError, match='rgb8'):
        depth_to_array(Image(height=1, width=1, encoding='rgb8', step=3, data=b'abc'))
    short = depth_message(millimetres, '16UC1')
    short.data = short.data[:-2]
    with pytest.raises(UnsupportedImageError, match='bytes'):
        depth_to_array(short)


def test_rotation_helpers_round_trip():
    quaternion = np.array([0.1, -0.4, 0.3, 0.85])
    quaternion /= np.linalg.norm(quaternion)
    rotation = rotation_matrix(quaternion)
    assert np.allclose(rotation @ rotation.T, np.eye(3))
    assert np.isclose(np.linalg.det(rotation), 1.0)
    assert np.allclose(quaternion_from_matrix(rotation), quaternion)
    half = np.sqrt(0.5)
    assert np.allclose(rotation_matrix([0.0, 0.0, half, half]),
                       [[0, -1, 0], [1, 0, 0], [0, 0, 1]])


def test_optical_constraint_becomes_a_base_frame_between_factor():
    """The query camera 2 m ahead of the match camera (optical +z) turned 10 degrees to the
    left (about optical -y) is the base 2 m ahead (+x) and yawed +10 degrees; the optical z
    variance becomes the base x variance, optical y (down) the base z."""
    angle = np.radians(10.0)
    rotation_about_minus_y = np.array([[np.cos(angle), 0, -np.sin(angle)], [0, 1, 0],
                                       [np.sin(angle), 0, np.cos(angle)]])
    covariance = np.diag([0.01, 0.02, 0.03, 0.004, 0.005, 0.006])
    pose, rotated = base_constraint(rotation_about_minus_y, np.array([0.0, 0.0, 2.0]),
                                    covariance, Pose())
    assert np.allclose(pose[:3], [2.0, 0.0, 0.0])
    assert np.allclose(pose[3:], [0.0, 0.0, np.sin(angle / 2), np.cos(angle / 2)])
    assert np.allclose(np.diag(rotated), [0.03, 0.01, 0.02, 0.006, 0.004, 0.005])
    # a camera mounted 0.5 m ahead of the base: turning in place moves the base sideways
    mounted = Pose((0.5, 0.0, 0.0))
    pose, rotated = base_constraint(rotation_about_minus_y, np.zeros(3), covariance, mounted)
    expected = np.array([0.5, 0.0, 0.0]) - rotation_matrix(pose[3:]) @ [0.5, 0.0, 0.0]
    assert np.allclose(pose[:3], expected) and abs(pose[1]) > 0.08
    assert np.all(np.linalg.eigvalsh(rotated) > 0)


def _rotvec(vector):
    """Rotation vector -> matrix."""
    return cv2.Rodrigues(np.asarray(vector, dtype=np.float64).reshape(3, 1))[0]


def _small_log(rotation):
    """Matrix -> rotation vector, for small rotations (cv2.Rodrigues rounds those to 0)."""
    a = 0.5 * (rotation - rotation.T)
    return np.array([a[2, 1], a[0, 2], a[1, 0]])


def test_constraint_covariance_matches_a_numeric_jacobian_with_a_lever_arm():
    """Perturb the camera pose as the core's covariance convention does (t + dt, exp(dr) R in
    the match camera frame) and measure the published base pose's change the same way: the
    published covariance must be J S J^T with that numeric Jacobian. A camera mounted off the
    base origin, turned, with a real relative rotation (the SE(3) adjoint's [t_c]x R_c
    off-diagonal block misses it)."""
    mounted = Pose((0.6, -0.2, 0.9), tuple(np.array([0.05, 0.1, 0.3, 0.95]) /
                                           np.linalg.norm([0.05, 0.1, 0.3, 0.95])))
    rotation = _rotvec([0.1, -0.35, 0.2])
    translation = np.array([0.3, -0.1, 1.7])

    def published(delta):
        pose, _ = base_constraint(_rotvec(delta[3:]) @ rotation, translation + delta[:3],
                                  np.eye(6), mounted)
        return pose[:3], rotation_matrix(pose[3:])

    t0, r0 = published(np.zeros(6))
    jacobian = np.zeros((6, 6))
    eps = 1e-6
    for k in range(6):
        step = np.zeros(6)
        step[k] = eps
        (tp, rp), (tm, rm) = published(step), published(-step)
        jacobian[:3, k] = (tp - tm) / (2 * eps)
        jacobian[3:, k] = (_small_log(rp @ r0.T) - _small_log(rm @ r0.T)) / (2 * eps)
    root = np.random.default_rng(3).standard_normal((6, 6))
    covariance = root @ root.T + 0.1 * np.eye(6)
    _, rotated = base_constraint(rotation, translation, covariance, mounted)
    expected = jacobian @ covariance @ jacobian.T
    assert np.allclose(rotated, expected, atol=1e-6 * np.abs(expected).max())
    assert np.abs(jacobian[:3, 3:]).max() > 0.1          # the lever arm couples them


def test_direction_only_constraint_publishes_a_unit_direction():
    """Without depth the camera translation is a direction: the published translation is its
    unit vector in base axes (no lever arm in metres added), uncoupled from the rotation."""
    mounted = Pose((0.6, -0.2, 0.9))
    rotation = _rotvec([0.0, -0.3, 0.0])
    covariance = np.diag([1e6, 1e6, 1e6, 1e-4, 1e-4, 1e-4])
    pose, rotated = base_constraint(rotation, np.array([0.0, 0.0, 1.0]), covariance, mounted,
                                    metric=False)
    assert np.allclose(pose[:3], [1.0, 0.0, 0.0])         # optical z is base x
    assert np.allclose(rotated[:3, 3:], 0.0)
    pose, _ = base_constraint(rotation, np.zeros(3), covariance, mounted, metric=False)
    assert np.allclose(pose[:3], 0.0)


def arrays(previous=False, query=(0.0, 0.0, 0.0)):
    return LoopArrays(stamp_ns=5_000_000_007, accepted=True, reason='loop', events=(),
                      keyframe=True, score=0.61, match_stamp_ns=1_700_000_000_123_456_789,
                      keyframes=np.array([3, 9]), place_ids=np.array([3, 9]),
                      stamps_ns=np.array([1_700_000_000_123_456_789, 1_700_000_006_000_000_001]),
                      positions=np.array([[1.0, 2.0, 0.0], [np.nan, np.nan, np.nan]]),
                      previous=np.array([previous, False]),
                      query_position=None if query is None else np.array(query))


def test_loop_cloud_carries_exact_stamps_rows_and_sessions():
    from builtin_interfaces.msg import Time
    cloud = pack_cloud(Time(sec=5, nanosec=7), 'odom', loop_points(arrays(True), 0))
    points = cloud_to_array(cloud)
    assert not cloud.is_dense
    assert list(points['keyframe']) == [3, 9] and list(points['rank']) == [0, 1]
    assert (points['stamp_sec'][0], points['stamp_nanosec'][0]) == (1_700_000_000, 123_456_789)
    assert list(points['previous_session']) == [1, 0]
    assert np.isclose(points['score'][0], 0.61) and np.isnan(points['score'][1])


def test_loop_edges_only_join_known_positions_of_this_session():
    assert np.allclose(loop_edge(arrays()), [[0, 0, 0], [1, 2, 0]])
    assert loop_edge(arrays(query=None)) is None
    assert loop_edge(arrays(previous=True)) is None
