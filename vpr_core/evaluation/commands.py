"""``vpr evaluate``: recall@N, PR curve, latency and the pixel baseline on one image set.

Index-aligned folders (sorted file names give the index) or rosbag2 recordings (message order
gives the index)::

    vpr evaluate --database DIR --queries DIR --tolerance 1 [--sequence-length 10]
                 [--mode float|binary|rerank] [--weights W] [--set localization.KEY=VALUE]
                 --out OUT

or a VG-benchmark split (``--vg-root ROOT --split test``, 25 m positives), or two rosbag2
recordings whose poses give the positives (``--gt-topic /odom --radius 25``, the names of
``vpr bag-eval``; ``--pose-topic`` and ``--radius-m`` still work). Without
``--weights`` the bundled default model is used. With ``--sequence-length`` the queries also
go through the node's stream localizer with the node's defaults (``--config`` / ``--set`` as
in ``vpr bag-eval``), so ``sequence_recall_at`` and ``accepted`` are the figures the node gives
on these frames. Writes ``OUT/report.json`` (``recall_at``, ``sequence_recall_at``,
``accepted``, ``pr``, ``latency_ms``, ``baseline``, ...), CSV tables and PNG plots.
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from vpr_core.backends import add_backend_argument
from vpr_core.descriptors import RERANK_K
from vpr_core.errors import ConfigError
from vpr_core.evaluation.bag_commands import localization_config
from vpr_core.evaluation.datasets import (EvalSet, load_bag_poses, load_index_aligned,
                                          load_vg_benchmark)
from vpr_core.evaluation.evaluator import evaluate, EvalOptions
from vpr_core.evaluation.metrics import DEFAULT_RECALL_VALUES
from vpr_core.evaluation.plot import plot_report
from vpr_core.evaluation.report import format_table, write_report
from vpr_core.evaluation.search import evaluation_mode, MODE_ALIASES, MODES

logger = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    parser = subparsers.add_parser('evaluate', help='evaluate a model on an image set',
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group('data')
    data.add_argument('--database', type=Path,
                      help='index-aligned database: image folder or rosbag2')
    data.add_argument('--queries', type=Path, help='index-aligned queries: image folder or '
                                                   'rosbag2')
    data.add_argument('--image-topic', default=None,
                      help='image topic of rosbag2 inputs (default: the only one)')
    data.add_argument('--gt-topic', '--pose-topic', dest='pose_topic', default=None,
                      help='rosbag2 inputs: positives within --radius of the poses on this '
                           'topic (same frame in both bags) instead of --tolerance')
    data.add_argument('--tolerance', type=int, default=None,
                      help='query i matches database j when |i - j| <= N frames')
    data.add_argument('--index-range', default=None, metavar='START:STOP',
                      help='evaluate only indices START..STOP-1 (of both folders unless '
                           '--database-range is given)')
    data.add_argument('--database-range', default=None, metavar='START:STOP',
                      help='database indices START..STOP-1 (default: as --index-range)')
    data.add_argument('--vg-root', type=Path, help='VG-benchmark dataset root (instead)')
    data.add_argument('--split', default='test', help='VG-benchmark split (default test)')
    data.add_argument('--radius', '--radius-m', dest='radius_m', type=float, default=25.0,
                      help='positives radius in metres for --vg-root and --gt-topic (default 25)')
    parser.add_argument('--weights', type=Path, default=None,
                        help='our .safetensors checkpoint (default: the bundled model)')
    parser.add_argument('--mode', choices=MODES + tuple(MODE_ALIASES), default=None,
                        help='float, binary or rerank (default: float, binary for a '
                             'hashing-only model; hash: old name of binary)')
    parser.add_argument('--rerank-k', type=int, default=RERANK_K,
                        help=f'Hamming candidates re-ranked (default {RERANK_K})')
    parser.add_argument('--sequence-length', type=int, default=None,
                        help='also localize the queries as a stream (the node\'s localizer) '
                             'over windows of L frames')
    parser.add_argument('--config', type=Path, help='stream localizer settings: YAML of '
                        'LocalizationConfig fields or a vpr_node parameter file')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='localizer override, e.g. localization.sequence.hubness_k=3 '
                             '(repeatable)')
    parser.add_argument('--recall-values', type=int, nargs='+',
                        default=list(DEFAULT_RECALL_VALUES))
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    add_backend_argument(parser)
    parser.add_argument('--no-baseline', action='store_true', help='skip the pixel baseline')
    parser.add_argument('--no-progress', action='store_true', help='hide progress bars')
    parser.add_argument('--out', type=Path, required=True, help='output folder')
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Evaluate, write the report and plots, print the recall table."""
    from vpr_core.extractor import Extractor     # torch + model import only when running
    evalset = build_evalset(args)
    extractor = Extractor.from_weights(args.weights, device=args.device,
                                       batch_size=args.batch_size, backend=args.backend)
    mode = evaluation_mode(args.mode or ('float' if extractor.descriptor_dim else 'binary'))
    options = EvalOptions(mode=mode, rerank_k=args.rerank_k,
                          recall_values=tuple(sorted(set(args.recall_values))),
                          sequence_length=args.sequence_length,
                          localization=localization_config(args.config, args.set),
                          batch_size=args.batch_size,
                          progress=not args.no_progress)
    report = evaluate(extractor, evalset, options, with_baseline=not args.no_baseline)
    report['model'] = {'weights': str(args.weights) if args.weights else 'bundled default',
                       'name': extractor.model_config.name,
                       'fingerprint': extractor.fingerprint, 'device': str(extractor.device)}
    report['dataset'].update(_dataset_args(args))
    report['created'] = time.strftime('%Y-%m-%dT%H:%M:%S%z')
    write_report(report, args.out)
    plot_report(report, args.out, list(evalset.positives))
    print(format_table(report))
    print(f'report written to {args.out / "report.json"}')
    return 0


def build_evalset(args: argparse.Namespace) -> EvalSet:
    """The evaluation set named by the command-line arguments."""
    if args.vg_root is not None:
        if args.database or args.queries:
            raise ConfigError('give either --vg-root or --database/--queries, not both')
        return load_vg_benchmark(args.vg_root, args.split, args.radius_m)
    if args.pose_topic is not None and args.database and args.queries:
        return load_bag_poses(args.database, args.queries, args.pose_topic, args.radius_m,
                              args.image_topic)
    if args.database is None or args.queries is None or args.tolerance is None:
        raise ConfigError('index-aligned evaluation needs --database, --queries and '
                          '--tolerance (or use --vg-root)')
    return load_index_aligned(args.database, args.queries, args.tolerance,
                              parse_range(args.index_range), parse_range(args.database_range),
                              args.image_topic)


def parse_range(text: str | None) -> tuple[int, int] | None:
    """'START:STOP' -> (start, stop); None stays None."""
    if text is None:
        return None
    try:
        start, stop = (int(part) for part in text.split(':'))
    except ValueError as exc:
        raise ConfigError(f'--index-range {text!r} must look like START:STOP, e.g. '
                          '1800:3576') from exc
    return start, stop


def _dataset_args(args: argparse.Namespace) -> dict:
    if args.vg_root is not None:
        return {'root': str(args.vg_root), 'split': args.split, 'radius_m': args.radius_m}
    if args.pose_topic is not None:
        return {'database': str(args.database), 'queries': str(args.queries),
                'pose_topic': args.pose_topic, 'radius_m': args.radius_m}
    return {'database': str(args.database), 'queries': str(args.queries),
            'tolerance': args.tolerance, 'index_range': args.index_range,
            'database_range': args.database_range}
