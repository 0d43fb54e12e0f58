"""SLAM mode's camera inputs with real rclpy and the real detector: camera_info is cached and
scaled to the image, a missing one falls back to guessed intrinsics with one warning, an
uncalibrated one is refused, and a registered depth image is matched to the colour frame by
stamp."""
import logging

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from ros_harness import place_image, wait_for
from vpr_core.image import encode_raw
from vpr_ros.conversions import stamp_from_seconds

pytestmark = pytest.mark.ros
SIZE = (320, 240)       # width, height: large enough for local features (min_image_side)


def frame(index: int, stamp_s: float) -> Image:
    rgb = np.kron(place_image(index), np.ones((5, 5, 1), dtype=np.uint8))    # 320 x 240
    step, data = encode_raw(rgb, 'rgb8')
    message = Image(height=SIZE[1], width=SIZE[0], encoding='rgb8', step=step, data=data)
    message.header.stamp = stamp_from_seconds(stamp_s)
    return message


def camera_info(width: int, height: int, focal: float, stamp_s: float = 0.0) -> CameraInfo:
    message = CameraInfo(width=width, height=height, distortion_model='plumb_bob',
                         d=[0.0] * 5, k=[focal, 0.0, width / 2, 0.0, focal, height / 2,
                                         0.0, 0.0, 1.0])
    message.header.stamp = stamp_from_seconds(stamp_s)
    return message


class Spy:
    """Records the intrinsics and depth the detector gets with each frame."""

    def __init__(self, node):
        detector = node._pipeline._detector
        self.calls = []
        process = detector.process

        def record(image, stamp, odometry=None, *, depth=None, camera=None):
            self.calls.append((camera, depth))
            return process(image, stamp, odometry, depth=depth, camera=camera)
        detector.process = record


def send(node, publisher, message, spy):
    count = len(spy.calls)
    publisher.publish(message)
    assert wait_for(lambda: len(spy.calls) > count and node.stats.processed >= len(spy.calls))
    return spy.calls[-1]


def test_camera_info_is_cached_scaled_and_guessed_with_one_warning_when_missing(ros, caplog):
    node = ros.vpr_node({'mode': 'slam', 'map_dir': '', 'device': 'cpu',
                         'qos_overrides./image.subscription.reliability': 'reliable',
                         'qos_overrides./camera_info.subscription.reliability': 'reliable'},
                        factory=None)
    assert node.state == 'active', node.error
    spy = Spy(node)
    probe = ros.probe()
    images = probe.publisher(Image, '/image')
    infos = probe.publisher(CameraInfo, '/camera_info')       # beside the image topic
    assert wait_for(lambda: images.get_subscription_count() == 1 and
                    infos.get_subscription_count() == 1)
    sensors, status = node._pipeline.sensors, node._pipeline.status
    with caplog.at_level(logging.WARNING, logger='vpr_ros.slam'):
        for k in range(3):
            camera, _ = send(node, images, frame(k, 100.0 + k), spy)
            assert camera is None                              # the detector guesses
    warnings = [r for r in caplog.records if 'no camera_info' in r.getMessage()]
    assert len(warnings) == 1 and '320x240' in warnings[0].getMessage()
    assert status()['camera_model'] == 'guessed 320x240'
    # calibrated at full resolution (640 x 480), images arrive at half: scaled intrinsics
    infos.publish(camera_info(640, 480, 500.0))
    assert wait_for(lambda: sensors.camera_infos == 1)
    camera, _ = send(node, images, frame(3, 103.0), spy)
    assert (camera.width, camera.height) == SIZE and camera.fx == pytest.approx(250.0)
    assert status()['camera_model'] == 'camera_info 640x480'
    # an uncalibrated camera_info is refused and counted; the cached model stays
    infos.publish(camera_info(640, 480, 0.0))
    assert wait_for(lambda: node.stats.rejected['camera_info'] == 1)
    camera, _ = send(node, images, frame(4, 104.0), spy)
    assert camera.fx == pytest.approx(250.0) and sensors.camera_infos == 1
    # /diagnostics: keyframes, database size, loops and why frames closed none
    diagnostics = probe.listen(DiagnosticArray, '/diagnostics')
    assert wait_for(lambda: diagnostics)
    status = diagnostics[-1][1].status[0]
    assert status.message == 'active, detecting loops'
    values = {v.key: v.value for v in status.values}
    assert values['rejected.camera_info'] == '1' and values['keyframes'] == '5'
    assert values['database_size'] == '5' and values['loops_accepted'] == '0'
    assert values['not_accepted.too_recent'] == '5'       # all within min_time_gap_s


def depth_image(stamp_s: float, millimetres: int) -> Image:
    depth = np.full((SIZE[1] // 2, SIZE[0] // 2), millimetres, dtype=np.uint16)   # half-res
    message = Image(height=depth.shape[0], width=depth.shape[1], encoding='16UC1',
                    step=depth.shape[1] * 2, data=depth.tobytes())
    message.header.stamp = stamp_from_seconds(stamp_s)
    return message


def test_registered_depth_is_matched_to_the_frame_by_stamp(ros):
    node = ros.vpr_node({'mode': 'slam', 'map_dir': '', 'device': 'cpu',
                         'depth_topic': '/depth', 'depth_tolerance_s': 0.02,
                         'qos_overrides./image.subscription.reliability': 'reliable',
                         'qos_overrides./depth.subscription.reliability': 'reliable'},
                        factory=None)
    assert node.state == 'active', node.error
    spy = Spy(node)
    probe = ros.probe()
    images = probe.publisher(Image, '/image')
    depths = probe.publisher(Image, '/depth')
    assert wait_for(lambda: images.get_subscription_count() == 1 and
                    depths.get_subscription_count() == 1)
    depths.publish(depth_image(200.005, 1500))                  # 5 ms off: matched
    depths.publish(depth_image(201.5, 2500))
    assert wait_for(lambda: node._pipeline.sensors.depth_at(int(201.5e9), 0) is not None)
    _, depth = send(node, images, frame(0, 200.0), spy)
    # passed on at its own (half) resolution: the geometry scales keypoints into it
    assert depth.shape == (SIZE[1] // 2, SIZE[0] // 2) and depth.dtype == np.uint16
    assert np.all(depth == 1500)
    _, depth = send(node, images, frame(1, 201.0), spy)         # 0.5 s from any depth
    assert depth is None
    status = node._pipeline.status()
    assert status['depth_used'] == '1' and status['depth_missing'] == '1'


def test_camera_info_is_found_beside_the_remapped_image_topic(ros):
    node = ros.vpr_node({'mode': 'slam', 'map_dir': '', 'device': 'cpu'}, factory=None,
                        cli_args=['--ros-args', '-r', 'image:=/cam/color/image_raw'])
    assert node.state == 'active', node.error
    assert wait_for(lambda: any(info.node_name == node.get_name() for info in
                                node.get_subscriptions_info_by_topic('/cam/color/camera_info')))
