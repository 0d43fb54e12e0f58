"""Where the sequence filter misses: runs of consecutive wrong queries, and dark frames.

Claim (docs/experiments/model_card_history.md,
*Against the project's targets* and *Online hubness reduction*): on the
Nordland test part the 10-frame sequence filter's misses come in long runs of consecutive
queries, windows that hold a dark (tunnel) frame are matched better than the rest, so tunnels
are not what it misses, and many misses go to the same few map places (hubs). It
reads the ``matches.csv`` of one ``vpr evaluate`` run (so nothing here is chosen from it) and
the brightness of the images of that run's index range. Without a report folder it first runs
that evaluation (the bundled model, float mode, the test part, 10 frames; about a minute).

    .venv/bin/python bench/sequence_misses.py
    .venv/bin/python bench/sequence_misses.py out/nordland-test --index-range 1800:3576
"""
from __future__ import annotations

import argparse
from pathlib import Path
import tempfile

import numpy as np

from vpr_core.cli import main as vpr
from vpr_core.evaluation.datasets import list_images
from vpr_core.image import load_image_file

NORDLAND = Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'nordland_64x32'


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of every run of True in ``flags``, longest first."""
    edges = np.diff(np.concatenate([[0], flags.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return sorted(zip(starts.tolist(), (stops - starts).tolist()), key=lambda r: -r[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('report', type=Path, nargs='?',
                        help='output folder of one `vpr evaluate` run (default: run it)')
    parser.add_argument('--index-range', default='1800:3576', metavar='START:STOP')
    parser.add_argument('--root', type=Path, default=NORDLAND)
    parser.add_argument('--window', type=int, default=10, help='sequence length of the run')
    parser.add_argument('--dark', type=float, default=40.0,
                        help='a frame is dark below this mean brightness (0..255) in either '
                        'traversal')
    args = parser.parse_args()
    if args.report is None:
        with tempfile.TemporaryDirectory() as out:
            if vpr(['evaluate', '--database', str(args.root / 'summer'), '--queries',
                    str(args.root / 'winter'), '--index-range', args.index_range,
                    '--tolerance', '1', '--sequence-length', str(args.window),
                    '--mode', 'float', '--out', out]) != 0:
                return 1
            return summarize(args, Path(out))
    return summarize(args, args.report)


def summarize(args: argparse.Namespace, report: Path) -> int:
    """Print the runs of misses and the dark-frame split of one report folder."""
    start, stop = (int(v) for v in args.index_range.split(':'))
    table = np.genfromtxt(report / 'matches.csv', delimiter=',', names=True)
    correct = table['sequence_correct'].astype(bool)
    brightness = np.array([[load_image_file(path).mean()
                            for path in list_images(args.root / season)[start:stop]]
                           for season in ('summer', 'winter')])
    if brightness.shape[1] != len(correct):
        raise SystemExit(f'{len(correct)} queries in the report, {brightness.shape[1]} frames '
                         f'in {args.index_range}')
    dark = (brightness < args.dark).any(axis=0)
    with_dark = np.array([dark[max(0, q - args.window + 1):q + 1].any()
                          for q in range(len(correct))])
    missed = runs(~correct)
    long = [length for _, length in missed if length >= args.window]
    print(f'{len(correct)} queries, {(~correct).sum()} sequence misses in {len(missed)} runs; '
          f'the {len(long)} runs of {args.window}+ frames hold {sum(long)}')
    print('longest runs (first query index, length):',
          ', '.join(f'{start + s} x {n}' for s, n in missed[:10]))
    print(f'{dark.sum()} dark frames; sequence R@1 where the window holds one '
          f'{correct[with_dark].mean():.3f} ({with_dark.sum()} queries), elsewhere '
          f'{correct[~with_dark].mean():.3f}')
    wrong = table['sequence_match'][~correct].astype(int)
    places, hits = np.unique(wrong, return_counts=True)
    order = np.argsort(-hits, kind='stable')[:5]
    print(f'the misses went to {len(places)} places; most hit (place index, misses): '
          + ', '.join(f'{places[i] + start} x {hits[i]}' for i in order))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
