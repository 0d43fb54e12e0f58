"""``vpr bag-eval``: the localization pipeline run offline over a rosbag2 against a map.

Every frame of the image topic (raw or compressed, detected from the bag) goes through the
same recognizer the node runs, in bag order with no frame dropped, so two runs give the same
report. Ground truth is a pose topic in the map's frame (positives within --radius metres of
the pose interpolated at the image stamp) or index alignment (frame k shows map place k)::

    vpr bag-eval --bag BAG --image-topic /camera/image --map MAP --gt-topic /odom \\
                 [--radius 25] [--weights W | --pixels] [--set localization.key=value] --out OUT
    vpr bag-eval --bag BAG --image-topic /camera/image --map MAP --index-tolerance 1 --out OUT

Writes OUT/report.json (recall_at, pr, accepted precision / recall / rate, localization_error,
latency_ms, model fingerprint, map id, config), recall.csv, pr.csv, matches.csv,
per_frame.csv and recall.png, pr.png, matches.png, error_cdf.png, latency.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Sequence

from vpr_core.backends import add_backend_argument
from vpr_core.config import from_dict, load_config, read_yaml
from vpr_core.evaluation.bag_eval import BagEvalOptions, DEFAULT_RECALL_VALUES, evaluate_bag
from vpr_core.evaluation.bag_report import fit_calibration, write_bag_report
from vpr_core.evaluation.report import format_table
from vpr_core.localization.config import LocalizationConfig
from vpr_core.mapdb.commands import load_extractor
from vpr_core.mapdb.database import MapDatabase

logger = logging.getLogger(__name__)

PREFIX = 'localization.'


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``bag-eval`` sub-command."""
    parser = subparsers.add_parser('bag-eval', help='evaluate localization on a rosbag2',
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--bag', type=Path, required=True, help='rosbag2 (sqlite3 or mcap)')
    parser.add_argument('--image-topic', required=True, help='Image or CompressedImage topic')
    parser.add_argument('--map', type=Path, required=True, help='map made by vpr build-map')
    truth = parser.add_mutually_exclusive_group(required=True)
    truth.add_argument('--gt-topic', help='ground-truth base pose in the map frame: Odometry, '
                       'PoseStamped, PoseWithCovarianceStamped or NavSatFix')
    truth.add_argument('--index-tolerance', type=int, metavar='N',
                       help='index alignment: frame k matches map places k-N..k+N')
    parser.add_argument('--radius', type=float, default=25.0, metavar='M',
                        help='positives within M metres of the ground truth (default 25)')
    parser.add_argument('--gt-tolerance', type=float, default=0.5, metavar='S',
                        help='frames without a pose sample within S seconds are not '
                             'scored (also the odometry tolerance)')
    parser.add_argument('--same-frame', action='store_true',
                        help='accept a ground-truth frame_id that differs from the map frame')
    parser.add_argument('--odom-topic', help='odometry fed to the recognizer (window steps, '
                        'odometry gate); never used as ground truth')
    model = parser.add_mutually_exclusive_group()
    model.add_argument('--weights', type=Path, default=None,
                       help='our .safetensors checkpoint (default: the bundled model)')
    model.add_argument('--pixels', action='store_true',
                       help='weight-free pixel descriptors (for a map built with --pixels)')
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    add_backend_argument(parser)
    parser.add_argument('--config', type=Path, help='YAML of LocalizationConfig fields, or a '
                        'vpr_node parameter file (its localization section and top_k)')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='localization override, e.g. localization.gate.min_score=1.5 '
                             '(repeatable)')
    parser.add_argument('--recall-values', type=int, nargs='+',
                        default=list(DEFAULT_RECALL_VALUES), help='N of recall@N (<= top_k)')
    parser.add_argument('--fit-calibration', action='store_true',
                        help='fit the score-to-error covariance calibration on this bag and '
                             'save OUT/calibration.json; fit it on a bag that is NOT the test '
                             'bag, then evaluate with localization.prior.calibration=FILE')
    parser.add_argument('--calibration-bins', type=int, default=5, help='score bins')
    parser.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    parser.add_argument('--out', type=Path, required=True, help='output folder')
    parser.set_defaults(func=run, batch_size=1)


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report, print a summary."""
    config = localization_config(args.config, args.set)
    if args.fit_calibration and config.prior.calibration:
        logger.warning('fitting a calibration: the loaded one (%s) is ignored in this run',
                       config.prior.calibration)
        config = dataclasses.replace(config, prior=dataclasses.replace(config.prior,
                                                                       calibration=''))
    extractor = load_extractor(args)
    map_db = MapDatabase.load(args.map, expected_fingerprint=extractor.fingerprint)
    options = BagEvalOptions(
        image_topic=args.image_topic, gt_topic=args.gt_topic, radius_m=args.radius,
        index_tolerance=args.index_tolerance, gt_tolerance_s=args.gt_tolerance,
        odom_topic=args.odom_topic, same_frame=args.same_frame,
        recall_values=tuple(args.recall_values), progress=not args.no_progress)
    evaluation = evaluate_bag(args.bag, map_db, extractor, options, config)
    report = evaluation.report
    report['model']['weights'] = 'pixels' if args.pixels else \
        str(args.weights) if args.weights else 'bundled default'
    if args.fit_calibration:
        calibration = fit_calibration(evaluation.records, evaluation.truth,
                                      args.calibration_bins)
        args.out.mkdir(parents=True, exist_ok=True)
        calibration.save(args.out / 'calibration.json')
        report['calibration'] = {'path': 'calibration.json', 'edges': list(calibration.edges),
                                 'factors': list(calibration.factors),
                                 'samples': calibration.samples}
    write_bag_report(report, evaluation.records, evaluation.truth, args.out)
    print(summary_text(report))
    print(f'report written to {args.out / "report.json"}')
    return 0


def localization_config(path: Path | None, overrides: Sequence[str]) -> LocalizationConfig:
    """LocalizationConfig from defaults < ``path`` < ``key=value`` overrides; keys may carry
    the node's ``localization.`` prefix. ``path`` may be a vpr_node parameter file."""
    base = LocalizationConfig()
    if path is not None:
        base = from_dict(LocalizationConfig, localization_section(read_yaml(path)),
                         where=str(path))
    stripped = [text[len(PREFIX):] if text.startswith(PREFIX) else text for text in overrides]
    return load_config(LocalizationConfig, None, stripped, base=base)


def localization_section(data: dict) -> dict:
    """The LocalizationConfig mapping inside a YAML file: a vpr_node parameter file
    (``<node>: ros__parameters: localization: ...``, plus ``top_k``), a file with a
    top-level ``localization`` section, or the fields themselves."""
    for value in data.values():
        if isinstance(value, dict) and isinstance(value.get('ros__parameters'), dict):
            parameters = value['ros__parameters']
            section = dict(parameters.get('localization') or {})
            if 'top_k' in parameters:
                section.setdefault('top_k', parameters['top_k'])
            return section
    section = data.get('localization', data)
    return section if isinstance(section, dict) else {}


def summary_text(report: dict) -> str:
    """Recall table plus accepted-match, error and latency lines (what the CLI prints)."""
    accepted, error = report['accepted'], report['localization_error']
    latency = report['latency_ms']['total']
    dataset = report['dataset']

    def number(value, fmt='.3f') -> str:
        return 'n/a' if value is None else format(value, fmt)

    lines = [f"{dataset['num_queries']} of {dataset['frames']} frames scored "
             f"({dataset['frames_without_ground_truth']} without ground truth, "
             f"{dataset['frames_bad_image']} bad images)", format_table(report),
             f"accepted {accepted['count']} ({number(accepted['rate'])} of frames): precision "
             f"{number(accepted['precision'])}, recall {number(accepted['recall'])}",
             f"error of accepted priors: median {number(error['median_m'], '.2f')} m, p95 "
             f"{number(error['p95_m'], '.2f')} m",
             f"latency per frame: p50 {latency['p50_ms']:.1f} ms, p95 {latency['p95_ms']:.1f} ms"]
    return '\n'.join(lines)
