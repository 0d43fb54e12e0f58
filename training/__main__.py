"""``python -m training --config config/train/<recipe>.yaml --set key.path=value ...``

``--resume RUN_DIR`` continues a run from its last completed epoch with the config saved there
(``--set`` may still change, e.g., ``epochs``).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Sequence

from training.config import TrainConfig
from training.run import train
from vpr_core.config import load_config
from vpr_core.errors import VPRError


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog='python -m training', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', type=Path, help='recipe YAML (config/train/*.yaml)')
    parser.add_argument('--set', dest='overrides', action='append', default=[],
                        metavar='KEY=VALUE', help='override one config value (repeatable)')
    parser.add_argument('--resume', type=Path, default=None, metavar='RUN_DIR',
                        help='continue the run in RUN_DIR')
    parser.add_argument('-v', '--verbose', action='store_true', help='debug logging')
    return parser.parse_args(argv)


def run_directory(cfg: TrainConfig, config_path: Path | None) -> Path:
    """``<out_dir>/<run_name>``; the default name is the recipe name and a time stamp."""
    name = cfg.run_name or f"{config_path.stem if config_path else 'run'}-" \
                           f"{time.strftime('%Y%m%d-%H%M%S')}"
    return Path(cfg.out_dir) / name


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    try:
        if args.resume is not None:
            cfg = load_config(TrainConfig, args.resume / 'config.yaml', args.overrides)
            run_dir = args.resume
        else:
            if args.config is None:
                raise VPRError('give --config RECIPE.yaml (or --resume RUN_DIR)')
            cfg = load_config(TrainConfig, args.config, args.overrides)
            run_dir = run_directory(cfg, args.config)
        progress = train(cfg, run_dir, resume=args.resume is not None)
    except VPRError as exc:
        print(f'training: error: {exc}', file=sys.stderr)
        return 2
    print(f"run {run_dir}: best epoch {progress.get('best_epoch')}, score "
          f"{progress.get('best_score')}, checkpoint {run_dir / 'best.safetensors'}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
