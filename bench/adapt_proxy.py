"""`vpr adapt` settings scored on Nordland's train part only (the proxy of the adapt history).

Claim (docs/experiments/adapt.md, *Choosing the settings*): which adaptation settings beat the
un-adapted bundled model when a model adapted on one season's frames must recognise the other
season. The proxy: the five held-out validation stretches of the train part with two frames
either side (198..251, 548..601, 898..951, 1248..1301, 1598..1651; 270 frames, never trained
on in either season). `training.adapt.adapt` runs on their **summer** frames (a posed folder of
symbolic links, x = frame index, so a place is a frame and its neighbours), then their 270
winter frames are searched against those 270 summer frames with `vpr evaluate`'s code (float
descriptor), correct within one frame. ``--biased``: adapt on every train summer frame
(17..1799) and search the 250 validation winter frames (200..249, ...) against them (the
bundled model was trained on most of those summer frames). Test-part winter frames are never
read. ``--blend A ...`` also scores WiSE-FT blends (1 - A) x original + A x adapted of each
run's trained tensors (`training.adapt.interpolate_weights`). One torch thread.

    .venv/bin/python bench/adapt_proxy.py --data ../shared/data/nordland_64x32 \\
        --set distill_target=clean --seeds 0 1 [--blend 0.3 0.5 0.7] [--biased]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from training.adapt import adapt, AdaptConfig, adapt_trainable, interpolate_weights
from training.bag_places import SessionSpec
from vpr_core.config import load_config
from vpr_core.evaluation import EvalOptions, EvalSet, evaluate_model, list_images, load_images
from vpr_core.extractor import Extractor
from vpr_core.model import default_model_path, load_model

STRETCHES = ((198, 252), (548, 602), (898, 952), (1248, 1302), (1598, 1652))
TRAIN = (17, 1800)
TOLERANCE = 1
# Posed proxy folder, x = frame index: a place is a frame and its neighbours, places of one
# batch at least 3 frames apart from each other's frames (the unposed defaults' rule).
PROXY_MINING = ('mining.positive_radius_m=1', 'mining.negative_radius_m=3')


def frame_sets(biased: bool) -> tuple[list[int], list[int], list[int]]:
    """(adapted summer frames, database summer frames, query winter frames)."""
    proxy = [i for start, stop in STRETCHES for i in range(start, stop)]
    if not biased:
        return proxy, proxy, proxy
    inner = [i for start, stop in STRETCHES for i in range(start + 2, stop - 2)]
    train = list(range(*TRAIN))
    return train, train, inner


def posed_folder(root: Path, files: list[Path], frames: list[int]) -> SessionSpec:
    """Symbolic links of ``frames`` under ``root`` and a poses CSV with x = frame index."""
    root.mkdir(parents=True)
    rows = ['name,x,y']
    for i in frames:
        (root / files[i].name).symlink_to(files[i].resolve())
        rows.append(f'{files[i].name},{i},0')
    poses = root.parent / f'{root.name}_poses.csv'
    poses.write_text('\n'.join(rows) + '\n')
    return SessionSpec(images=str(root), poses=str(poses), layout='csv')


def eval_set(summer: list[Path], winter: list[Path], database: list[int],
             queries: list[int]) -> EvalSet:
    """Winter ``queries`` against summer ``database``; positives within one frame index."""
    db = np.asarray(database)
    positives = tuple(np.flatnonzero(np.abs(db - q) <= TOLERANCE) for q in queries)
    return EvalSet(name='nordland-adapt-proxy', database=tuple(summer[i] for i in database),
                   queries=tuple(winter[i] for i in queries), positives=positives)


def score(model, evalset: EvalSet, images) -> dict:
    """R@1 / R@5 and correct top-1 count of ``model`` (float descriptor, as vpr evaluate)."""
    extractor = Extractor(model, device='cpu', batch_size=32)
    options = EvalOptions(mode='float', recall_values=(1, 5), progress=False)
    section = evaluate_model(extractor, evalset, options, images)
    return {'r1': section['recall_at']['1'], 'r5': section['recall_at']['5'],
            'correct': int(np.sum(section['match_correct']))}


def blended(base_path: Path, adapted_path: Path, cfg: AdaptConfig, alpha: float):
    """The adapted model with its trained tensors blended towards the original by ``alpha``."""
    base, model = load_model(base_path), load_model(adapted_path)
    names = adapt_trainable(base, cfg.trainable)
    initial = {n: p.detach().clone() for n, p in base.named_parameters() if n in names}
    interpolate_weights(model, initial, alpha)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data', type=Path, required=True, help='nordland_64x32 folder')
    parser.add_argument('--config', type=Path, default=None, help='AdaptConfig YAML')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE')
    parser.add_argument('--seeds', type=int, nargs='+', default=[0])
    parser.add_argument('--blend', type=float, nargs='*', default=[])
    parser.add_argument('--biased', action='store_true')
    parser.add_argument('--json', type=Path, default=None, help='write the rows here')
    args = parser.parse_args()
    torch.set_num_threads(1)
    summer, winter = list_images(args.data / 'summer'), list_images(args.data / 'winter')
    adapted_frames, database, queries = frame_sets(args.biased)
    evalset = eval_set(summer, winter, database, queries)
    images = load_images(evalset, progress=False)
    base_path = default_model_path()
    rows = [dict(run='not adapted', **score(load_model(base_path), evalset, images))]
    print(f"not adapted: R@1 {rows[0]['r1']:.3f} ({rows[0]['correct']}/{len(queries)})",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        session = posed_folder(Path(tmp) / 'summer', summer, adapted_frames)
        for seed in args.seeds:
            overrides = [*PROXY_MINING, *args.set, f'seed={seed}', 'device=cpu']
            cfg = load_config(AdaptConfig, args.config, overrides, base=AdaptConfig())
            if args.blend and cfg.interpolate != 1.0:
                parser.error('--blend blends the trained weights: run with interpolate=1')
            out = Path(tmp) / f'adapted_{seed}.safetensors'
            tic = time.process_time()
            result = adapt([session], out, cfg, base_path, progress=False)
            row = dict(run=f'seed {seed}', set=args.set, steps=result.steps,
                       cpu_min=round(result.cpu_s / 60, 2),
                       losses=[round(v, 4) for v in result.epoch_losses],
                       **score(load_model(out), evalset, images))
            row['cpu_min_with_scoring'] = round((time.process_time() - tic) / 60, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
            for alpha in args.blend:
                blend = dict(run=f'seed {seed} blend {alpha}',
                             **score(blended(base_path, out, cfg, alpha), evalset, images))
                rows.append(blend)
                print(json.dumps(blend), flush=True)
    print(f"{'run':<22} {'R@1':>6} {'R@5':>6} {'correct':>8}")
    for row in rows:
        print(f"{row['run']:<22} {row['r1']:>6.3f} {row['r5']:>6.3f} {row['correct']:>8}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1) + '\n')


if __name__ == '__main__':
    main()
