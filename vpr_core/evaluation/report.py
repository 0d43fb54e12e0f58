"""Write an evaluation report: ``report.json`` plus CSV tables, each written atomically.

``report.json`` keeps the scripts' contract: ``recall_at`` maps N (a string) to single-frame
recall of the model, ``sequence_recall_at`` the same after sequence filtering (when asked), and
``baseline`` holds the pixel baseline of the same run. Per-query matches go to ``matches.csv``
rather than the JSON.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Iterable, Sequence

from vpr_core.files import atomic_write_text

PER_QUERY_KEYS = ('matches', 'match_correct', 'sequence_matches', 'sequence_match_correct')


def summary(report: dict) -> dict:
    """The report without its per-query lists (what ``report.json`` holds)."""
    def strip(section: dict) -> dict:
        return {k: v for k, v in section.items() if k not in PER_QUERY_KEYS}
    out = strip(report)
    if isinstance(report.get('baseline'), dict):
        out['baseline'] = strip(report['baseline'])
    return out


def write_report(report: dict, out_dir: str | Path) -> list[Path]:
    """Write ``report.json``, ``recall.csv``, ``pr.csv`` and ``matches.csv``; return paths."""
    out_dir = Path(out_dir)
    written = [out_dir / 'report.json', out_dir / 'recall.csv', out_dir / 'pr.csv']
    atomic_write_text(written[0], json.dumps(summary(report), indent=2, sort_keys=True) + '\n')
    atomic_write_text(written[1], _recall_csv(report))
    atomic_write_text(written[2], _pr_csv(report))
    if 'matches' in report:
        written.append(out_dir / 'matches.csv')
        atomic_write_text(written[-1], _matches_csv(report))
    return written


def recall_columns(report: dict) -> list[tuple[str, dict]]:
    """(column name, recall dict) for the model and baseline, single-frame and sequence."""
    columns = [('model', report.get('recall_at'))]
    columns.append(('model_sequence', report.get('sequence_recall_at')))
    base = report.get('baseline') or {}
    columns.append(('baseline', base.get('recall_at')))
    columns.append(('baseline_sequence', base.get('sequence_recall_at')))
    return [(name, values) for name, values in columns if values]


def format_table(report: dict) -> str:
    """Human-readable recall table (what the CLI prints)."""
    columns = recall_columns(report)
    ns = sorted({int(n) for _, values in columns for n in values})
    width = max(len(name) for name, _ in columns) + 2
    lines = ['R@N'.ljust(6) + ''.join(name.rjust(width) for name, _ in columns)]
    for n in ns:
        cells = ''.join(f'{values.get(str(n), float("nan")):{width}.3f}' for _, values in columns)
        lines.append(f'R@{n}'.ljust(6) + cells)
    pr = report.get('pr', {})
    lines.append(f"PR AUC {pr.get('auc', float('nan')):.3f}, recall at 100% precision "
                 f"{pr.get('recall_at_100_precision', float('nan')):.3f}")
    if 'sequence_length' in report:
        hubness = report.get('hubness_k') or 0
        lines.append(f"model_sequence: the node's localizer, last {report['sequence_length']} "
                     'frames, ' + (f'hubness reduction k {hubness}' if hubness else
                                   'no hubness reduction'))
        accepted = report.get('accepted') or {}
        if accepted:
            precision, recall = (('n/a' if value is None else f'{value:.3f}') for value in
                                 (accepted['precision'], accepted['recall']))
            lines.append(f"accepted {accepted['count']} ({accepted['correct']} correct): "
                         f'precision {precision}, recall {recall}')
    return '\n'.join(lines)


def _csv(rows: Iterable[Sequence]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator='\n').writerows(rows)
    return buffer.getvalue()


def _recall_csv(report: dict) -> str:
    columns = recall_columns(report)
    ns = sorted({int(n) for _, values in columns for n in values})
    rows = [['n'] + [name for name, _ in columns]]
    rows += [[n] + [values.get(str(n), '') for _, values in columns] for n in ns]
    return _csv(rows)


def _pr_csv(report: dict) -> str:
    rows = [['method', 'threshold', 'precision', 'recall']]
    sections = [('model', report.get('pr')), ('model_sequence', report.get('sequence_pr'))]
    base = report.get('baseline') or {}
    sections += [('baseline', base.get('pr')), ('baseline_sequence', base.get('sequence_pr'))]
    for name, pr in sections:
        if pr:
            points = zip(pr['thresholds'], pr['precision'], pr['recall'])
            rows += [[name, t, p, r] for t, p, r in points]
    return _csv(rows)


def _matches_csv(report: dict) -> str:
    has_seq = 'sequence_matches' in report
    rows = [['query', 'match', 'correct'] + (['sequence_match', 'sequence_correct']
                                             if has_seq else [])]
    for i, (match, ok) in enumerate(zip(report['matches'], report['match_correct'])):
        extra = [report['sequence_matches'][i], int(report['sequence_match_correct'][i])] \
            if has_seq else []
        rows.append([i, match, int(ok)] + extra)
    return _csv(rows)
