"""Test harness for the ROS tests: a context with a spinning executor, a probe node, and a
stand-in pipeline with the vpr_core ``process`` contract."""
from __future__ import annotations

from dataclasses import dataclass, field
import os
import threading
import time
from typing import Any, Callable

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy

from vpr_core.errors import MapError
from vpr_core.image import encode_compressed, encode_raw


@dataclass
class Candidate:
    place_id: int
    rank: int
    score: float
    pose: tuple
    stamp: float


@dataclass
class Result:
    candidates: list
    accepted: bool
    confidence: float
    rejection_reason: str
    pose: Any
    covariance: Any
    match: Any


@dataclass
class FakePipeline:
    """Stand-in for the vpr_core engine: ranked candidates at x = place id, a fixed delay."""

    delay_s: float = 0.0
    accept: bool = True
    accept_after: int = 0
    covariance: np.ndarray = field(default_factory=lambda: np.diag([0.5, 0.5, 1e4, 1e4, 1e4,
                                                                    0.05]))
    places: int = 10
    calls: list = field(default_factory=list)
    updates: list = field(default_factory=list)
    resets: int = 0
    closed: bool = False
    saved: int = 0

    def process(self, image: np.ndarray, stamp: float, odometry: Any = None,
                camera: int = 0) -> Result:
        self.calls.append((stamp, image.shape, camera, odometry))
        if self.delay_s:
            time.sleep(self.delay_s)
        best = int(image[0, 0, 0]) % self.places
        candidates = [Candidate(place_id=(best + k) % self.places, rank=k, score=0.9 - 0.1 * k,
                                pose=((best + k) % self.places, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0),
                                stamp=100.0 + (best + k) % self.places)
                      for k in range(min(8, self.places))]
        accept = self.accept and len(self.calls) > self.accept_after
        return Result(candidates, accept, 0.8, '' if accept else 'low score',
                      candidates[0].pose if accept else None,
                      self.covariance if accept else None, candidates[0])

    def reset(self) -> None:
        self.resets += 1

    def update(self, overrides: dict) -> None:
        self.updates.append(dict(overrides))

    def save(self) -> str:
        self.saved += 1
        return 'saved'

    def close(self) -> None:
        self.closed = True

    def status(self) -> dict:
        return {'device': 'cpu', 'map_id': 'fake', 'map_size': str(self.places)}


def failing_factory(settings):
    raise MapError(f'map directory not found: {settings.map_dir}')


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Poll ``predicate`` until true or ``timeout_s``; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


class Ros:
    """One rclpy context; the nodes under test spin on a background MultiThreadedExecutor,
    each probe on an executor of its own, as if it were another process (a probe sharing the
    node's executor made each frame slower than the last: 0.01 s -> 0.4 s in 100 frames)."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.executor = MultiThreadedExecutor(num_threads=3, context=self.context)
        self.nodes: list = []
        self._spinning: list = []
        self._spin_on(self.executor)

    def _spin_on(self, executor) -> None:
        def spin():
            try:
                executor.spin()
            except ExternalShutdownException:
                pass
        thread = threading.Thread(target=spin, daemon=True)
        thread.start()
        self._spinning.append((executor, thread))

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def vpr_node(self, params: dict | None = None, pipeline=None, factory: Any = 'fake',
                 **kwargs):
        """A VprNode with ``params``; the fake pipeline unless ``factory`` is given (None:
        the real vpr_core engine)."""
        from vpr_ros.node import VprNode
        overrides = [Parameter(k, value=v) for k, v in {'map_dir': 'unused', **(params or {})}
                     .items()]
        if factory == 'fake':
            def factory(settings):
                return pipeline or FakePipeline()
        return self.add(VprNode(context=self.context, parameter_overrides=overrides,
                                pipeline_factory=factory, **kwargs))

    def probe(self, name: str = 'probe') -> 'Probe':
        probe = Probe(name, self.context)
        executor = SingleThreadedExecutor(context=self.context)
        executor.add_node(probe)
        self.nodes.append(probe)
        self._spin_on(executor)
        return probe

    def close(self) -> None:
        for node in self.nodes:
            finish = getattr(node, 'finish', None)
            if finish is not None:
                finish()
        for executor, _ in self._spinning:
            executor.shutdown(timeout_sec=5.0)
        for node in self.nodes:
            node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        for _, thread in self._spinning:
            thread.join(5.0)


class Probe(Node):
    """Publishes images and records what arrives on the node's outputs."""

    def __init__(self, name: str, context) -> None:
        super().__init__(name, context=context)
        self.received: dict[str, list] = {}
        self.lock = threading.Lock()

    def listen(self, kind, topic: str, qos: int | QoSProfile = 10) -> list:
        messages = self.received.setdefault(topic, [])

        def store(message):
            with self.lock:
                messages.append((time.monotonic(), message))
        self.create_subscription(kind, topic, store, qos)
        return messages

    def publisher(self, kind, topic: str, reliable: bool = True):
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE if reliable
                         else ReliabilityPolicy.BEST_EFFORT)
        return self.create_publisher(kind, topic, qos)


def image_message(value: int, stamp_s: float, encoding: str = 'rgb8', size=(32, 24),
                  frame_id: str = 'camera'):
    """A sensor_msgs/Image filled with ``value`` (the fake pipeline's best place)."""
    from sensor_msgs.msg import Image
    from vpr_ros.conversions import stamp_from_seconds
    width, height = size
    rgb = np.full((height, width, 3), value, dtype=np.uint8)
    step, data = encode_raw(rgb, encoding)
    message = Image(height=height, width=width, encoding=encoding, step=step, data=data)
    message.header.stamp = stamp_from_seconds(stamp_s)
    message.header.frame_id = frame_id
    return message


def compressed_message(value: int, stamp_s: float, kind: str = 'jpeg', size=(32, 24)):
    """A sensor_msgs/CompressedImage filled with ``value``."""
    from sensor_msgs.msg import CompressedImage
    from vpr_ros.conversions import stamp_from_seconds
    width, height = size
    rgb = np.full((height, width, 3), value, dtype=np.uint8)
    fmt, data = encode_compressed(rgb, kind)
    message = CompressedImage(format=fmt, data=data)
    message.header.stamp = stamp_from_seconds(stamp_s)
    return message


def call(node: Node, kind, name: str, request, timeout_s: float = 10.0):
    """Call service ``name`` from ``node`` (spun by the background executor); the response."""
    client = node.create_client(kind, name)
    assert client.wait_for_service(timeout_sec=timeout_s), \
        f'service {name} not available; {graph_report(node, name)}'
    future = client.call_async(request)
    assert wait_for(future.done, timeout_s), f'service {name} did not answer'
    node.destroy_client(client)
    return future.result()


def graph_report(node: Node, service: str | None = None) -> str:
    """The DDS domain, the nodes this node sees and, for ``service``, every request reader
    and reply writer in the graph: a service that drops out of the graph is diagnosed by who
    else shares the domain (a rare lifecycle-test failure)."""
    names = sorted(f'{ns.rstrip("/")}/{name}' for name, ns in node.get_node_names_and_namespaces())
    report = f'ROS_DOMAIN_ID={os.environ.get("ROS_DOMAIN_ID")}, nodes seen: {names}'
    if service:
        readers = node.get_subscriptions_info_by_topic(f'rq{service}Request', no_mangle=True)
        writers = node.get_publishers_info_by_topic(f'rr{service}Reply', no_mangle=True)
        report += (f', request readers: {[_endpoint(e) for e in readers]}'
                   f', reply writers: {[_endpoint(e) for e in writers]}')
    return report


def _endpoint(info) -> str:
    return f'{info.node_name}@{bytes(info.endpoint_gid[:16]).hex()}'


def write_image_bag(path, storage: str = 'mcap', count: int = 10, period_s: float = 0.1,
                    start_s: float = 1000.0) -> list[float]:
    """A rosbag2 with ``count`` rgb8 images on /camera/image (pixel value = index) and an
    Odometry on /odom per image; returns the image stamps (s)."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import get_typestore, Stores
    store = get_typestore(Stores.ROS2_KILTED)
    types = store.types
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    stamps = []
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        images = writer.add_connection('/camera/image', 'sensor_msgs/msg/Image', typestore=store)
        odom = writer.add_connection('/odom', 'nav_msgs/msg/Odometry', typestore=store)
        for index in range(count):
            t_s = start_s + index * period_s
            t_ns = int(round(t_s * 1e9))
            stamp = types['builtin_interfaces/msg/Time'](sec=t_ns // 10**9,
                                                         nanosec=t_ns % 10**9)
            header = types['std_msgs/msg/Header'](stamp=stamp, frame_id='camera')
            step, data = encode_raw(np.full((4, 6, 3), index, dtype=np.uint8), 'rgb8')
            image = types['sensor_msgs/msg/Image'](
                header=header, height=4, width=6, encoding='rgb8', is_bigendian=0, step=step,
                data=np.frombuffer(data, dtype=np.uint8))
            writer.write(images, t_ns, store.serialize_cdr(image, 'sensor_msgs/msg/Image'))
            writer.write(odom, t_ns + 1000, store.serialize_cdr(
                _odometry(types, header, float(index)), 'nav_msgs/msg/Odometry'))
            stamps.append(t_s)
    return stamps


def _odometry(types, header, x: float):
    point = types['geometry_msgs/msg/Point'](x=x, y=0.0, z=0.0)
    quaternion = types['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0)
    pose = types['geometry_msgs/msg/Pose'](position=point, orientation=quaternion)
    zero = types['geometry_msgs/msg/Vector3'](x=0.0, y=0.0, z=0.0)
    return types['nav_msgs/msg/Odometry'](
        header=header, child_frame_id='base_link',
        pose=types['geometry_msgs/msg/PoseWithCovariance'](pose=pose,
                                                           covariance=np.zeros(36)),
        twist=types['geometry_msgs/msg/TwistWithCovariance'](
            twist=types['geometry_msgs/msg/Twist'](linear=zero, angular=zero),
            covariance=np.zeros(36)))


def tiny_weights(path) -> str:
    """Save a tiny two-branch model (floats + 64-bit codes, 28 x 28 input); returns the path."""
    import torch

    from vpr_core.model.checkpoint import save_model
    from vpr_core.model.config import (AdapterConfig, BackboneConfig, HashingConfig,
                                       HeadConfig, ModelConfig, PreprocessConfig)
    from vpr_core.model.factory import build_model
    torch.manual_seed(0)
    config = ModelConfig(name='tiny-ros', system='selavpr++',
                         backbone=BackboneConfig(embed_dim=32, depth=2, num_heads=2,
                                                 img_size=56),
                         adapter=AdapterConfig(kind='mulconv'),
                         head=HeadConfig(kind='gem', out_dim=24),
                         hashing=HashingConfig(bits=64, rerank=True),
                         preprocess=PreprocessConfig(train_size=(28, 28), test_size=(28, 28)))
    model = build_model(config).eval()
    save_model(model, path)
    return str(path)


def place_image(index: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """A distinct random texture per place [48, 64, 3]; ``noise`` adds a query's changes."""
    base = np.random.default_rng(1000 + index).integers(0, 256, (6, 8, 3)).astype(np.float32)
    image = np.kron(base, np.ones((8, 8, 1)))
    if noise:
        image += np.random.default_rng(seed + index).normal(0, noise, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_place_bag(path, count: int, start_s: float = 100.0) -> None:
    """Images of places 0..count-1, 1 m and 1 s apart, with Odometry, via vpr_core.bags."""
    from vpr_core.bags import BagWriter
    from vpr_core.mapdb.pose import Pose
    with BagWriter(path, 'mcap') as writer:
        for index in range(count):
            stamp_ns = int((start_s + index) * 1e9)
            writer.add_image('/camera/image', stamp_ns, place_image(index))
            writer.add_pose('/odom', stamp_ns, Pose((float(index), 0.0, 0.0)))
