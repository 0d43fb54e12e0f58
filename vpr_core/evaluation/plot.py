"""PNG plots of an evaluation report: recall@N, precision-recall, matches vs ground truth.

Figures are built with matplotlib's object API (no pyplot, no global backend state, no
display needed); every figure is written atomically.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
import numpy as np

from vpr_core.evaluation.report import recall_columns
from vpr_core.model.weights import atomic_write_path


def plot_report(report: dict, out_dir: str | Path,
                positives: list[np.ndarray] | None = None) -> list[Path]:
    """Write ``recall.png``, ``pr.png`` and, for sequences, ``matches.png``; return paths."""
    out_dir = Path(out_dir)
    written = [plot_recall(report, out_dir / 'recall.png'), plot_pr(report, out_dir / 'pr.png')]
    if 'matches' in report and positives is not None:
        written.append(plot_matches(report, positives, out_dir / 'matches.png'))
    return written


def plot_recall(report: dict, path: Path) -> Path:
    """Recall@N curves (log N axis) of the model and the baseline."""
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for name, values in recall_columns(report):
        ns = sorted(int(n) for n in values)
        axis.plot(ns, [values[str(n)] for n in ns], marker='o', label=name)
    axis.set_xscale('log')
    axis.set_xlabel('N')
    axis.set_ylabel('recall@N')
    axis.set_ylim(0, 1)
    axis.grid(True, alpha=0.3)
    axis.legend()
    axis.set_title(report.get('dataset', {}).get('name', 'recall@N'))
    return _save(figure, path)


def plot_pr(report: dict, path: Path) -> Path:
    """Precision-recall curves of the accepted top-1 matches."""
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    base = report.get('baseline') or {}
    for name, pr in (('model', report.get('pr')), ('model_sequence', report.get('sequence_pr')),
                     ('baseline', base.get('pr')),
                     ('baseline_sequence', base.get('sequence_pr'))):
        if pr:
            axis.plot(pr['recall'], pr['precision'], label=f"{name} (AUC {pr['auc']:.3f})")
    axis.set_xlabel('recall')
    axis.set_ylabel('precision')
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.grid(True, alpha=0.3)
    axis.legend()
    return _save(figure, path)


def plot_matches(report: dict, positives: list[np.ndarray], path: Path) -> Path:
    """Matched database index per query (green correct, red wrong) over the ground truth."""
    figure = Figure(figsize=(6, 6))
    axis = figure.subplots()
    truth_q = np.concatenate([np.full(len(p), i) for i, p in enumerate(positives)] or [[]])
    truth_db = np.concatenate(list(positives) or [[]])
    axis.scatter(truth_q, truth_db, s=1, c='0.75', label='ground truth')
    key = 'sequence_matches' if 'sequence_matches' in report else 'matches'
    ok_key = 'sequence_match_correct' if key == 'sequence_matches' else 'match_correct'
    matches = np.asarray(report[key])
    ok = np.asarray(report[ok_key], dtype=bool)
    queries = np.arange(len(matches))
    axis.scatter(queries[ok], matches[ok], s=2, c='tab:green', label='correct')
    axis.scatter(queries[~ok], matches[~ok], s=2, c='tab:red', label='wrong')
    axis.set_xlabel('query index')
    axis.set_ylabel('matched database index')
    title = 'sequence matches' if key == 'sequence_matches' else 'single-frame matches'
    axis.set_title(title)
    axis.legend(markerscale=4)
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    with atomic_write_path(path) as tmp:
        figure.savefig(tmp, format='png', dpi=110)
    return path
