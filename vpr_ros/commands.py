"""``vpr bag-replay``: publish a rosbag2 into ROS 2 (``ros2 bag play --clock`` without ros2cli).
"""
from __future__ import annotations

import argparse

from vpr_core.errors import ConfigError
from vpr_ros.bag_replay import ReplayOptions


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bag-replay`` sub-command."""
    parser = subparsers.add_parser(
        'bag-replay', help='publish a rosbag2 (sqlite3 or MCAP) into ROS 2 with /clock',
        description='Replay a rosbag2 through rclpy at the recorded pace (scaled by --rate), '
                    'publishing /clock with the bag time.')
    parser.add_argument('bag', help='bag directory (or .mcap / .db3 file)')
    parser.add_argument('--rate', type=float, default=1.0, help='time scale (2 = twice as fast)')
    parser.add_argument('--topics', nargs='+', default=[], metavar='TOPIC',
                        help='replay only these topics')
    parser.add_argument('--remap', nargs='+', default=[], metavar='FROM:=TO',
                        help='publish a bag topic under another name')
    parser.add_argument('--no-clock', action='store_true', help='do not publish /clock')
    parser.add_argument('--clock-hz', type=float, default=100.0,
                        help='/clock rate between messages')
    parser.add_argument('--delay-s', type=float, default=0.0, help='wait before publishing')
    parser.add_argument('--wait-for-subscribers-s', type=float, default=0.0,
                        help='wait up to this long for a subscriber on every topic')
    parser.add_argument('--best-effort', action='store_true',
                        help='publish best-effort instead of reliable')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay ``args.bag`` in a fresh rclpy context and print what was published."""
    import rclpy
    from rclpy.node import Node

    from vpr_ros.bag_replay import BagPlayer

    options = replay_options(args)
    rclpy.init()
    try:
        node = Node('vpr_bag_replay')
        stats = BagPlayer(node, args.bag, options).play()
        node.destroy_node()
    except KeyboardInterrupt:
        return 130
    finally:
        rclpy.try_shutdown()
    for topic, count in sorted(stats.published.items()):
        print(f'{topic:40s} {count:8d}')
    for topic, reason in sorted(stats.skipped_topics.items()):
        print(f'{topic:40s} skipped: {reason}')
    print(f'{stats.total} messages, {stats.bag_s:.1f} s of bag in {stats.wall_s:.1f} s')
    return 0


def replay_options(args: argparse.Namespace) -> ReplayOptions:
    """Parsed arguments -> :class:`ReplayOptions` (checks the remap syntax)."""
    remap = []
    for rule in args.remap:
        source, sep, target = rule.partition(':=')
        if not sep or not source or not target:
            raise ConfigError(f'remap {rule!r} must look like /from:=/to')
        remap.append((source, target))
    return ReplayOptions(rate=args.rate, topics=tuple(args.topics), remap=tuple(remap),
                         clock=not args.no_clock, clock_hz=args.clock_hz,
                         start_delay_s=args.delay_s,
                         wait_for_subscribers_s=args.wait_for_subscribers_s,
                         reliable=not args.best_effort)
