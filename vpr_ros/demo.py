"""``make demo``: real Nordland frames through the real node over DDS, scored.

1. builds a map from the bundled summer bag with the bundled model (vpr_core);
2. starts ``vpr_node`` in its own process on that map;
3. replays the winter bag through DDS (``vpr bag-replay``'s player, with /clock), reliable
   on both sides (the node's image and odometry subscriptions through ``qos_overrides``), so
   no frame is lost in transport without a word;
4. collects what the node publishes and prints recall@1, accepted-match precision and the
   publish -> ~/candidates latency, and the frames lost in transport (sent against what the
   node's /diagnostics says it received), writing ``runs/demo/demo.png`` and
   ``summary.json``.

The sample is Nordland's test part (never used in training): attribution in
``data/sample/README.md``.
"""
from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
import logging
import os
from pathlib import Path
import random
import threading
import time

from vpr_core.backends import add_backend_argument

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / 'data' / 'sample'
IMAGE_TOPIC = '/camera/image'
POSE_TOPIC = '/odom'
FIRST_INDEX = 1800
TOLERANCE = 1
# The node's sensor-data default (best effort, depth 1) would let DDS drop frames unseen.
RELIABLE = {'subscription': {'reliability': 'reliable', 'depth': 10}}
RELIABLE_POSES = {'subscription': {'reliability': 'reliable', 'depth': 50}}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m vpr_ros.demo', description=__doc__.split(
        '\n')[0])
    parser.add_argument('--weights', default=None, help='checkpoint (default: bundled model)')
    parser.add_argument('--sample', type=Path, default=SAMPLE, help='folder of the two bags')
    parser.add_argument('--out', type=Path, default=ROOT / 'runs' / 'demo')
    parser.add_argument('--device', default='auto')
    add_backend_argument(parser)
    parser.add_argument('--rate', type=float, default=0.0,
                        help='replay rate (0: chosen from the measured inference time)')
    return parser.parse_args(argv)


def build_demo_map(args: argparse.Namespace) -> tuple[object, float]:
    """Map of the summer bag (every frame a place); returns it and the seconds per query."""
    from vpr_core.extractor import Extractor
    from vpr_core.mapdb import build_map, BuildConfig
    from vpr_core.mapdb import KeyframeConfig
    from vpr_core.mapdb import BagSource
    extractor = Extractor.from_weights(args.weights, device=args.device,
                                       backend=args.backend)
    source = BagSource(args.sample / 'nordland_summer', IMAGE_TOPIC, POSE_TOPIC)
    database = build_map(source, extractor, BuildConfig(keyframes=KeyframeConfig(enabled=False)),
                         out=args.out / 'map')
    image = next(source.images([0]))
    with ThreadPoolExecutor(max_workers=1) as worker:  # a worker thread, as in the node
        times = [worker.submit(_timed_extract, extractor, image).result() for _ in range(6)]
    return database, sorted(times[1:])[2]


def _timed_extract(extractor, image) -> float:
    start = time.perf_counter()
    extractor.extract([image])
    return time.perf_counter() - start


class Collector:
    """Subscribes to the node's outputs and keeps what the score needs (monotonic times)."""

    def __init__(self, node) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseWithCovarianceStamped
        from sensor_msgs.msg import PointCloud2
        from std_msgs.msg import Float64MultiArray

        from vpr_ros.conversions import cloud_to_array, stamp_ns
        self.published: dict[int, float] = {}
        self.answers: dict[int, tuple[float, int]] = {}
        self.accepted: list[tuple[int, int]] = []
        self.priors = 0
        self.diagnostics: dict[str, str] = {}
        self.diagnostics_s = 0.0
        self._cloud_to_array = cloud_to_array
        self._stamp_ns = stamp_ns
        self._place_stamps: dict[int, int] = {}
        self._lock = threading.Lock()
        node.create_subscription(PointCloud2, '/vpr_node/candidates_cloud', self._on_cloud, 50)
        node.create_subscription(Float64MultiArray, '/vpr_node/loop_closure', self._on_loop, 50)
        node.create_subscription(PoseWithCovarianceStamped, '/vpr_node/pose_prior',
                                 self._on_prior, 50)
        node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)

    def use_map(self, database) -> None:
        """Place id -> recording stamp, to turn the top candidate into a summer frame."""
        self._place_stamps = {int(p): int(s) for p, s in zip(database.place_ids,
                                                             database.stamps_ns)}

    def mark_published(self, topic: str, stamp_ns: int) -> None:
        if topic == IMAGE_TOPIC:
            with self._lock:
                self.published[stamp_ns] = time.monotonic()

    def _on_cloud(self, message) -> None:
        now = time.monotonic()
        points = self._cloud_to_array(message)
        if len(points) == 0:
            return
        stamp = self._stamp_ns(message.header.stamp)
        with self._lock:
            self.answers[stamp] = (now, self._place_stamps[int(points['place_id'][0])])

    def _on_loop(self, message) -> None:
        t_query, t_match = message.data
        with self._lock:
            self.accepted.append((int(round(t_query * 1e9)), int(round(t_match * 1e9))))

    def _on_prior(self, message) -> None:
        with self._lock:
            self.priors += 1

    def _on_diagnostics(self, message) -> None:
        for status in message.status:
            if status.name.startswith('/vpr_node:'):
                with self._lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.diagnostics_s = time.monotonic()

    def node_counts(self, timeout_s: float = 5.0) -> dict[str, str]:
        """The node's /diagnostics values, from a message sent after this call."""
        asked_s = time.monotonic()
        deadline = asked_s + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if self.diagnostics_s > asked_s:
                    return dict(self.diagnostics)
            time.sleep(0.05)
        with self._lock:
            return dict(self.diagnostics)

    def settled(self, quiet_s: float = 3.0) -> bool:
        """Every published frame answered, or no answer for ``quiet_s``."""
        with self._lock:
            if len(self.answers) >= len(self.published):
                return True
            last = max((t for t, _ in self.answers.values()), default=0.0)
        return time.monotonic() - last > quiet_s


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from vpr_core.bags import read_image_stamps
    from vpr_ros.bag_replay import BagPlayer, ReplayOptions
    from vpr_ros.demo_report import nearest_position, plot, position_of, score
    from vpr_ros.node_process import NodeProcess

    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    model = args.weights or 'the bundled model'
    print(f'1/4 building the map from the summer bag with {model} ...')
    database, query_s = build_demo_map(args)
    period_s = max(2.5 * query_s + 0.02, 0.05)
    rate = args.rate or 10.0 / period_s
    print(f'    {database.size} places; one query takes {query_s * 1e3:.1f} ms here, '
          f'replaying the winter bag at {rate:.0f}x ({10.0 / rate * 1e3:.0f} ms per frame)')
    rclpy.init()
    probe = rclpy.create_node('vpr_demo')
    collector = Collector(probe)
    collector.use_map(database)
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    params = {'weights': args.weights or '', 'map_dir': str(args.out / 'map'),
              'device': args.device, 'backend': args.backend, 'image_topics': [IMAGE_TOPIC],
              'pose_topic': POSE_TOPIC,
              'use_sim_time': True,
              'qos_overrides': {IMAGE_TOPIC: RELIABLE, POSE_TOPIC: RELIABLE_POSES}}
    counts: dict[str, str] = {}
    try:
        print(f"2/4 starting vpr_node (log: {args.out / 'node.log'}) ...")
        with NodeProcess(probe, params, log_path=args.out / 'node.log'):
            print('3/4 replaying the winter bag through DDS ...')
            player = BagPlayer(probe, args.sample / 'nordland_winter',
                               ReplayOptions(rate=rate, topics=(IMAGE_TOPIC, POSE_TOPIC),
                                             wait_for_subscribers_s=10.0))
            player.play(on_publish=collector.mark_published)
            deadline = time.monotonic() + 30.0
            while not collector.settled() and time.monotonic() < deadline:
                time.sleep(0.1)
            counts = collector.node_counts()
    finally:
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown()
    print('4/4 scoring ...')
    winter = read_image_stamps(args.sample / 'nordland_winter', IMAGE_TOPIC)
    summer = np.sort(database.stamps_ns)
    places = position_of(summer)
    places.update({p: nearest_position(p, summer) for _, p in collector.accepted})
    ordered = np.sort(winter)
    accepted = [(int(ordered[nearest_position(q, ordered)]), p) for q, p in collector.accepted]
    result, arrays = score(collector.published, collector.answers, accepted, TOLERANCE,
                           position_of(winter), places)
    print(result.table())
    transport = transport_summary(len(collector.published), counts)
    print(transport['line'])
    plot(arrays, result, args.out / 'demo.png', FIRST_INDEX)
    result.write(args.out / 'summary.json', {
        'replay_rate': rate, 'query_ms_bare': query_s * 1e3, 'tolerance_frames': TOLERANCE,
        'map_places': database.size, 'wall_s': time.monotonic() - started,
        **{k: v for k, v in transport.items() if k not in ('line', 'frames_sent')}})
    print(f'plot: {args.out / "demo.png"}  summary: {args.out / "summary.json"}  '
          f'({time.monotonic() - started:.0f} s in all)')
    return 0


def transport_summary(sent: int, counts: dict[str, str]) -> dict:
    """Frames lost between the player and the node (sent vs the node's ``received``), and
    the node's own skips; a line for the table and numbers for summary.json."""
    if 'received' not in counts:
        return {'frames_sent': sent,
                'line': 'frames lost in transport unknown (no /diagnostics from the node)'}
    received = int(counts['received'])
    numbers = {'frames_sent': sent, 'frames_received_by_node': received,
               'frames_lost_in_transport': sent - received,
               'frames_dropped_by_busy_worker': int(counts.get('dropped', 0)),
               'frames_rejected': int(counts.get('rejected_inputs', 0)) +
               int(counts.get('frame_errors', 0))}
    numbers['line'] = (f'frames lost in transport {sent - received} (node received {received} '
                       f"of {sent}; {numbers['frames_dropped_by_busy_worker']} skipped by its "
                       f"busy worker, {numbers['frames_rejected']} failed)")
    return numbers


def main(argv=None) -> int:
    """Entry point of ``python -m vpr_ros.demo``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format='%(levelname)s %(name)s: %(message)s')
    if not (args.sample / 'nordland_summer').is_dir():
        print(f'sample bags not found under {args.sample} (make them with '
              'python data/make_sample.py)')
        return 2
    # A private DDS domain on this host, so the demo never mixes with a running robot.
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 100)))
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    from vpr_core.errors import VPRError
    try:
        return run(args)
    except VPRError as exc:
        print(f'demo failed: {exc}')
        return 1


if __name__ == '__main__':
    raise SystemExit(main())
