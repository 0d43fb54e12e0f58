"""Stage-3 whitening and sequence-filter variants of a two-branch Nordland model.

Claim (docs/experiments/model_card_history.md,
*Whitening both streams*, *Vertical strips* and *A held-out stretch of
route*): whitening the float descriptor beside the hashing code z raises recall over whitening
it alone, at the recipe's shrinkage, and adding both heads' codes of 4 vertical strips of the
token grid raises it again; of the sequence-filter variants only narrower speeds gain, by a few
queries (the card says why the filter keeps its speeds). The training places come
from the stage-3 recipe (``config/train/nordland_whiten.yaml`` with ``--set`` overrides), so
every whitening here is fitted as stage ``whiten`` fits it; the evaluation is the recipe's
validation split, or ``--eval-range`` (winter against summer over one stretch). The model's
own whitening is bypassed: the variants start from its float head and hashing head outputs
and their codes of 2, 4 or 8 vertical strips, all pooled from one pass over the images.

    .venv/bin/python bench/nordland_variants.py            # the bundled model, validation
    .venv/bin/python bench/nordland_variants.py --weights runs/half-rerank/best.safetensors \\
        --set data.index_range=[17,900] --set "data.exclude_ranges=[[198,252],[548,602]]" \\
        --eval-range 905:1800                               # the card's held-out stretch
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from training import factory
from training.config import TrainConfig
from vpr_core.config import load_config
from vpr_core.descriptors import Descriptors, pack_codes, RERANK_K
from vpr_core.evaluation.datasets import list_frames
from vpr_core.evaluation.search import distance_matrix
from vpr_core.extractor import Extractor
from vpr_core.image import load_image_file
from vpr_core.localization.sequence import sequence_score_matrix
from vpr_core.model.layers import pooled_codes
from vpr_core.model.whitening import fit_whitening

ROOT = Path(__file__).resolve().parents[1]
LENGTHS = (3, 5, 10)


def whitening_inputs(extractor: Extractor, images: list[np.ndarray],
                     strip_counts: list[int]) -> dict:
    """Every unit-norm part of a whitening input, before any whitening: the float descriptor
    x_g ('float'), the hashing code z ('hash') and, for each count n, the float and hashing
    codes of n vertical strips (('float strips', n), ('hash strips', n): [N, n, dim]). The
    heads' maps (Linear1 and Linear3 outputs) are taken in one pass and pooled here as the
    heads pool them."""
    model = extractor.model
    maps: dict[str, list[torch.Tensor]] = {'float': [], 'hash': []}
    hooks = [model.linear1.register_forward_hook(
                 lambda m, a, out: maps['float'].append(out.float())),
             model.linear3.register_forward_hook(
                 lambda m, a, out: maps['hash'].append(out.float()))]
    try:
        extractor.extract(images)
    finally:
        for hook in hooks:
            hook.remove()
    heads = {'float': (model.aggregation, model.linear2),
             'hash': (model.aggregation_hashing, model.linear4)}
    parts = {}
    with torch.no_grad():
        for stream, (pooling, linear) in heads.items():
            fmap = torch.cat(maps[stream]).permute(0, 3, 1, 2)
            parts[stream] = pooled_codes(fmap, pooling, linear)[0].numpy()
            for count in strip_counts:
                parts[stream + ' strips', count] = pooled_codes(fmap, pooling, linear,
                                                                count)[1].numpy()
    return parts


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def recalls(matrix: np.ndarray, q_index: np.ndarray, db_start: int,
            options: dict) -> list[float]:
    """[R@1, R@5, sequence R@1 for each of LENGTHS] of one [Q, N] distance matrix."""
    matrix = np.asarray(matrix, dtype=np.float64)
    top = np.argsort(matrix, axis=1)[:, :5] + db_start
    hit = np.abs(top - q_index[:, None]) <= 1
    out = [hit[:, 0].mean(), hit.any(axis=1).mean()]
    for length in LENGTHS:
        best = np.argmin(sequence_score_matrix(matrix, length, **options), axis=1) + db_start
        out.append(np.mean(np.abs(best - q_index) <= 1))
    return out


def squared_l2(db: np.ndarray, queries: np.ndarray, *_) -> np.ndarray:
    return distance_matrix(Descriptors(db, None), Descriptors(queries, None), 'float')


def codes(z: np.ndarray) -> np.ndarray:
    """Packed codes of continuous z, as the model takes them (sign, 0 -> +1)."""
    return pack_codes(np.where(z >= 0, 1, -1))


def hamming(db_z: np.ndarray, q_z: np.ndarray) -> np.ndarray:
    return distance_matrix(Descriptors(None, codes(db_z)), Descriptors(None, codes(q_z)),
                           'hash')


def rerank_matrix(fill: str, depth: int = RERANK_K):
    """`vpr evaluate`'s re-rank sequence matrix (Hamming top ``depth``, float distances), with
    the row's largest candidate distance elsewhere ('max'), or the earlier rule: 4 ('4'). Each
    row's order is the re-rank's single-frame ranking (the table's R@1 and R@5)."""
    def build(db, queries, db_z, q_z):
        matrix = distance_matrix(Descriptors(db, codes(db_z)), Descriptors(queries, codes(q_z)),
                                 'rerank', rerank_k=depth)
        if fill == '4':
            candidates = np.argsort(hamming(db_z, q_z), axis=1, kind='stable')[:, :depth]
            outside = np.ones(matrix.shape, dtype=bool)
            outside[np.arange(len(matrix))[:, None], candidates] = False
            matrix[outside] = 4.0
        return matrix
    return build


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--weights', type=Path, default=None, help='two-branch checkpoint '
                        '(default: the bundled model)')
    parser.add_argument('--recipe', type=Path,
                        default=ROOT / 'config' / 'train' / 'nordland_whiten.yaml')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE')
    parser.add_argument('--eval-range', default=None, metavar='START:STOP')
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(TrainConfig, args.recipe, args.set)
    extractor = Extractor.from_weights(args.weights, device='cpu', batch_size=64)
    model = extractor.model
    if model.outputs != 'two_branch':
        raise SystemExit('a two-branch model is needed (float head and hashing branch)')

    places = factory.places(cfg)
    members = [files[:places.leading] for files in places.places]
    train_images = [places.image(path) for files in members for path in files]
    sizes = np.cumsum([0] + [len(files) for files in members])
    groups = [np.arange(sizes[i], sizes[i + 1]) for i in range(len(members))]
    root = Path(cfg.validation.root)
    season_images = {season: [load_image_file(f) for f in list_frames(root / season)]
                     for season in (cfg.validation.database, cfg.validation.queries)}
    recipe_strips = cfg.model.whitening_strips
    strip_counts = sorted({2, 4, 8, recipe_strips} - {0})
    train = whitening_inputs(extractor, train_images, strip_counts)
    seasons = {season: whitening_inputs(extractor, images, strip_counts)
               for season, images in season_images.items()}
    if args.eval_range:
        start, stop = (int(v) for v in args.eval_range.split(':'))
        stretches = [(np.arange(start, stop), start, stop)]
    else:
        db_start, db_stop = cfg.validation.database_range
        stretches = [(np.arange(a, b), db_start, db_stop)
                     for a, b in cfg.validation.query_ranges]

    def score(transform, matrix_fn=squared_l2, options=None) -> list[float]:
        """Recalls over all stretches, weighted by their queries."""
        db, queries = seasons[cfg.validation.database], seasons[cfg.validation.queries]
        total, count = np.zeros(2 + len(LENGTHS)), 0
        for q_index, d0, d1 in stretches:
            db_part = {k: v[d0:d1] for k, v in db.items()}
            q_part = {k: v[q_index] for k, v in queries.items()}
            matrix = matrix_fn(transform(db_part), transform(q_part), db_part['hash'],
                               q_part['hash'])
            total += np.array(recalls(matrix, q_index, d0, options or {})) * len(q_index)
            count += len(q_index)
        return list(total / count)

    def stacked(keys):
        """parts -> [N, d]: the named parts side by side (strips flattened)."""
        return lambda parts: np.hstack([parts[k].reshape(len(parts[k]), -1) for k in keys])

    def whitened(keys, shrinkage=cfg.whitening_shrinkage, dim=None):
        inputs = stacked(keys)
        weight, bias = fit_whitening(inputs(train), groups, shrinkage, out_dim=dim)
        return lambda parts: unit(inputs(parts) @ weight.T + bias)

    both = ['float', 'hash']
    out_dim = train['float'].shape[1]
    recipe = cfg.whitening_shrinkage
    rows = [('none (float head)', lambda parts: parts['float']),
            ('hashing code z alone', lambda parts: parts['hash']),
            ('float and z side by side', lambda parts: unit(stacked(both)(parts)))]
    rows += [(f'whitened float, shrinkage {s}', whitened(['float'], shrinkage=s))
             for s in sorted({0.1, recipe})]
    rows += [(f'whitened float + z, shrinkage {s}', whitened(both, shrinkage=s, dim=out_dim))
             for s in (0.05, 0.1, 0.2, 0.4, 0.8, 1.0)]
    rows += [(f'whitened float + z, {out_dim // 2} axes, {recipe}',
              whitened(both, dim=out_dim // 2)),
             (f'whitened float + z, all axes, {recipe}', whitened(both))]
    rows += [(f'float + z + {n} strips each, {recipe}',
              whitened(both + [('float strips', n), ('hash strips', n)], dim=out_dim))
             for n in strip_counts]
    rows += [(f'float + z + 4 float strips, {recipe}',
              whitened(both + [('float strips', 4)], dim=out_dim))]
    header = 'R@1    R@5    R@1+R@5  ' + '  '.join(f'seq{n:<3d}' for n in LENGTHS)
    print(f'{len(groups)} training places; {sum(len(s[0]) for s in stretches)} queries')
    print(f'{"stage 3 variant":40s} {header}')
    for name, transform in rows:
        r = score(transform)
        print(f'{name:40s} {r[0]:.3f}  {r[1]:.3f}  {r[0] + r[1]:.3f}    '
              + '  '.join(f'{v:.3f} ' for v in r[2:]))

    chosen = whitened(both + ([('float strips', recipe_strips), ('hash strips', recipe_strips)]
                              if recipe_strips else []), dim=out_dim)
    print(f'\n{f"filter on the recipe, shrinkage {recipe}":40s} R@1    R@5    '
          + '  '.join(f'seq{n:<3d}' for n in LENGTHS))
    variants = [('as it is (speeds 0.8..1.25)', squared_l2, {}),
                ('speeds 0.9..1.1', squared_l2, dict(velocities=(0.9, 1.0, 1.1))),
                ('speed 1.0 only', squared_l2, dict(velocities=(1.0,)))]
    variants += [(f'contrast window {w}', squared_l2, dict(contrast_window=w))
                 for w in (10, 20, 50, 100, 300)]
    variants += [('square-root distances',
                  lambda *a: np.sqrt(np.maximum(squared_l2(*a), 0.0)), {}),
                 ('float + Hamming fraction',
                  lambda db, q, db_z, q_z: squared_l2(db, q) + hamming(db_z, q_z), {}),
                 (f're-rank top {RERANK_K}, largest-candidate fill', rerank_matrix('max'), {}),
                 ('re-rank top 100, largest-candidate fill', rerank_matrix('max', 100), {}),
                 (f're-rank top {RERANK_K}, fill 4', rerank_matrix('4'), {})]
    for name, matrix_fn, options in variants:
        r = score(chosen, matrix_fn, options)
        print(f"{name:40s} {r[0]:.3f}  {r[1]:.3f}  " + "  ".join(f"{v:.3f} " for v in r[2:]))
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
