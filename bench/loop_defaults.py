"""How LoopConfig's defaults were chosen: Nordland train part as a two-pass loop-closure stream.

Stream: summer frames 17..1799, then winter frames 17..1799 of the same places (a second pass
months later), 1 s apart, no odometry, through :class:`~vpr_core.loops.detector.LoopDetector`
with the bundled model. A winter frame i has a true loop with summer frames i-1..i+1; the
summer pass has none (the railway does not come back). 64x32 thumbnails are below
``verify.min_image_side``: verification steps aside and every loop is accepted unverified,
so this chooses ``unverified_min_score``, ``consistency_window``, ``unverified_consistency``
and checks ``min_time_gap_s`` (``min_score``, ``top_k`` and ``consistency`` act on verified
loops only). The bundled
model was trained on this part except five held-out 50-frame stretches; the figures are also
given on winter frames of those stretches alone. rtabmap_loop is never used here; the
Nordland test part (1800..3575) neither.

    .venv/bin/python bench/loop_defaults.py [--nordland ../shared/data/nordland_64x32]
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
from pathlib import Path

import numpy as np

from vpr_core.descriptors import Descriptors
from vpr_core.devices import apply_thread_policy
from vpr_core.extractor import Extractor
from vpr_core.image import load_image_file
from vpr_core.loops.config import LoopConfig
from vpr_core.loops.detector import LoopDetector
from vpr_core.loops.truth import score_loops

HELD_OUT = [(200, 250), (550, 600), (900, 950), (1250, 1300), (1600, 1650)]
FIRST, LAST = 17, 1799


class CachedExtractor:
    """The bundled model's descriptors computed once per image, looked up by identity."""

    def __init__(self, extractor: Extractor, images: list[np.ndarray]) -> None:
        self._extractor = extractor
        self._rows = {id(image): i for i, image in enumerate(images)}
        self._all = extractor.extract(images)
        self.fingerprint = extractor.fingerprint
        self.descriptor_dim = extractor.descriptor_dim
        self.code_bits = extractor.code_bits
        self.model_config = extractor.model_config
        self.backend = extractor.backend

    def extract(self, images) -> Descriptors:
        return self._all[[self._rows[id(image)] for image in images]]


def load_stream(root: Path) -> list[np.ndarray]:
    """Summer FIRST..LAST then winter FIRST..LAST, RGB."""
    with open(root / 'pairs.csv', newline='') as handle:
        rows = {int(r['index']): r for r in csv.DictReader(handle)}
    names = [(season, rows[i][f'{season}_file']) for season in ('summer', 'winter')
             for i in range(FIRST, LAST + 1)]
    return [load_image_file(root / season / Path(name).name) for season, name in names]


def truth_matrix(count_per_pass: int) -> np.ndarray:
    total = 2 * count_per_pass
    truth = np.zeros((total, total), dtype=bool)
    for i in range(count_per_pass):
        for j in range(max(0, i - 1), min(count_per_pass, i + 2)):
            truth[count_per_pass + i, j] = True
    return truth | truth.T


def run(extractor, images: list[np.ndarray], config: LoopConfig) -> list[tuple[int, int]]:
    detector = LoopDetector(extractor, config)
    loops = []
    for i, image in enumerate(images):
        result = detector.process(image, i * 1_000_000_000)
        if result.loop is not None:
            loops.append((i, result.loop.match_index))
    return loops


def held_out_scores(loops, truth, per_pass: int) -> dict:
    frames = [per_pass + i - FIRST for a, b in HELD_OUT for i in range(a, b)]
    chosen = set(frames)
    kept = [(q, m) for q, m in loops if q in chosen]
    mask = np.zeros(len(truth), dtype=bool)
    mask[frames] = True
    sub = truth & mask[:, None]
    return score_loops(kept, sub)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--nordland', type=Path,
                        default=Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' /
                        'nordland_64x32')
    parser.add_argument('--scores', default='0.3,0.4,0.5,0.6')
    parser.add_argument('--runs', default='2,3,4,5,6')
    parser.add_argument('--gaps', default='20,40')
    parser.add_argument('--windows', default='1,2')
    args = parser.parse_args()
    apply_thread_policy(1)
    images = load_stream(args.nordland)
    per_pass = len(images) // 2
    extractor = CachedExtractor(Extractor.from_weights(None, device='cpu'), images)
    truth = truth_matrix(per_pass)
    print('min_time_gap_s\tunverified_min_score\twindow\tunverified_consistency\taccepted'
          '\tprecision\trecall\tfirst_pass_loops\tsecond_pass_precision\theld_out_precision'
          '\theld_out_recall')
    grid = itertools.product([float(v) for v in args.gaps.split(',')],
                             [float(v) for v in args.scores.split(',')],
                             [int(v) for v in args.windows.split(',')],
                             [int(v) for v in args.runs.split(',')])
    for gap, score, window, runs in grid:
        config = dataclasses.replace(LoopConfig(), min_time_gap_s=gap,
                                     min_score=min(score, LoopConfig().min_score),
                                     unverified_min_score=score,
                                     consistency=min(runs, LoopConfig().consistency),
                                     consistency_window=window, unverified_consistency=runs)
        loops = run(extractor, images, config)
        whole, held = score_loops(loops, truth), held_out_scores(loops, truth, per_pass)
        second = score_loops([(q, m) for q, m in loops if q >= per_pass], truth)
        first = sum(q < per_pass for q, _ in loops)
        print(f"{gap:g}\t{score}\t{window}\t{runs}\t{whole['accepted']}\t"
              f"{_fmt(whole['precision'])}\t{_fmt(whole['recall'])}\t{first}\t"
              f"{_fmt(second['precision'])}\t{_fmt(held['precision'])}\t"
              f"{_fmt(held['recall'])}", flush=True)


def _fmt(value) -> str:
    return 'n/a' if value is None else f'{value:.3f}'


if __name__ == '__main__':
    main()
