"""SLAM mode's extra inputs: the camera's ``camera_info`` and an optional registered depth
image, converted in the subscription callbacks and cached for the worker
(:class:`~vpr_ros.slam.SensorCache`). A message that cannot be used is counted as
``rejected.camera_info`` / ``rejected.depth`` and logged (throttled); the cache keeps what
it had."""
from __future__ import annotations

from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image

from vpr_core.errors import UnsupportedImageError, VPRError
from vpr_ros.conversions import camera_model, depth_to_array, stamp_ns


def camera_info_topic(node: Node, image_topic: str, configured: str = '') -> str:
    """``configured``, or ``camera_info`` beside the resolved (remapped) ``image_topic``, as
    image_transport's camera subscribers pair them."""
    if configured:
        return configured
    return f"{node.resolve_topic_name(image_topic).rsplit('/', 1)[0]}/camera_info"


def subscribe_slam_inputs(node: Node, settings: Any, sensors: Any, stats: Any) -> list:
    """Subscriptions of ``camera_info`` and, when ``settings.depth_topic`` is set, the depth
    image (best effort, overridable with ``qos_overrides`` as the image topics)."""
    options = QoSOverridingOptions.with_default_policies()
    logger = node.get_logger()

    def on_camera_info(message: CameraInfo) -> None:
        try:
            sensors.set_camera(camera_model(message))
        except VPRError as exc:
            stats.on_rejected('camera_info', str(exc)[:200])
            logger.warning(f'camera_info ignored: {exc}', throttle_duration_sec=30.0)

    def on_depth(message: Image) -> None:
        try:
            depth = depth_to_array(message, settings.max_image_pixels)
        except UnsupportedImageError as exc:
            stats.on_rejected('depth', str(exc)[:200])
            logger.warning(f'depth image ignored: {exc}', throttle_duration_sec=30.0)
            return
        sensors.add_depth(stamp_ns(message.header.stamp), depth)

    topic = camera_info_topic(node, settings.image_topics[0], settings.camera_info_topic)
    subscriptions = [node.create_subscription(CameraInfo, topic, on_camera_info, _qos(1),
                                              qos_overriding_options=options)]
    if settings.depth_topic:
        subscriptions.append(node.create_subscription(Image, settings.depth_topic, on_depth,
                                                      _qos(2), qos_overriding_options=options))
    logger.info(f"slam: camera_info from {topic}, depth from {settings.depth_topic or '(none)'}")
    return subscriptions


def _qos(depth: int) -> QoSProfile:
    """A new best-effort profile per subscription (rclpy writes overrides into it)."""
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT)
