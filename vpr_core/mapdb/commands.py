"""``vpr build-map``, ``vpr query`` and ``vpr map-info``: thin front ends over vpr_core.mapdb.

Examples::

    vpr build-map --images DIR --out MAP [--poses CSV] [--weights W]
    vpr build-map --bag BAG --image-topic T --pose-topic P --out MAP [--append] [--strict]
    vpr build-map --images DIR --out MAP --engine ray [--address HOST:PORT] [--workers N]
    vpr query --map MAP --images DIR [-k 5] [--sequence]
    vpr map-info MAP
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vpr_core.backends import add_backend_argument
from vpr_core.config import load_config
from vpr_core.errors import ConfigError, IncompatibleMapError, MapError
from vpr_core.localization.config import LocalizationConfig
from vpr_core.mapdb.builder import build_map, BuildConfig, UNDECODABLE_NAMED
from vpr_core.mapdb.database import append_to_map, check_pose_kinds, map_exists, MapDatabase
from vpr_core.mapdb.index import MODES
from vpr_core.mapdb.manifest import read_manifest
from vpr_core.mapdb.source import BagSource, ImageFolderSource, LAYOUTS
from vpr_core.mapdb.storage import resolve_map_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``build-map``, ``query`` and ``map-info`` sub-commands."""
    _register_build(subparsers)
    _register_query(subparsers)
    info = subparsers.add_parser('map-info', help='print a map manifest, counts and memory')
    info.add_argument('map', type=Path, help='map directory')
    info.add_argument('--json', action='store_true', help='print the whole manifest as JSON')
    info.add_argument('--no-verify', action='store_true',
                      help='skip the sha256 of every file (hashed by default)')
    info.set_defaults(func=run_info)


def _add_inputs(parser: argparse.ArgumentParser, required_topic: bool = False) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--images', type=Path, help='image folder (sorted names = order)')
    source.add_argument('--bag', type=Path, help='rosbag2 directory (sqlite3 or mcap)')
    parser.add_argument('--image-topic', help='Image or CompressedImage topic of --bag')
    model = parser.add_mutually_exclusive_group()
    model.add_argument('--weights', type=Path, default=None,
                       help='our .safetensors checkpoint (default: the bundled model)')
    model.add_argument('--pixels', action='store_true',
                       help='weight-free patch-normalised pixel descriptors (a baseline)')
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    add_backend_argument(parser)
    parser.add_argument('--batch-size', type=int, default=16, help='images per forward pass')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='config override, repeatable')
    parser.add_argument('--no-progress', action='store_true', help='hide progress bars')


def _register_build(subparsers) -> None:
    parser = subparsers.add_parser('build-map', help='build a map from images or a rosbag2',
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_inputs(parser)
    parser.add_argument('--out', type=Path, required=True, help='map directory to write')
    parser.add_argument('--poses', type=Path, help='poses CSV for --images')
    parser.add_argument('--layout', choices=LAYOUTS, default='auto',
                        help='--images layout (auto: csv with --poses, vg when names carry '
                             'UTM, else an index-aligned sequence)')
    parser.add_argument('--pose-topic', help='Odometry, PoseStamped, PoseWithCovarianceStamped '
                        'or NavSatFix topic of --bag (none: index-aligned)')
    parser.add_argument('--pose-tolerance', type=float, default=None, metavar='S',
                        help='skip images without a pose within S seconds (default 0.5)')
    parser.add_argument('--config', type=Path, help='YAML of BuildConfig fields')
    parser.add_argument('--float16', action='store_true', help='store floats as float16')
    parser.add_argument('--store', choices=('both', 'floats', 'codes'), default=None)
    parser.add_argument('--thumbnails', metavar='HxW', help='store debug thumbnails, e.g. 48x64')
    parser.add_argument('--append', action='store_true',
                        help='append the new keyframes to the map at --out (atomic, under the '
                        "map's lock; created when missing). Both must have measured poses, "
                        'or both none')
    parser.add_argument('--strict', action='store_true',
                        help='abort on an undecodable image (default: skip it, count it and '
                        'name it in the log and the manifest)')
    parser.add_argument('--lock-timeout', type=float, default=None, metavar='S',
                        help="wait at most S seconds for another writer's map lock "
                        '(default 120)')
    parser.add_argument('--engine', choices=('local', 'ray'), default='local',
                        help='local: this process; ray: Ray Data tasks read, an actor pool '
                        'describes (the same map; needs requirements-ray.txt)')
    parser.add_argument('--address', default=None, metavar='ADDR',
                        help="with --engine ray: join the Ray cluster at ADDR ('auto' or "
                        'HOST:PORT; default: start a local Ray on loopback)')
    parser.add_argument('--workers', type=int, default=0, metavar='N',
                        help='with --engine ray: describing actors (default: one per GPU, '
                        'else one per CPU of the cluster)')
    parser.set_defaults(func=run_build)


def _register_query(subparsers) -> None:
    parser = subparsers.add_parser('query', help='query images or a bag against a map')
    _add_inputs(parser)
    parser.add_argument('--map', type=Path, required=True, help='map directory')
    parser.add_argument('-k', '--top-k', type=int, default=5, help='matches per query')
    parser.add_argument('--mode', choices=MODES, default='auto', help='search mode')
    parser.add_argument('--sequence', action='store_true',
                        help='stream localization: sequence matching, gating, pose prior')
    parser.add_argument('--config', type=Path, help='YAML of LocalizationConfig fields')
    parser.set_defaults(func=run_query)


def load_extractor(args: argparse.Namespace, backend: str | None = None,
                   device: str | None = None):
    """The descriptor source chosen on the command line (``backend``, ``device``: instead of
    ``--backend``, ``--device``)."""
    if getattr(args, 'pixels', False):
        from vpr_core.mapdb.pixel import PixelDescriptors
        return PixelDescriptors()
    from vpr_core.extractor import Extractor
    return Extractor.from_weights(args.weights, device=device or args.device,
                                  batch_size=args.batch_size, progress=False,
                                  backend=backend or args.backend)


def _source(args: argparse.Namespace, tolerance_s: float):
    if args.images is not None:
        return ImageFolderSource(args.images, getattr(args, 'poses', None),
                                 getattr(args, 'layout', 'auto'))
    if not args.image_topic:
        raise ConfigError('--bag needs --image-topic')
    return BagSource(args.bag, args.image_topic, getattr(args, 'pose_topic', None),
                     tolerance_s)


def run_build(args: argparse.Namespace) -> int:
    """``vpr build-map``."""
    overrides = [f'batch_size={args.batch_size}']
    if args.float16:
        overrides.append('float_dtype=float16')
    if args.store:
        overrides.append(f'store={args.store}')
    if args.pose_tolerance is not None:
        overrides.append(f'pose_tolerance_s={args.pose_tolerance}')
    if args.thumbnails:
        height, _, width = args.thumbnails.lower().partition('x')
        overrides.append(f'thumbnail_size=[{height},{width}]')
    if args.strict:
        overrides.append('strict=true')
    config = load_config(BuildConfig, args.config, [*overrides, *args.set])
    if args.engine != 'ray' and (args.address or args.workers):
        raise ConfigError('--address and --workers need --engine ray')
    # the Ray head only describes the model (its actors resolve --backend on their devices)
    extractor = load_extractor(args, backend='torch', device='cpu') \
        if args.engine == 'ray' else load_extractor(args)
    raw = _source(args, config.pose_tolerance_s)
    source = _TableOnce(raw)
    if args.append and map_exists(args.out):
        _check_append(args.out, extractor, source.table(), config)
    build = _ray_build(args, raw) if args.engine == 'ray' else build_map
    built = build(source, extractor, config, out=None if args.append else args.out,
                  progress=not args.no_progress, lock_timeout_s=args.lock_timeout)
    database = append_to_map(args.out, built, tool='vpr build-map --append',
                             lock_timeout_s=args.lock_timeout) if args.append else built
    info = built.manifest.source
    added = f' (+{built.size} appended)' if args.append else ''
    print(f"map {args.out}: {database.size} places{added} from {info.get('frames', 0)} frames "
          f"({info.get('frames_without_pose', 0)} without a pose{_undecodable(info)}), model "
          f'{database.fingerprint[:16]}, id {database.manifest.map_id}')
    return 0


def _ray_build(args: argparse.Namespace, raw):
    """``build_map``'s shape over the Ray engine (``raw``: the unwrapped source)."""
    from vpr_core.mapdb.ray_build import build_map_ray, RayConfig
    from vpr_core.mapdb.ray_worker import ModelSpec
    ray_config = RayConfig(address=args.address, workers=args.workers)

    def build(source, extractor, config, **kwargs):
        make = None if args.pixels else ModelSpec.of(extractor, args.device, args.backend)
        return build_map_ray(raw, extractor, config, ray_config=ray_config,
                             worker_extractor=make, table=source.table(), **kwargs)
    return build


def _undecodable(info: dict) -> str:
    count = info.get('frames_undecodable', 0)
    if not count:
        return ''
    names = ', '.join(f"{s['name']} at {s['stamp_s']:.3f} s" for s in info['undecodable'])
    return f'; {count} undecodable skipped: {names}{", ..." if count > UNDECODABLE_NAMED else ""}'


class _TableOnce:
    """A frame source whose table is read once (an append checks it before the build)."""

    def __init__(self, source) -> None:
        self._source = source
        self._table = None

    def table(self):
        if self._table is None:
            self._table = self._source.table()
        return self._table

    def images(self, indices):
        return self._source.images(indices)

    def frames(self, indices):
        return self._source.frames(indices)


def _check_append(out: Path, extractor, table, config: BuildConfig) -> None:
    """Refuse an append before the descriptors are computed when it cannot succeed (the
    append itself checks again under the map's lock)."""
    manifest = read_manifest(resolve_map_dir(out))
    if manifest.model_fingerprint != extractor.fingerprint:
        raise IncompatibleMapError(
            f'map {out} was built by model {manifest.model_fingerprint}, but the model in use '
            f'is {extractor.fingerprint}; append with the matching weights')
    frame_id = config.frame_id or table.frame_id
    if frame_id != manifest.frame_id:
        raise MapError(f"cannot append frames posed in frame '{frame_id}' to map {out} in "
                       f"frame '{manifest.frame_id}' (add --set frame_id={manifest.frame_id} if "
                       'the poses really are in that frame)')
    check_pose_kinds(manifest, table.synthetic_poses, int(table.valid.sum()), out)


def run_query(args: argparse.Namespace) -> int:
    """``vpr query``: print ranked matches (and, with --sequence, the stream decision)."""
    from vpr_core.localization.recognizer import PlaceRecognizer
    overrides = [f'top_k={args.top_k}', f'search.mode={args.mode}']
    config = load_config(LocalizationConfig, args.config, [*overrides, *args.set])
    extractor = load_extractor(args)
    database = MapDatabase.load(args.map, expected_fingerprint=extractor.fingerprint)
    source = _source(args, 0.5)
    table = source.table()
    recognizer = PlaceRecognizer(database, extractor, config) if args.sequence else None
    print('query\trank\tplace_id\tscore\tdistance\tx\ty\tstamp_s\tdecision')
    for i, image in enumerate(source.images(range(len(table.stamps_ns)))):
        name = table.names[i]
        if recognizer is None:
            matches = database.search(extractor.extract([image]), args.top_k,
                                      config.search)[0]
            decision = ''
        else:
            result = recognizer.process(image, int(table.stamps_ns[i]))
            matches = list(result.candidates)
            decision = 'accepted' if result.accepted else f'rejected: {result.reason}'
        for match in matches:
            print(f'{name}\t{match.rank}\t{match.place_id}\t{match.score:.4f}\t'
                  f'{match.distance:.4f}\t{match.position[0]:.2f}\t{match.position[1]:.2f}\t'
                  f'{match.stamp:.3f}\t{decision if match.rank == 0 else ""}')
    return 0


def run_info(args: argparse.Namespace) -> int:
    """``vpr map-info``."""
    database = MapDatabase.load(args.map, verify=False if args.no_verify else 'full')
    manifest = database.manifest
    if args.json:
        print(manifest.to_json(), end='')
        return 0
    memory = database.memory_bytes()
    total = sum(memory.values())
    per_place = total / max(database.size, 1)
    print(f'map {args.map} (id {manifest.map_id}, format {manifest.format_version})')
    print(f'  places: {database.size}, frame: {manifest.frame_id}, '
          f'synthetic poses: {manifest.synthetic_poses}, planar: {manifest.planar}')
    print(f'  model: {manifest.model_fingerprint}')
    print(f'  descriptors: {manifest.descriptor_dim}-d {manifest.float_dtype} floats, '
          f'{manifest.code_bits}-bit codes, metric {manifest.metric}')
    print(f'  keyframe spacing: {database.keyframe_spacing_m:.2f} m (median)')
    print(f"  source: {json.dumps(manifest.source, sort_keys=True)}")
    print(f"  created: {manifest.created.get('utc', '?')} by {manifest.created.get('tool', '?')}")
    print(f'  memory: {total / 2**20:.2f} MiB, {per_place:.0f} B per place')
    for name, size in sorted(memory.items()):
        print(f'    {name}: {size / 2**20:.2f} MiB')
    return 0
