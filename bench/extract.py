"""Descriptor throughput per model next to the bare frozen backbone, measured in one run.

Claim: the SelaVPR++ float model (GeM head) at 322 px adds no more than 20% to the time of the
frozen DINOv2 backbone it adapts, and the two-branch model runs that backbone once. Every row
is timed in rounds between two timings of its backbone baseline (same size, same input, same
run), so a busy host slows both alike; the figure is the median of those paired ratios.

Weights are random; adapters get ordinary magnitudes instead of their zero / 1e-5 init (a
precaution against denormal floats on CPUs); speed does not depend on trained values.
SuperVLAD's cross-image encoder is timed over the whole batch (the ``fixed_batch`` policy);
HAM-VPR runs at its 224 px. On CPU the default clock is the CPU time of the one thread doing
the work: on a shared host wall-clock ratios swing by tens of percent with other processes'
load (``--clock wall`` measures them anyway); on CUDA it is wall time with synchronisation.

    .venv/bin/python bench/extract.py            # ViT-B and ViT-S, every head
    .venv/bin/python bench/extract.py --quick    # ViT-B: backbone, float, two-branch
    .venv/bin/python bench/extract.py --quick --clock wall   # elapsed time, torch threads
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, replace
import statistics
import sys
import time
from typing import Callable

import torch

from vpr_core.devices import autocast, select_device, use_fp16
from vpr_core.model.backbone import DinoVisionTransformer
from vpr_core.model.config import ModelConfig
from vpr_core.model.factory import (build_model, ham_vpr_config, selavpr_plusplus_config,
                                    supervlad_config)
from vpr_core.model.registry import backbone_preset

TARGET_OVERHEAD = 0.20
CLAIM_ROW = 'selavpr++ gem float'


@dataclass
class Row:
    """One timed model: its forward, its baseline row, seconds per batch and paired ratios."""

    label: str
    size: str
    pixels: int
    run: Callable[[torch.Tensor], object]
    baseline: str
    times: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)


def model_configs(size: str, quick: bool) -> list[tuple[str, ModelConfig, int]]:
    """(label, config, input side) of the models timed on ViT ``size``."""
    backbone = f'dinov2-{size}'
    rows = [(CLAIM_ROW, selavpr_plusplus_config(backbone=backbone, hashing=False), 322),
            ('selavpr++ gem two-branch', selavpr_plusplus_config(backbone=backbone), 322)]
    if quick:
        return rows
    rows += [(f'selavpr++ {head} float',
              selavpr_plusplus_config(backbone=backbone, aggregation=head, hashing=False), 322)
             for head in ('boq', 'salad')]
    rows += [('supervlad k4 + encoder', supervlad_config(backbone=backbone), 322),
             ('supervlad 1-cluster', supervlad_config(backbone=backbone, clusters=1,
                                                      ghost_clusters=2,
                                                      crossimage_encoder=False), 322),
             ('ham-vpr heads', replace(ham_vpr_config(), backbone=backbone_preset(backbone)),
              224)]
    return rows


def realistic(model: torch.nn.Module) -> torch.nn.Module:
    """Give zero/1e-5-initialised adapter weights ordinary magnitudes (no denormals)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if 'adapter' in name:
                param.normal_(0.0, 0.02)
    return model.eval()


def build_rows(size: str, quick: bool, device: torch.device) -> list[Row]:
    bare = DinoVisionTransformer(backbone_preset(f'dinov2-{size}')).to(device).eval()
    rows, baselines = [], set()
    for label, config, pixels in model_configs(size, quick):
        model = realistic(build_model(config)).to(device)
        key = f'frozen backbone @{pixels}'
        if key not in baselines:
            baselines.add(key)
            rows.append(Row(key, size, pixels, bare.forward_features, key))
        rows.append(Row(label, size, pixels, model.descriptors, key))
        if 'two-branch' in label:
            print(f'ViT-{size}: {label} runs the last backbone block '
                  f'{count_backbone_runs(model, pixels, device)}x per forward')
    return rows


def count_backbone_runs(model, pixels: int, device: torch.device) -> int:
    calls = []
    hook = model.backbone.blocks[-1].register_forward_hook(lambda *args: calls.append(1))
    with torch.inference_mode():
        model.descriptors(torch.zeros(1, 3, pixels, pixels, device=device))
    hook.remove()
    return len(calls)


def time_rows(rows: list[Row], batch: int, repeats: int, device: torch.device,
              fp16: bool, clock: Callable[[], float]) -> None:
    """One warm-up round, then ``repeats`` rounds of: baseline, its models, baseline again.

    Each model's ratio in a round divides by the mean of the two baseline timings that
    bracket it, so load that drifts during the round cancels to first order.
    """
    inputs = {p: torch.randn(batch, 3, p, p, device=device) for p in {r.pixels for r in rows}}
    groups = {}
    for row in rows:
        groups.setdefault(row.baseline, []).append(row)
    for round_index in range(repeats + 1):
        for key, group in groups.items():
            base, models = group[0], group[1:]
            x = inputs[base.pixels]
            before = time_once(base.run, x, device, fp16, clock)
            seconds = [time_once(row.run, x, device, fp16, clock) for row in models]
            after = time_once(base.run, x, device, fp16, clock)
            if round_index:
                base.times += [before, after]
                for row, value in zip(models, seconds):
                    row.times.append(value)
                    row.ratios.append(2 * value / (before + after))
        print(f'  round {round_index}/{repeats} done', file=sys.stderr)


@torch.inference_mode()
def time_once(run, x: torch.Tensor, device: torch.device, fp16: bool,
              clock: Callable[[], float]) -> float:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    start = clock()
    with autocast(device, fp16):
        run(x)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    return clock() - start


def report(rows: list[Row], batch: int, device: torch.device, clock: str) -> list[str]:
    """Print the table; return the failed claims."""
    print(f'\ndevice {device}, batch {batch}, torch threads {torch.get_num_threads()}, '
          f'{clock} clock, {len(rows[-1].times)} rounds; ratio = median over rounds of model '
          'time / mean of the bracketing backbone times')
    print(f'{"model":28s} {"ViT":5s} {"px":>4s} {"ms/img":>9s} {"img/s":>7s} '
          f'{"vs backbone":>12s}')
    failures = []
    for row in rows:
        seconds = statistics.median(row.times) / batch
        ratio = statistics.median(row.ratios) if row.ratios else 1.0
        print(f'{row.label:28s} {row.size:5s} {row.pixels:4d} {seconds * 1e3:9.1f} '
              f'{1 / seconds:7.2f} {ratio:11.3f}x')
        if row.label != CLAIM_ROW:
            continue
        verdict = 'holds' if ratio <= 1 + TARGET_OVERHEAD else 'FAILS'
        print(f'  -> claim {verdict}: adapters + GeM head add {(ratio - 1) * 100:+.1f}% to the '
              f'frozen backbone (target <= {TARGET_OVERHEAD * 100:.0f}%)')
        if verdict == 'FAILS':
            failures.append(f'ViT-{row.size} {row.label}: {(ratio - 1) * 100:+.1f}%')
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='ViT-B, three rows, batch 1')
    parser.add_argument('--device', default='auto', help='auto | cpu | cuda[:N]')
    parser.add_argument('--batch', type=int, help='images per forward (default 2, quick 1)')
    parser.add_argument('--repeats', type=int, default=3, help='timed rounds (median)')
    parser.add_argument('--threads', type=int, help='torch CPU threads (default: torch)')
    parser.add_argument('--clock', choices=('auto', 'wall', 'cpu'), default='auto',
                        help='cpu: CPU time of the timing thread with one torch thread (CPU '
                             'device only; steady on a shared host); wall: elapsed time; '
                             'auto: cpu on CPU, wall on CUDA')
    args = parser.parse_args(argv)
    device = select_device(args.device)
    if args.clock == 'auto':
        args.clock = 'cpu' if device.type == 'cpu' else 'wall'
    if args.clock == 'cpu':
        if device.type != 'cpu':
            parser.error('--clock cpu needs --device cpu')
        args.threads = 1        # all work then runs on the timed thread
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = time.thread_time if args.clock == 'cpu' else time.perf_counter
    batch = args.batch or (1 if args.quick else 2)
    failures = []
    for size in ('base',) if args.quick else ('base', 'small'):
        torch.manual_seed(0)
        rows = build_rows(size, args.quick, device)
        time_rows(rows, batch, args.repeats, device, use_fp16(device), clock)
        failures += report(rows, batch, device, args.clock)
        del rows
    for failure in failures:
        print(f'CLAIM FAILED: {failure}')
    return 1 if failures else 0


if __name__ == '__main__':
    sys.exit(main())
