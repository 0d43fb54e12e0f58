"""What a run writes next to its checkpoints: resolved config, git revision, history, curves."""
from __future__ import annotations

import csv
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from matplotlib.figure import Figure
import torch
import yaml

from training.config import TrainConfig
from vpr_core.config import to_dict
from vpr_core.files import atomic_write_path, atomic_write_text

HISTORY_FIELDS = ('epoch', 'steps', 'loss', 'lr', 'val_r1', 'val_r5', 'val_r10', 'val_score',
                  'seconds')


def git_revision(cwd: Path | None = None) -> str:
    """``<commit>[+dirty]`` of the checkout holding this package, or 'unknown'."""
    cwd = cwd or Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=cwd, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                               cwd=cwd, capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return 'unknown'
    return commit + ('+dirty' if dirty else '')


class RunRecord:
    """Files of one run folder; the history survives a resume."""

    def __init__(self, run_dir: Path, cfg: TrainConfig) -> None:
        self.run_dir, self.cfg = Path(run_dir), cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.history: list[dict] = []
        self.revision = git_revision()
        atomic_write_text(self.run_dir / 'config.yaml',
                          yaml.safe_dump(to_dict(cfg), sort_keys=False))
        self._write_run_info({'status': 'running'})

    def load_history(self) -> None:
        """Read ``history.csv`` back (resume)."""
        path = self.run_dir / 'history.csv'
        if path.is_file():
            with path.open(newline='') as handle:
                self.history = [{k: _number(v) for k, v in row.items()}
                                for row in csv.DictReader(handle)]

    def add_epoch(self, epoch: int, losses: list[float], lr: float, metrics: dict | None,
                  seconds: float) -> None:
        """Append one epoch to ``history.csv`` and redraw ``curves.png``."""
        recalls = (metrics or {}).get('recall_at', {})
        self.history.append({
            'epoch': epoch, 'steps': len(losses),
            'loss': sum(losses) / max(len(losses), 1), 'lr': lr,
            'val_r1': recalls.get('1', ''), 'val_r5': recalls.get('5', ''),
            'val_r10': recalls.get('10', ''),
            'val_score': '' if metrics is None else metrics['score'], 'seconds': seconds})
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, HISTORY_FIELDS, lineterminator='\n')
        writer.writeheader()
        writer.writerows(self.history)
        atomic_write_text(self.run_dir / 'history.csv', buffer.getvalue())
        self.plot()

    def checkpoint_metadata(self, epoch: int, metrics: dict | None) -> dict:
        """The ``extra`` metadata stored in the run's checkpoints."""
        return {'training': {'run': self.run_dir.name, 'stage': self.cfg.stage,
                             'epoch': epoch, 'seed': self.cfg.seed, 'git': self.revision,
                             'data': self.cfg.data.root, 'data_kind': self.cfg.data.kind,
                             'index_range': self.cfg.data.index_range,
                             'validation': None if metrics is None else metrics['recall_at']}}

    def finish(self, progress: dict) -> None:
        """Final ``run.json``."""
        self._write_run_info({'status': 'finished', **progress})

    def plot(self) -> None:
        """``curves.png``: mean training loss and validation recall@1 per epoch."""
        figure = Figure(figsize=(7, 4))
        axis = figure.subplots()
        epochs = [row['epoch'] for row in self.history]
        axis.plot(epochs, [row['loss'] for row in self.history], 'o-', color='tab:blue')
        axis.set_xlabel('epoch')
        axis.set_ylabel('training loss', color='tab:blue')
        validated = [(row['epoch'], row['val_r1']) for row in self.history
                     if row['val_r1'] != '']
        if validated:
            twin = axis.twinx()
            twin.plot(*zip(*validated), 's-', color='tab:green')
            twin.set_ylabel('validation recall@1', color='tab:green')
            twin.set_ylim(0, 1)
        axis.set_title(self.run_dir.name)
        figure.tight_layout()
        with atomic_write_path(self.run_dir / 'curves.png') as tmp:
            figure.savefig(tmp, format='png', dpi=100)

    def _write_run_info(self, extra: dict) -> None:
        info = {'git': self.revision, 'command': sys.argv, 'python': platform.python_version(),
                'torch': torch.__version__, 'torch_threads': torch.get_num_threads(),
                'cpu_count': os.cpu_count(),
                'updated': time.strftime('%Y-%m-%dT%H:%M:%S%z'), **extra}
        atomic_write_text(self.run_dir / 'run.json', json.dumps(info, indent=2) + '\n')


def _number(text: str):
    if text == '':
        return ''
    value = float(text)
    return int(value) if value.is_integer() and '.' not in text else value
