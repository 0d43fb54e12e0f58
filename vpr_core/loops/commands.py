"""``vpr loops``: loop closure over an image folder or a rosbag2, offline, the node's code path.

Frames go one by one through :class:`~vpr_core.loops.detector.LoopDetector` (what the node's
SLAM mode runs), in stream order::

    vpr loops --images DIR --out OUT [--gt GT.bmp|pairs.csv] [--no-verify] [--set key=value]
    vpr loops --bag BAG --image-topic T [--camera-info-topic C] [--pose-topic P] --out OUT
    vpr loops --images DIR2 --previous MAP1 --out OUT [--save-map MAP2]   # multi-session

Stream order of ``--images``: file names (recursively, by relative path) in natural order,
digit runs compared as numbers, so ``2.jpg`` comes before ``10.jpg`` (zero-padded names sort
as plain text does). Frames of a folder are 1 s apart (no stamps) and have no odometry: every
frame is a keyframe. Undecodable frames are skipped, counted and named (``--strict``
aborts). Writes OUT/loops.csv, OUT/report.json (counts, time per keyframe, precision /
recall with ``--gt``), OUT/loops.png.
"""
from __future__ import annotations

import argparse
import logging
import re
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vpr_core.backends import add_backend_argument
from vpr_core.config import load_config, to_dict
from vpr_core.errors import ConfigError, MapError
from vpr_core.loops.config import LoopConfig
from vpr_core.loops.detector import LoopDetector, with_verification
from vpr_core.loops.report import LoopRow, write_outputs
from vpr_core.loops.truth import read_truth, score_loops
from vpr_core.mapdb.builder import DecodableFrames, UNDECODABLE_NAMED
from vpr_core.mapdb.commands import load_extractor
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.pose import Pose
from vpr_core.mapdb.source import BagSource, ImageFolderSource

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``loops`` sub-command."""
    parser = subparsers.add_parser('loops', help='detect loop closures in an image stream',
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--images', type=Path, help='image folder (natural name order)')
    source.add_argument('--bag', type=Path, help='rosbag2 directory (sqlite3 or mcap)')
    parser.add_argument('--image-topic', help='Image or CompressedImage topic of --bag')
    parser.add_argument('--camera-info-topic', help='CameraInfo topic of --bag (intrinsics; '
                        'default: guessed from the image size, 60 degrees across)')
    parser.add_argument('--pose-topic', help='odometry of --bag (keyframes by travel and the '
                        'travel gap; default: every frame is a keyframe)')
    parser.add_argument('--out', type=Path, required=True, help='output folder')
    parser.add_argument('--gt', type=Path, help='ground truth: N x N same-place matrix image '
                        'or CSV of 0-based frame index pairs')
    parser.add_argument('--weights', type=Path, default=None,
                        help='our .safetensors checkpoint (default: the bundled model)')
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    add_backend_argument(parser)
    parser.add_argument('--no-verify', action='store_true',
                        help='no geometric verification (verify.features=none): loops need '
                             'unverified_consistency')
    parser.add_argument('--config', type=Path, help='YAML of LoopConfig fields')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='LoopConfig override, e.g. min_score=0.3 or verify.min_inliers=30')
    parser.add_argument('--previous', type=Path, help='map of earlier sessions (from '
                        '--save-map or the node) to close loops against')
    parser.add_argument('--save-map', type=Path, help='save the session map (with local '
                        'features) here, reloadable with --previous')
    parser.add_argument('--strict', action='store_true', help='abort on an undecodable image')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    parser.set_defaults(func=run, pixels=False, batch_size=1)


def natural_key(name: str) -> tuple:
    """Sort key comparing digit runs as numbers: '2.jpg' < '10.jpg'."""
    return tuple((0, int(part), part) if part.isdigit() else (1, 0, part)
                 for part in re.split(r'(\d+)', name) if part)


def open_source(args: argparse.Namespace):
    """The frame source of the command line (a folder in natural name order, or a bag)."""
    if args.images is not None:
        source = ImageFolderSource(args.images, layout='sequence')
        source.files = sorted(source.files, key=lambda p: natural_key(
            p.relative_to(source.folder).as_posix()))
        return source
    if not args.image_topic:
        raise ConfigError('--bag needs --image-topic')
    return BagSource(args.bag, args.image_topic, args.pose_topic)


def read_camera(args: argparse.Namespace):
    """The bag's first CameraInfo as a CameraModel (None without --camera-info-topic)."""
    if args.bag is None or not args.camera_info_topic:
        return None
    from vpr_core.bags import read_camera_info
    from vpr_core.geometry.camera import CameraModel
    info = read_camera_info(args.bag, args.camera_info_topic)
    return CameraModel.from_matrix(info.k, info.width, info.height, info.d)


def run(args: argparse.Namespace) -> int:
    """Run the detector over the stream, write the outputs, print a summary."""
    config = with_verification(load_config(LoopConfig, args.config, args.set),
                               not args.no_verify)
    extractor = load_extractor(args)
    previous = None if args.previous is None else \
        MapDatabase.load(args.previous, expected_fingerprint=extractor.fingerprint)
    source = open_source(args)
    table = source.table()
    detector = LoopDetector(extractor, config, previous=previous, camera=read_camera(args),
                            frame_id=table.frame_id)
    stream = run_stream(detector, source, table, args.strict, not args.no_progress)
    truth = None if args.gt is None else read_truth(args.gt, len(table.stamps_ns))
    report = build_report(stream, truth, config, extractor, previous)
    write_outputs(args.out, stream['rows'], report, truth, len(table.stamps_ns))
    if args.save_map is not None:
        detector.save(args.save_map)
    print(summary_line(report, args.out))
    return 0


def run_stream(detector: LoopDetector, source, table, strict: bool, progress: bool) -> dict:
    """Feed every decodable frame to ``detector``; loops in stream indices and timings."""
    count = len(table.stamps_ns)
    frames = DecodableFrames(source, table, np.arange(count), strict)
    stream_of: dict[int, int] = {}                  # keyframe row -> stream index
    rows, seconds = [], []
    for image in tqdm(frames, total=count, unit='frame', desc='loops', disable=not progress):
        index = frames.kept[-1]
        odometry = None
        if not table.synthetic_poses and table.valid[index]:
            odometry = Pose(tuple(table.positions[index]), tuple(table.orientations[index]))
        started = time.perf_counter()
        result = detector.process(image, int(table.stamps_ns[index]), odometry)
        if not result.keyframe:
            continue
        seconds.append(time.perf_counter() - started)
        stream_of[result.keyframe_index] = index
        loop = result.loop
        if loop is not None:
            match = stream_of.get(loop.match_index, -1 - loop.match_index)
            rows.append(LoopRow(index, match, loop.score, loop.verification.inliers,
                                loop.verification.pose, loop.verified))
    if not frames.kept:
        raise MapError('no frame could be decoded: no stream to close loops in')
    if frames.skipped:
        logger.warning('skipped %d undecodable frames (first: %s)', len(frames.skipped),
                       '; '.join(f"{s['name']}: {s['error']}"
                                 for s in frames.skipped[:UNDECODABLE_NAMED]))
    return {'rows': rows, 'seconds': np.asarray(seconds), 'kept': list(frames.kept),
            'skipped': frames.skipped, 'counts': dict(detector.counts),
            'keyframes': len(seconds)}


def build_report(stream: dict, truth: np.ndarray | None, config: LoopConfig, extractor,
                 previous: MapDatabase | None) -> dict:
    """``report.json``: counts, time per keyframe, precision / recall against ``truth``."""
    rows, seconds = stream['rows'], stream['seconds']
    report = {
        'frames_decoded': len(stream['kept']), 'frames_undecodable': len(stream['skipped']),
        'undecodable': stream['skipped'][:UNDECODABLE_NAMED], 'keyframes': stream['keyframes'],
        'loops': len(rows), 'loops_verified': sum(r.verified for r in rows),
        'loops_unverified': sum(not r.verified for r in rows), 'reasons': stream['counts'],
        'verification': config.verify.enabled,
        'time_per_keyframe_ms': {
            'mean': float(seconds.mean() * 1e3) if len(seconds) else None,
            'median': float(np.median(seconds) * 1e3) if len(seconds) else None,
            'p95': float(np.quantile(seconds, 0.95) * 1e3) if len(seconds) else None},
        'model_fingerprint': extractor.fingerprint,
        'previous_map': previous.manifest.map_id if previous is not None else None,
        'config': to_dict(config)}
    if truth is not None:
        pairs = [(r.query, r.match) for r in rows if r.match >= 0]
        report['truth'] = score_loops(pairs, truth, stream['kept'])
    return report


def summary_line(report: dict, out: Path) -> str:
    """One line for the terminal."""
    text = (f"{report['loops']} loops ({report['loops_verified']} verified) over "
            f"{report['keyframes']} keyframes, {report['time_per_keyframe_ms']['mean'] or 0:.1f}"
            f' ms per keyframe')
    truth = report.get('truth')
    if truth:
        precision = 'n/a' if truth['precision'] is None else f"{truth['precision']:.3f}"
        recall = 'n/a' if truth['recall'] is None else f"{truth['recall']:.3f}"
        text += (f"; precision {precision}, recall {recall} ({truth['frames_found']} of "
                 f"{truth['frames_with_true_loop']} frames with a true loop)")
    return f'{text}; wrote {out}/loops.csv, report.json, loops.png'
