"""Publish a rosbag2 (sqlite3 or MCAP, read with ``rosbags``) into ROS 2 with rclpy.

This stands in for ``ros2 bag play --clock`` where the ros2 CLI is not installed (the pip
wheels). Messages go out as the recorded CDR bytes, in recorded order, at the recorded pace
scaled by ``rate``; ``/clock`` carries the bag time so nodes with ``use_sim_time`` follow it.

The publishers are reliable (``ReplayOptions.reliable``), which matches reliable and
best-effort subscribers alike. A best-effort subscriber can still lose large frames in
transport (most of them, for 900 kB raw images over UDP); the player names such subscribers
in a warning and in ``ReplayStats.best_effort_subscribers`` when it waits for them. For
vpr_node, make its image subscription reliable through ``qos_overrides`` (see
config/vpr_node.yaml); its /diagnostics reports what was lost anyway (``input_loss_ratio``).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
import importlib
import logging
from pathlib import Path
import threading
import time
from typing import Callable

from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.highlevel import AnyReader
from rosbags.highlevel.anyreader import AnyReaderError
from rosgraph_msgs.msg import Clock
from tqdm import tqdm

from vpr_core.errors import BagError
from vpr_ros.conversions import stamp_from_seconds

CLOCK_TOPIC = '/clock'
LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayOptions:
    """How to replay: ``rate`` scales time (2.0 = twice as fast), ``topics`` selects (empty =
    all), ``remap`` renames topics, ``clock`` publishes /clock at ``clock_hz`` and before every
    message, ``wait_for_subscribers_s`` waits for every topic to have a subscriber first."""

    rate: float = 1.0
    topics: tuple[str, ...] = ()
    remap: tuple[tuple[str, str], ...] = ()
    clock: bool = True
    clock_hz: float = 100.0
    start_delay_s: float = 0.0
    wait_for_subscribers_s: float = 0.0
    reliable: bool = True


@dataclass
class ReplayStats:
    """What a replay did: messages per (output) topic, topics skipped, wall and bag spans."""

    published: Counter = field(default_factory=Counter)
    skipped_topics: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    bag_s: float = 0.0
    max_lateness_ms: float = 0.0
    best_effort_subscribers: dict[str, list[str]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Messages published (without /clock)."""
        return sum(self.published.values())


def message_class(msgtype: str) -> type:
    """'sensor_msgs/msg/Image' -> the rclpy message class; BagError when not installed."""
    package, kind, name = _split_type(msgtype)
    try:
        module = importlib.import_module(f'{package}.{kind}')
        return getattr(module, name)
    except (ImportError, AttributeError) as exc:
        raise BagError(f"message type '{msgtype}' is not installed for rclpy "
                       f"(install the '{package}' Python package)") from exc


class BagPlayer:
    """Replays one bag through ``node``'s publishers; :meth:`play` blocks until done."""

    def __init__(self, node: Node, bag: str | Path, options: ReplayOptions = ReplayOptions()
                 ) -> None:
        if options.rate <= 0:
            raise BagError(f'replay rate must be > 0, got {options.rate}')
        self._node = node
        self._bag = Path(bag)
        self._options = options
        self._remap = dict(options.remap)
        self._clock_pub = node.create_publisher(Clock, CLOCK_TOPIC, 10) if options.clock \
            else None
        self.stats = ReplayStats()
        self._on_publish: Callable[[str, int], None] | None = None

    def play(self, stop: threading.Event | None = None, progress: bool = True,
             on_publish: Callable[[str, int], None] | None = None) -> ReplayStats:
        """Publish every selected message; returns early when ``stop`` is set.

        ``on_publish(topic, bag_time_ns)`` is called right after each message goes out.
        """
        self._on_publish = on_publish
        stop = stop or threading.Event()
        try:
            with AnyReader([self._bag]) as reader:
                connections, publishers = self._prepare(reader)
                total = sum(c.msgcount for c in connections)
                self._wait_for_subscribers(publishers, stop)
                if self._options.start_delay_s > 0:
                    stop.wait(self._options.start_delay_s)
                with tqdm(total=total, desc='replay', unit='msg', disable=not progress,
                          mininterval=1.0) as bar:
                    self._publish_all(reader, connections, publishers, stop, bar)
        except (AnyReaderError, OSError) as exc:
            raise BagError(f'cannot read bag {self._bag}: {exc}') from exc
        return self.stats

    def _prepare(self, reader: AnyReader) -> tuple[list, dict]:
        wanted = set(self._options.topics)
        missing = wanted - {c.topic for c in reader.connections}
        if missing:
            available = sorted({c.topic for c in reader.connections})
            raise BagError(f'topics {sorted(missing)} are not in {self._bag} '
                           f'(available: {available})')
        connections, publishers = [], {}
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE
                         if self._options.reliable else ReliabilityPolicy.BEST_EFFORT)
        for connection in reader.connections:
            if wanted and connection.topic not in wanted:
                continue
            if self._clock_pub is not None and connection.topic == CLOCK_TOPIC:
                self.stats.skipped_topics[CLOCK_TOPIC] = 'replaced by the replayed clock'
                continue
            try:
                kind = message_class(connection.msgtype)
            except BagError as exc:
                self.stats.skipped_topics[connection.topic] = str(exc)
                continue
            if connection.topic not in publishers:
                topic = self._remap.get(connection.topic, connection.topic)
                publishers[connection.topic] = self._node.create_publisher(kind, topic, qos)
            connections.append(connection)
        return connections, publishers

    def _wait_for_subscribers(self, publishers: dict, stop: threading.Event) -> None:
        if self._options.wait_for_subscribers_s <= 0:
            return
        deadline = time.monotonic() + self._options.wait_for_subscribers_s
        while time.monotonic() < deadline and not stop.is_set():
            if all(p.get_subscription_count() > 0 for p in publishers.values()):
                break
            time.sleep(0.05)
        self._check_subscribers(publishers)

    def _check_subscribers(self, publishers: dict) -> None:
        """Warn about best-effort subscribers: they may lose messages in transport."""
        for publisher in publishers.values():
            topic = publisher.topic_name
            names = sorted(f'{info.node_namespace.rstrip("/")}/{info.node_name}'
                           for info in self._node.get_subscriptions_info_by_topic(topic)
                           if info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT)
            if names:
                self.stats.best_effort_subscribers[topic] = names
                LOGGER.warning('%s: best-effort subscribers %s may lose messages in transport '
                               '(large images especially); make them reliable, e.g. with '
                               'qos_overrides', topic, ', '.join(names))

    def _publish_all(self, reader: AnyReader, connections: list, publishers: dict,
                     stop: threading.Event, bar: tqdm) -> None:
        start_wall = time.monotonic()
        first_ns = None
        for connection, t_ns, raw in reader.messages(connections=connections):
            if stop.is_set():
                break
            first_ns = t_ns if first_ns is None else first_ns
            target = start_wall + (t_ns - first_ns) / 1e9 / self._options.rate
            self._wait_until(target, first_ns, start_wall, stop)
            lateness_ms = (time.monotonic() - target) * 1e3
            self.stats.max_lateness_ms = max(self.stats.max_lateness_ms, lateness_ms)
            self._publish_clock(t_ns / 1e9)
            publishers[connection.topic].publish(bytes(raw))
            topic = self._remap.get(connection.topic, connection.topic)
            self.stats.published[topic] += 1
            if self._on_publish is not None:
                self._on_publish(topic, t_ns)
            self.stats.bag_s = (t_ns - first_ns) / 1e9
            bar.update(1)
        self.stats.wall_s = time.monotonic() - start_wall

    def _wait_until(self, target: float, first_ns: int, start_wall: float,
                    stop: threading.Event) -> None:
        period_s = 1.0 / self._options.clock_hz if self._options.clock_hz > 0 else 0.1
        while not stop.is_set():
            remaining = target - time.monotonic()
            if remaining <= 0:
                return
            stop.wait(min(remaining, period_s))
            elapsed = (time.monotonic() - start_wall) * self._options.rate
            self._publish_clock(first_ns / 1e9 + min(elapsed, (target - start_wall) *
                                                     self._options.rate))

    def _publish_clock(self, bag_time_s: float) -> None:
        if self._clock_pub is not None:
            self._clock_pub.publish(Clock(clock=stamp_from_seconds(bag_time_s)))


def _split_type(msgtype: str) -> tuple[str, str, str]:
    parts = msgtype.split('/')
    if len(parts) == 2:
        parts = [parts[0], 'msg', parts[1]]
    if len(parts) != 3 or not all(parts):
        raise BagError(f"message type '{msgtype}' is not of the form package/msg/Type")
    return parts[0], parts[1], parts[2]
