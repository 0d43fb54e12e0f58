"""One localization path: ``vpr evaluate --sequence-length 10`` against the node's pipeline.

The Nordland test part (index 1800..3575; summer = map, winter = queries) is written as two
rosbag2 recordings (the 64x32 frames as rgb8 ``sensor_msgs/Image``, 10 s apart, ``/odom`` at
1 m per frame as in ``data/make_sample.py``). ``vpr build-map`` + ``vpr bag-eval
--index-tolerance 1`` run the node's pipeline over the winter bag frame by frame;
``vpr evaluate --tolerance 1 --sequence-length 10`` reads the same bags. The claim: both give
the same sequence R@1 (within 0.005) and the same accepted matches, in every search mode.
This is the figure the README quotes.

Usage: python bench/stream_parity.py [--first 1800] [--count 1776] [--out runs/stream_parity]
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
import shutil

import torch

from vpr_core.bags import BagWriter
from vpr_core.cli import main as vpr
from vpr_core.evaluation.search import evaluation_mode
from vpr_core.image import load_image_file
from vpr_core.mapdb.pose import Pose

ROOT = Path(__file__).resolve().parents[1]
NORDLAND = ROOT.parent / 'shared' / 'data' / 'nordland_64x32'
TOPIC = '/camera/image'
TOLERANCE = 0.005


def write_bags(first: int, count: int, out: Path) -> dict[str, Path]:
    """Summer and winter bags of pairs.csv rows first..first + count - 1 (blank ones left out
    of both, so the two stay index-aligned)."""
    with open(NORDLAND / 'pairs.csv', newline='') as handle:
        rows = [row for row in csv.DictReader(handle)
                if first <= int(row['index']) < first + count and row['is_blank'] != '1']
    paths = {}
    for season in ('summer', 'winter'):
        path = paths[season] = out / f'nordland_{season}'
        if path.exists():
            shutil.rmtree(path)
        with BagWriter(path, 'mcap') as writer:
            for position, row in enumerate(rows):
                stamp_ns = (1_600_000_000 + 10 * position) * 1_000_000_000
                image = load_image_file(NORDLAND / row[f"{season}_file"])
                writer.add_image(TOPIC, stamp_ns, image)
                writer.add_pose('/odom', stamp_ns, Pose((float(position), 0.0, 0.0)))
    return paths


def run_mode(mode: str, bags: dict[str, Path], out: Path) -> dict:
    """Both paths in one search mode; returns their figures. The node's map holds what the
    mode uses: floats and codes, or codes only for binary (``build-map --store codes``)."""
    node_out, eval_out = out / f'bag-eval-{mode}', out / f'evaluate-{mode}'
    map_dir = out / ('map-codes' if mode == 'binary' else 'map')
    if not map_dir.exists():
        vpr(['build-map', '--bag', str(bags['summer']), '--image-topic', TOPIC, '--pose-topic',
             '/odom', '--out', str(map_dir), '--no-progress'] +
            (['--store', 'codes'] if mode == 'binary' else []))
    vpr(['bag-eval', '--bag', str(bags['winter']), '--image-topic', TOPIC, '--map',
         str(map_dir), '--index-tolerance', '1', '--set',
         f'localization.search.mode={mode}', '--no-progress', '--out', str(node_out)])
    vpr(['evaluate', '--database', str(bags['summer']), '--queries', str(bags['winter']),
         '--image-topic', TOPIC, '--tolerance', '1', '--sequence-length', '10', '--mode', mode,
         '--no-baseline', '--no-progress', '--out', str(eval_out)])
    node = json.loads((node_out / 'report.json').read_text())
    offline = json.loads((eval_out / 'report.json').read_text())
    return {'mode': mode, 'single_r1': offline['recall_at']['1'],
            'evaluate_r1': offline['sequence_recall_at']['1'], 'node_r1': node['recall_at']['1'],
            'evaluate_accepted': offline['accepted'], 'node_accepted': node['accepted']}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--first', type=int, default=1800)
    parser.add_argument('--count', type=int, default=1776)
    parser.add_argument('--modes', nargs='+', default=['rerank', 'float', 'binary'],
                        help='search modes (the node\'s names; hash: old name of binary)')
    parser.add_argument('--out', type=Path, default=ROOT / 'runs' / 'stream_parity')
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    bags = write_bags(args.first, args.count, args.out)
    for stale in ('map', 'map-codes'):
        shutil.rmtree(args.out / stale, ignore_errors=True)
    rows = [run_mode(evaluation_mode(mode), bags, args.out) for mode in args.modes]
    print(f'\nNordland index {args.first}..{args.first + args.count - 1}, 10-frame window, '
          'node defaults')
    print(f"{'mode':8} {'single R@1':>10} {'evaluate':>9} {'node':>7} "
          f"{'accepted (correct) evaluate':>28} {'node':>12}")
    failed = False
    for row in rows:
        ev, nd = row['evaluate_accepted'], row['node_accepted']
        print(f"{row['mode']:8} {row['single_r1']:10.3f} {row['evaluate_r1']:9.3f} "
              f"{row['node_r1']:7.3f} {ev['count']:>20} ({ev['correct']:>4}) "
              f"{nd['count']:>6} ({nd['correct']:>4})")
        if abs(row['evaluate_r1'] - row['node_r1']) > TOLERANCE:
            print(f"CLAIM FAILED: {row['mode']}: sequence R@1 differs by more than {TOLERANCE}")
            failed = True
    (args.out / 'parity.json').write_text(json.dumps(rows, indent=2) + '\n')
    if not failed:
        print(f'claim met: evaluate and the node pipeline agree within {TOLERANCE} in every mode')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
