"""Online hubness reduction before the sequence filter: its k, and whether the gain comes
from the order of the queries.

Claim (docs/experiments/model_card_history.md,
*Online hubness reduction*): charging every place the mean of its k
smallest distances to the queries seen so far raises 10-frame sequence R@1 on the held-out
stretch and on validation, k = 3 is as good as any k tried, and the gain is the same when the
statistics come from all queries at once, from later queries only or from queries at least 30
frames old, so it does not come from knowing which places the route has passed; a second lap
over the same frames, every place already matched once, scores about as the first. Rows: the
model's float descriptor and the pixel baseline; columns: single-frame R@1 and sequence R@1.
Last, where the sequence misses go without and with the correction (the most-hit place).

    .venv/bin/python bench/hubness.py                 # the bundled model, validation split
    .venv/bin/python bench/hubness.py --weights runs/half-strips/best.safetensors \\
        --stretch 905:1800 --database-range 905:1800  # the card's held-out stretch
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from vpr_core.evaluation import baseline
from vpr_core.evaluation.commands import parse_range
from vpr_core.evaluation.datasets import list_images
from vpr_core.extractor import Extractor
from vpr_core.image import load_image_file
from vpr_core.localization.hubness import PlaceHubness, reduce_hubness
from vpr_core.localization.sequence import sequence_score_matrix

NORDLAND = Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'nordland_64x32'
VALIDATION = ('200:250', '550:600', '900:950', '1250:1300', '1600:1650')
LENGTH = 10


def variants() -> list[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """(name, [Q, N] distances in stream order -> corrected distances)."""
    rows = [('no correction', lambda m: m)]
    rows += [(f'causal, k {k}', lambda m, k=k: reduce_hubness(m, k)) for k in (1, 2, 3, 5, 10)]
    rows += [('all queries at once, k 3', all_queries),
             ('later queries only, k 3', lambda m: reduce_hubness(m[::-1], 3)[::-1]),
             ('queries >= 30 frames old, k 3', old_queries_only),
             ('second lap of the same frames, k 3',
              lambda m: reduce_hubness(np.vstack([m, m]), 3)[len(m):])]
    return rows


def all_queries(matrix: np.ndarray, k: int = 3) -> np.ndarray:
    """The correction with each place's statistics from every query of the stretch."""
    hubness = PlaceHubness(matrix.shape[1], k)
    for row in matrix:
        hubness.update(row)
    return matrix + hubness.penalty()


def old_queries_only(matrix: np.ndarray, gap: int = 30, k: int = 3) -> np.ndarray:
    """The correction with each place's statistics from queries more than ``gap`` frames
    older than the row (rows with fewer than k such queries stay uncorrected)."""
    hubness = PlaceHubness(matrix.shape[1], k)
    out = matrix.copy()
    for q in range(gap + 1, len(matrix)):
        hubness.update(matrix[q - gap - 1])
        if hubness.seen >= k:
            out[q] += hubness.penalty()
    return out


def sequence_matches(matrix: np.ndarray) -> np.ndarray:
    return np.argmin(sequence_score_matrix(matrix, LENGTH), axis=1)


def recalls(matrix: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Single-frame and sequence R@1 (1-frame tolerance) of one stretch's distances."""
    single = np.argmin(matrix, axis=1)
    return (float(np.mean(np.abs(single - truth) <= 1)),
            float(np.mean(np.abs(sequence_matches(matrix) - truth) <= 1)))


def most_hit(matrices: list[tuple], which: int, correct, d_start: int) -> str:
    """'misses, of which N went to place P' for the sequence matches of every stretch."""
    wrong = np.concatenate([matches[np.abs(matches - truth) > 1] for matches, truth in
                            ((sequence_matches(correct(m[which])), m[2]) for m in matrices)])
    if not len(wrong):
        return 'no misses'
    places, hits = np.unique(wrong, return_counts=True)
    return f'{len(wrong)} misses, {hits.max()} of them to place {places[hits.argmax()] + d_start}'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', type=Path, default=None,
                        help='checkpoint (default: the bundled model)')
    parser.add_argument('--root', type=Path, default=NORDLAND)
    parser.add_argument('--stretch', action='append', default=None, metavar='START:STOP',
                        help='winter query stretch, each its own drive (default: validation)')
    parser.add_argument('--database-range', default='17:1800', metavar='START:STOP')
    args = parser.parse_args()
    torch.set_num_threads(1)
    stretches = [parse_range(s) for s in (args.stretch or VALIDATION)]
    d_start, d_stop = parse_range(args.database_range)
    summer = [load_image_file(p) for p in list_images(args.root / 'summer')[d_start:d_stop]]
    winter = list_images(args.root / 'winter')
    extractor = Extractor.from_weights(args.weights, device='cpu', batch_size=64)
    db_float = extractor.extract(summer).floats.astype(np.float64)
    db_pixels = baseline.describe_pixels(summer)
    matrices = []                                     # (model, pixels, truth) per stretch
    for start, stop in stretches:
        images = [load_image_file(p) for p in winter[start:stop]]
        queries = extractor.extract(images).floats.astype(np.float64)
        matrices.append((np.maximum(2.0 - 2.0 * queries @ db_float.T, 0.0),
                         baseline.pixel_distances(baseline.describe_pixels(images), db_pixels),
                         np.arange(start, stop) - d_start))
    count = sum(len(truth) for *_, truth in matrices)
    print(f'{count} queries in {len(stretches)} stretches, {d_stop - d_start} places; '
          f'sequence filter over {LENGTH} frames')
    print(f'{"statistics of each place":36s} model R@1  seq R@1   pixels R@1  seq R@1')
    for name, correct in variants():
        total = np.zeros(4)
        for model, pixels, truth in matrices:
            total += np.array(recalls(correct(model), truth) + recalls(correct(pixels), truth)
                              ) * len(truth)
        r = total / count
        print(f'{name:36s} {r[0]:.3f}      {r[1]:.3f}     {r[2]:.3f}       {r[3]:.3f}')
    for name, correct in variants()[:1] + variants()[3:4]:
        print(f'sequence misses, {name}: model {most_hit(matrices, 0, correct, d_start)}; '
              f'pixels {most_hit(matrices, 1, correct, d_start)}')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
