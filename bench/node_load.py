"""A camera faster than inference for a minute: the node's latency and memory stay flat.

Claim: with frames arriving faster than the model runs, the node answers the newest frame
(never a queue), so the latency of the answered frames stays within a small multiple of the
node's own processing time from the first minute's first third to its last, the frames it
could not take are counted as dropped, and the node process's resident memory does not grow.

The node runs in its own process with the bundled model and the summer sample map; winter
sample frames (640x480 rgb8) are published at ``--rate`` Hz for ``--seconds``, reliable on
both sides (the node's subscription through ``qos_overrides``), so a frame the node did not
answer was skipped by its worker (counted as ``dropped``), not lost unseen in transport;
``--best-effort`` keeps the sensor-data QoS and shows what transport then loses (the node's
``input_loss_ratio``). Everything is reported relative to the same run (the host is shared).
With the bundled model and the default backend (onnxruntime on CPU) the node keeps up with
30 Hz on a 2-core CPU for the full minute (1,800 of 1,800 frames received and answered, 0
dropped, processing median 11 ms, latency x0.98 from the first third to the last, memory
+0.2 MB; with torch it was about 25 ms a frame); ``--rate 100`` overloads it (measured with
torch and best effort on both sides: 1,143 of 3,000 frames answered, 1,857 counted as
dropped, latency median x0.99 from the first third to the last, memory +0.1 MB).

    .venv/bin/python bench/node_load.py [--rate 30] [--seconds 60]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
import random
import sys
import tempfile
import threading
import time

import numpy as np

from node_latency import build, image_message, TOPIC

from vpr_core.backends import add_backend_argument

MAX_GROWTH, MAX_MEMORY_MB = 2.0, 25.0


def resident_mb(pid: int) -> float:
    with open(f'/proc/{pid}/statm') as handle:
        return int(handle.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def soak(args, map_dir: Path, queries: list) -> dict:
    """Publish for ``args.seconds``; answered latencies (ms), node memory, diagnostics."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from geometry_msgs.msg import PoseArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy

    from vpr_ros.conversions import stamp_from_seconds, stamp_seconds
    from vpr_ros.node_process import NodeProcess
    rclpy.init()
    probe = rclpy.create_node('vpr_load_probe')
    sent: dict[float, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()

    def on_candidates(message):
        stamp = round(stamp_seconds(message.header.stamp), 6)
        with lock:
            start = sent.pop(stamp, None)
            if start is not None:
                latencies.append((time.monotonic() - start) * 1e3)
    probe.create_subscription(PoseArray, '/vpr_node/candidates', on_candidates, 10)
    diagnostics = {}
    probe.create_subscription(DiagnosticArray, '/diagnostics', lambda m: diagnostics.update(
        {kv.key: kv.value for kv in m.status[0].values}), 10)
    messages = [image_message(rgb, 0.0) for rgb in queries]
    qos = qos_profile_sensor_data if not args.reliable else QoSProfile(
        depth=10, reliability=ReliabilityPolicy.RELIABLE)
    publisher = probe.create_publisher(type(messages[0]), TOPIC, qos)
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    threading.Thread(target=executor.spin, daemon=True).start()
    params = {'weights': args.weights or '', 'map_dir': str(map_dir), 'device': args.device,
              'backend': args.backend,
              'image_topics': [TOPIC]}
    if args.reliable:
        params['qos_overrides'] = {TOPIC: {'subscription': {'reliability': 'reliable',
                                                            'depth': 10}}}
    memory, count = [], 0
    every = max(1, int(args.rate * min(5.0, args.seconds / 6)))
    try:
        with NodeProcess(probe, params, log_path=map_dir.parent / 'node.log') as node:
            while publisher.get_subscription_count() == 0:
                time.sleep(0.05)
            start = time.monotonic()
            while time.monotonic() - start < args.seconds:
                message = messages[count % len(messages)]
                stamp_s = 1000.0 + count / args.rate
                message.header.stamp = stamp_from_seconds(stamp_s)
                with lock:
                    sent[round(stamp_s, 6)] = time.monotonic()
                publisher.publish(message)
                count += 1
                if count % every == 0:        # every 5 s, at least 6 samples a run
                    memory.append(resident_mb(node.pid))
                time.sleep(max(0.0, start + count / args.rate - time.monotonic()))
            time.sleep(2.0)
    finally:
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown()
    return {'published': count, 'latencies_ms': np.array(latencies), 'memory_mb': memory,
            'diagnostics': diagnostics}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--weights', default=None, help='checkpoint (default: bundled model)')
    parser.add_argument('--device', default='auto')
    add_backend_argument(parser)
    parser.add_argument('--rate', type=float, default=30.0, help='camera rate (Hz)')
    parser.add_argument('--seconds', type=float, default=60.0)
    parser.add_argument('--frames', type=int, default=60, help='distinct frames to cycle')
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--best-effort', dest='reliable', action='store_false',
                        help='sensor-data QoS on both sides (frames may be lost in transport)')
    args = parser.parse_args(argv)
    if args.rate * args.seconds < 6:
        parser.error('publish at least 6 frames (rate x seconds), so memory can be sampled')
    args.warmup = 0
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 100)))
    os.environ.setdefault('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA')
    with tempfile.TemporaryDirectory() as workdir:
        _, map_dir, queries = build(args, Path(workdir))
        run = soak(args, map_dir, queries)
    latencies, memory, values = run['latencies_ms'], run['memory_mb'], run['diagnostics']
    third = len(latencies) // 3
    early, late = np.median(latencies[:third]), np.median(latencies[-third:])
    processing = float(values.get('latency_p50_ms', 'nan'))
    growth = max(memory[2:]) - memory[1]
    received = int(values.get('received', 0))
    print(f"published {run['published']} frames in {args.seconds:.0f} s at {args.rate:.0f} Hz "
          f"({'reliable' if args.reliable else 'best effort'}); node received {received} "
          f"({run['published'] - received} lost in transport, input_loss_ratio "
          f"{values.get('input_loss_ratio')}), processed {values.get('processed')}, "
          f"dropped {values.get('dropped')}; answered {len(latencies)}")
    print(f'latency of answered frames: first third median {early:.0f} ms, last third '
          f'{late:.0f} ms (x{late / early:.2f}), p95 {np.percentile(latencies, 95):.0f} ms, '
          f'max {latencies.max():.0f} ms; node processing median {processing:.0f} ms')
    print(f'node resident memory {memory[1]:.0f} -> {memory[-1]:.0f} MB (max growth '
          f'{growth:.1f} MB)')
    failed = []
    if late > MAX_GROWTH * early:
        failed.append(f'latency grew more than x{MAX_GROWTH}')
    if int(values.get('dropped', 0)) == 0 and int(values.get('processed', 0)) < received:
        failed.append('frames went unanswered without being counted as dropped')
    if args.reliable and received < run['published']:
        failed.append(f"{run['published'] - received} frames lost in transport despite "
                      'reliable QoS')
    if growth > MAX_MEMORY_MB:
        failed.append(f'memory grew more than {MAX_MEMORY_MB} MB')
    for reason in failed:
        print(f'CLAIM FAILED: {reason}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
