"""``vpr adapt``: fine-tune a model's adapters and heads on your own recordings.

Examples::

    vpr adapt --model M --bag TEACH1 --bag TEACH2 --image-topic /cam --pose-topic /odom --out M2
    vpr adapt --images DIR [--poses CSV] --out M2 [--config config/adapt.yaml]
    vpr build-map --bag TEACH1 --image-topic /cam --pose-topic /odom --weights M2 --out MAP

Sources and conventions are those of ``vpr build-map``: rosbag2 (sqlite3 or MCAP; Image or
CompressedImage; Odometry, PoseStamped, PoseWithCovarianceStamped or NavSatFix poses) or image
folders (a poses CSV, VG-benchmark names, or an unposed index-aligned sequence). Several
``--bag`` or ``--images`` are sessions of one area, combined by their poses (unposed ones by
index). Without ``--model`` the bundled model is adapted.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from vpr_core.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``adapt`` sub-command."""
    parser = subparsers.add_parser('adapt', help='fine-tune a model on your own bags or '
                                   'image folders', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--model', type=Path, default=None,
                        help='our .safetensors model to adapt (default: the bundled model)')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--bag', type=Path, action='append', help='rosbag2 (repeatable)')
    source.add_argument('--images', type=Path, action='append',
                        help='image folder (repeatable)')
    parser.add_argument('--image-topic', help='Image or CompressedImage topic of every --bag')
    parser.add_argument('--pose-topic', help='pose topic of every --bag (none: unposed '
                        'index-aligned sequences)')
    parser.add_argument('--poses', type=Path, action='append', default=[],
                        help='poses CSV of each --images, in the same order')
    parser.add_argument('--layout', default='auto', help='--images layout, as build-map')
    parser.add_argument('--pose-tolerance', type=float, default=0.5, metavar='S',
                        help='skip images without a pose within S seconds (default 0.5)')
    parser.add_argument('--out', type=Path, required=True, help='adapted model file to write')
    parser.add_argument('--config', type=Path, help='YAML of AdaptConfig fields '
                        '(config/adapt.yaml)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='config override, e.g. epochs=5 or mining.positive_radius_m=3')
    parser.add_argument('--epochs', type=int, default=None, help='shortcut for --set epochs=N')
    parser.add_argument('--device', default=None, help='auto, cpu, cuda or cuda:N')
    parser.add_argument('--no-progress', action='store_true', help='hide progress bars')
    parser.set_defaults(func=run)


def sessions_from_args(args: argparse.Namespace) -> list:
    """One :class:`~training.bag_places.SessionSpec` per ``--bag`` / ``--images``."""
    from training.bag_places import SessionSpec
    if args.bag:
        if args.poses:
            raise ConfigError('--poses belongs to --images; a bag takes --pose-topic')
        return [SessionSpec(bag=str(b), image_topic=args.image_topic,
                            pose_topic=args.pose_topic, pose_tolerance_s=args.pose_tolerance)
                for b in args.bag]
    if args.poses and len(args.poses) != len(args.images):
        raise ConfigError(f'give one --poses per --images ({len(args.images)}), or none; got '
                          f'{len(args.poses)}')
    poses = args.poses or [None] * len(args.images)
    return [SessionSpec(images=str(d), poses=None if p is None else str(p), layout=args.layout)
            for d, p in zip(args.images, poses)]


def run(args: argparse.Namespace) -> int:
    """``vpr adapt``."""
    from training.adapt import adapt, AdaptConfig
    from vpr_core.config import load_config
    overrides = list(args.set)
    if args.epochs is not None:
        overrides.append(f'epochs={args.epochs}')
    if args.device is not None:
        overrides.append(f'device={args.device}')
    cfg = load_config(AdaptConfig, args.config, overrides, base=AdaptConfig())
    result = adapt(sessions_from_args(args), args.out, cfg, args.model,
                   progress=not args.no_progress)
    shown = result.epoch_losses
    losses = ' -> '.join(f'{v:.4f}' for v in shown) if len(shown) <= 4 else \
        f'{shown[0]:.4f} -> {shown[-1]:.4f} over {len(shown)} passes'
    print(f'adapted model {result.path}: {result.places} places from {result.frames} frames, '
          f'{result.steps} steps, loss {losses}, {result.wall_s / 60:.1f} min wall, '
          f'{result.cpu_s / 60:.1f} CPU min, model {result.fingerprint[:16]} (from '
          f'{result.base_fingerprint[:16]})')
    print(f'rebuild the map with it: vpr build-map ... --weights {result.path}')
    return 0
