"""Outputs of ``vpr loops``: ``loops.csv``, ``report.json`` and ``loops.png``, written atomically.

``loops.csv`` has the header ``query,match,score,inliers,tx,ty,tz,qx,qy,qz,qw,metric,verified``
and one row per accepted loop in 0-based stream indices (query > match, the match may lie
in a previous session: then ``match`` is -1 - its row in that map). The relative pose is the
query camera in the match camera's optical frame (``R_match_query``, translation of the query
origin; unit direction when ``metric`` is 0), empty when the loop was accepted unverified.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure
import numpy as np

from vpr_core.files import atomic_write_text
from vpr_core.model.weights import atomic_write_path

CSV_HEADER = ('query', 'match', 'score', 'inliers', 'tx', 'ty', 'tz', 'qx', 'qy', 'qz', 'qw',
              'metric', 'verified')


@dataclass(frozen=True)
class LoopRow:
    """One accepted loop in stream indices, with its verification outcome."""

    query: int
    match: int
    score: float
    inliers: int
    pose: object | None       # vpr_core.geometry RelativePose
    verified: bool


def loops_csv(rows: Sequence[LoopRow]) -> str:
    """The text of ``loops.csv``."""
    lines = [','.join(CSV_HEADER)]
    for row in rows:
        pose = ['', '', '', '', '', '', '', '']
        if row.pose is not None:
            t = np.asarray(row.pose.translation, dtype=np.float64).reshape(3)
            pose = [f'{v:.6f}' for v in (*t, *row.pose.quaternion())] + \
                [str(int(bool(row.pose.metric)))]
        lines.append(','.join([str(row.query), str(row.match), f'{row.score:.6f}',
                               str(int(row.inliers)), *pose, str(int(row.verified))]))
    return '\n'.join(lines) + '\n'


def write_outputs(out_dir: str | Path, rows: Sequence[LoopRow], report: dict,
                  truth: np.ndarray | None, frames: int) -> list[Path]:
    """Write ``loops.csv``, ``report.json`` and ``loops.png``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / 'loops.csv', out_dir / 'report.json', out_dir / 'loops.png']
    atomic_write_text(written[0], loops_csv(rows))
    atomic_write_text(written[1], json.dumps(report, indent=2, sort_keys=True) + '\n')
    plot_loops(rows, truth, frames, written[2])
    return written


def plot_loops(rows: Sequence[LoopRow], truth: np.ndarray | None, frames: int,
               path: Path) -> Path:
    """Frame x frame plot: true same-place pairs (grey), accepted loops (green correct, red
    wrong; blue without ground truth; hollow when accepted unverified)."""
    figure = Figure(figsize=(6, 6))
    axis = figure.subplots()
    if truth is not None:
        q, m = np.nonzero(np.tril(truth, k=-1))
        axis.scatter(m, q, s=6, c='0.8', marker='s', label='ground truth')
    for verified in (True, False):
        chosen = [r for r in rows if r.verified == verified and r.match >= 0]
        if not chosen:
            continue
        q = np.array([r.query for r in chosen])
        m = np.array([r.match for r in chosen])
        ok = truth[q, m] if truth is not None else np.ones(len(q), dtype=bool)
        style = {'s': 14} if verified else {'s': 14, 'facecolors': 'none'}
        tag = 'verified' if verified else 'unverified'
        for mask, colour, name in ((ok, 'tab:green' if truth is not None else 'tab:blue',
                                    'correct' if truth is not None else 'accepted'),
                                   (~ok, 'tab:red', 'wrong')):
            if mask.any():
                colours = {'edgecolors': colour} if not verified else {'c': colour}
                axis.scatter(m[mask], q[mask], label=f'{name} ({tag})', **style, **colours)
    axis.set_xlim(-1, frames)
    axis.set_ylim(frames, -1)
    axis.set_xlabel('match (stream index)')
    axis.set_ylabel('query (stream index)')
    axis.set_title('loop closures')
    if axis.get_legend_handles_labels()[0]:
        axis.legend(loc='upper right', fontsize=8)
    figure.tight_layout()
    with atomic_write_path(path) as tmp:
        figure.savefig(tmp, format='png', dpi=110)
    return path
