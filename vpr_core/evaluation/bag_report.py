"""Scores and files of a bag evaluation (:mod:`~vpr_core.evaluation.bag_eval`).

Over the scored frames (decoded, ground truth known):

- ``recall_at``: a positive among the recognizer's first N candidates (ranked by sequence
  score); frames without a positive stay in the denominator, as in ``vpr evaluate``;
- ``pr``: precision-recall of the top candidate thresholded on the result's confidence (a
  sweep independent of the gate); ``pr_score``: the same over the match score, the quantity
  ``gate.min_score`` thresholds;
- ``accepted``: the gate's decisions: precision = correct accepted / accepted, recall =
  correct accepted / frames with a positive, rate = accepted / frames;
- ``localization_error``: horizontal distance from accepted priors to the ground-truth base
  position, yaw error, and the errors against the prior covariance (normalised squared error
  per axis, 1 when calibrated; share inside the 95 % ellipse, 0.95 when calibrated; the
  median published sigma, ``median_sigma_m``, the larger of x and y: a share inside far
  above 0.95 with a sigma far above the errors means an over-wide covariance);
  ``localization_error_top1``: the same for every top candidate, accepted or not;
- ``latency_ms``: p50 / p95 / mean / max per stage (decode, extract, localize, total).
"""
from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path
from typing import Sequence

from matplotlib.figure import Figure
import numpy as np

from vpr_core.errors import ConfigError
from vpr_core.evaluation.metrics import (percentiles_ms, precision_recall, recall_at,
                                         top1_correct)
from vpr_core.evaluation.plot import plot_report
from vpr_core.evaluation.report import write_report
from vpr_core.files import atomic_write_text
from vpr_core.localization.calibration import ScoreCalibration
from vpr_core.mapdb.pose import yaw_from_quaternions
from vpr_core.model.weights import atomic_write_path

CHI2_2DOF_95 = 5.991
STAGES = ('decode', 'extract', 'localize')
COLUMNS = ('frame', 'stamp_ns', 'scored', 'accepted', 'reason', 'match', 'place_id', 'score',
           'confidence', 'margin', 'correct', 'positives', 'gt_x', 'gt_y', 'prior_x',
           'prior_y', 'error_x', 'error_y', 'error_m', 'yaw_error_deg', 'place_error',
           'sigma_x_m', 'sigma_y_m', 'decode_ms', 'extract_ms', 'localize_ms', 'candidates')


def frame_columns(records: Sequence, truth, depth: int = 1
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Per-frame arrays named by ``COLUMNS`` (F frames) and the candidates [F, depth] (map
    rows best first, -1 padded)."""
    rows = [_row(record, truth) for record in records]
    predictions = np.full((len(records), max(depth, 1)), -1, dtype=np.int64)
    for i, record in enumerate(records):
        ranked = [c.index for c in record.result.candidates] if record.result else []
        ranked = ranked[:predictions.shape[1]]
        predictions[i, :len(ranked)] = ranked
    columns = {name: np.array([row[name] for row in rows]) for name in COLUMNS}
    columns['correct'] = top1_correct(predictions, [truth.positives[r.index] for r in records])
    return columns, predictions


def _row(record, truth) -> dict:
    i, result = record.index, record.result
    row = dict.fromkeys(COLUMNS, np.nan)
    row.update(frame=i, stamp_ns=record.stamp_ns,
               scored=bool(truth.known[i]) and result is not None, accepted=False,
               reason=record.error, match=-1, place_id=-1, confidence=0.0, correct=False,
               positives=len(truth.positives[i]), gt_x=truth.positions[i, 0],
               gt_y=truth.positions[i, 1], decode_ms=record.decode_s * 1e3,
               extract_ms=record.extract_s * 1e3, localize_ms=record.localize_s * 1e3,
               candidates='')
    if result is None:
        return row
    row.update(accepted=bool(result.accepted), reason=result.rejection_reason,
               confidence=float(result.confidence), margin=float(result.margin))
    if result.match is None:
        return row
    match, prior = result.match, result.prior
    row.update(match=match.index, place_id=match.place_id, score=match.score,
               candidates=' '.join(str(c.index) for c in result.candidates))
    error = np.asarray(prior.pose.position[:2]) - truth.positions[i, :2]
    covariance = prior.covariance_matrix
    row.update(prior_x=prior.pose.position[0], prior_y=prior.pose.position[1],
               error_x=error[0], error_y=error[1], error_m=float(np.hypot(*error)),
               sigma_x_m=float(np.sqrt(covariance[0, 0])),
               sigma_y_m=float(np.sqrt(covariance[1, 1])))
    if truth.orientation_known and np.all(np.isfinite(truth.orientations[i])):
        truth_yaw = float(yaw_from_quaternions(truth.orientations[i:i + 1])[0])
        row['yaw_error_deg'] = abs(float(np.degrees(np.angle(np.exp(
            1j * (prior.pose.yaw - truth_yaw))))))
    if truth.places[i] >= 0:
        row['place_error'] = abs(match.index - int(truth.places[i]))
    return row


def score_frames(records: Sequence, truth, recall_values: Sequence[int]) -> dict:
    """The metrics of the module docstring, plus per-query ``matches`` / ``match_correct``."""
    columns, predictions = frame_columns(records, truth, max(recall_values))
    scored = columns['scored']
    if not scored.any():
        raise ConfigError('no frame could be scored: every frame lacks a ground-truth pose '
                          'near its stamp (check --gt-topic and --gt-tolerance) or failed to '
                          'decode')
    positives = [truth.positives[i] for i in columns['frame'][scored]]
    correct = columns['correct'][scored]
    has_positive = columns['positives'][scored] > 0
    accepted = columns['accepted'][scored]
    scores = columns['score'][scored]
    floor = np.nanmin(scores) - 1.0 if np.isfinite(scores).any() else 0.0
    decoded = np.array([r.result is not None for r in records])
    return {
        'recall_at': {str(n): v for n, v in recall_at(predictions[scored], positives,
                                                      recall_values).items()},
        'pr': precision_recall(columns['confidence'][scored], correct, has_positive).as_dict(),
        'pr_score': precision_recall(np.where(np.isfinite(scores), scores, floor), correct,
                                     has_positive).as_dict(),
        'accepted': {'count': int(accepted.sum()), 'correct': int((accepted & correct).sum()),
                     'precision': _ratio((accepted & correct).sum(), accepted.sum()),
                     'recall': _ratio((accepted & correct).sum(), has_positive.sum()),
                     'rate': _ratio(accepted.sum(), len(accepted))},
        'rejections': dict(Counter('bad image' if not ok else reason for ok, reason in
                                   zip(decoded, columns['reason']) if reason)),
        'localization_error': error_summary(columns, scored & columns['accepted']),
        'localization_error_top1': error_summary(columns, scored & (columns['match'] >= 0)),
        'first_accept': _first_accept(columns),
        'latency_ms': latency_summary(columns, decoded),
        'matches': predictions[scored, 0].tolist(), 'match_correct': correct.tolist()}


def _ratio(numerator, denominator) -> float | None:
    return float(numerator) / float(denominator) if denominator else None


def error_summary(columns: dict[str, np.ndarray], chosen: np.ndarray) -> dict:
    """Error statistics of the ``chosen`` [F] frames (None where nothing was measured)."""
    finite = chosen & np.isfinite(columns['error_m'])
    errors = columns['error_m'][finite]
    summary = {'count': int(finite.sum())}
    for name, values in (('m', errors), ('yaw_deg', columns['yaw_error_deg'][finite]),
                         ('places', columns['place_error'][finite])):
        values = values[np.isfinite(values)]
        summary.update({f'median_{name}': _stat(np.median, values),
                        f'p95_{name}': _stat(lambda v: np.percentile(v, 95), values),
                        f'max_{name}': _stat(np.max, values)})
    summary['mean_m'] = _stat(np.mean, errors)
    normalised = np.stack([(columns['error_x'][finite] / columns['sigma_x_m'][finite]) ** 2,
                           (columns['error_y'][finite] / columns['sigma_y_m'][finite]) ** 2])
    summary['normalised_squared_error_per_axis'] = _stat(np.mean, normalised.reshape(-1))
    summary['within_95_ellipse'] = _stat(lambda v: np.mean(v <= CHI2_2DOF_95),
                                         normalised.sum(axis=0))
    summary['median_sigma_m'] = _stat(np.median, np.maximum(columns['sigma_x_m'][finite],
                                                            columns['sigma_y_m'][finite]))
    return summary


def _stat(function, values: np.ndarray) -> float | None:
    return float(function(values)) if len(values) else None


def _first_accept(columns: dict[str, np.ndarray]) -> dict | None:
    accepted = np.flatnonzero(columns['accepted'])
    if not len(accepted):
        return None
    first = int(accepted[0])
    return {'frame': int(columns['frame'][first]), 'correct': bool(columns['correct'][first]),
            'seconds': float((columns['stamp_ns'][first] - columns['stamp_ns'][0]) / 1e9)}


def latency_summary(columns: dict[str, np.ndarray], decoded: np.ndarray) -> dict:
    """p50 / p95 / mean / max in ms of every stage and of their sum, over decoded frames."""
    stages = {stage: columns[f'{stage}_ms'][decoded] for stage in STAGES}
    stages['total'] = sum(stages.values())
    summary = {}
    for stage, values in stages.items():
        summary[stage] = percentiles_ms(values / 1e3)
        summary[stage]['max_ms'] = float(values.max()) if len(values) else float('nan')
    return summary


def fit_calibration(records: Sequence, truth, bins: int = 5) -> ScoreCalibration:
    """Score-to-error calibration from the accepted priors with ground truth (x and y errors
    are two samples of the per-axis squared error against the predicted variance)."""
    columns, _ = frame_columns(records, truth)
    chosen = columns['scored'] & columns['accepted'] & np.isfinite(columns['error_m'])
    if not chosen.any():
        raise ConfigError('cannot fit a calibration: no accepted prior has ground truth')
    scores = np.tile(columns['score'][chosen], 2)
    variance = np.concatenate([columns['sigma_x_m'][chosen], columns['sigma_y_m'][chosen]]) ** 2
    squared = np.concatenate([columns['error_x'][chosen], columns['error_y'][chosen]]) ** 2
    return ScoreCalibration.fit(scores, variance, squared, bins=bins)


def write_bag_report(report: dict, records: Sequence, truth, out_dir: str | Path
                     ) -> list[Path]:
    """``report.json`` (+ recall / pr / matches CSV, as ``vpr evaluate``), ``per_frame.csv``,
    ``recall.png``, ``pr.png``, ``matches.png``, ``error_cdf.png`` and ``latency.png``."""
    out_dir = Path(out_dir)
    columns, _ = frame_columns(records, truth)
    written = write_report(report, out_dir)
    written.append(out_dir / 'per_frame.csv')
    atomic_write_text(written[-1], per_frame_csv(columns))
    positives = [truth.positives[i] for i in columns['frame'][columns['scored']]]
    written += plot_report(report, out_dir, positives)
    written.append(plot_error_cdf(columns, out_dir / 'error_cdf.png'))
    written.append(plot_latency(columns, out_dir / 'latency.png'))
    return written


def per_frame_csv(columns: dict[str, np.ndarray]) -> str:
    """CSV text, one row per bag frame, ``COLUMNS`` in order (empty cells for NaN)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(COLUMNS)
    for i in range(len(columns['frame'])):
        writer.writerow([_cell(columns[name][i]) for name in COLUMNS])
    return buffer.getvalue()


def _cell(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return '' if not np.isfinite(value) else f'{float(value):.6g}'
    return str(value)


def plot_error_cdf(columns: dict[str, np.ndarray], path: Path) -> Path:
    """Cumulative share of frames within an error, accepted priors against all top-1."""
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    scored = columns['scored'] & np.isfinite(columns['error_m'])
    for name, chosen in (('accepted priors', scored & columns['accepted']),
                         ('top-1, accepted or not', scored)):
        errors = np.sort(columns['error_m'][chosen])
        if len(errors):
            axis.step(errors, np.arange(1, len(errors) + 1) / len(errors), where='post',
                      label=f'{name} (n={len(errors)}, median {np.median(errors):.2f} m)')
    axis.set_xscale('symlog', linthresh=1.0)
    axis.set_xlabel('horizontal error [m]')
    axis.set_ylabel('share of frames')
    axis.set_ylim(0, 1.02)
    axis.grid(True, alpha=0.3)
    axis.legend(loc='lower right')
    return _save(figure, path)


def plot_latency(columns: dict[str, np.ndarray], path: Path) -> Path:
    """Histogram of the per-frame time of every stage."""
    figure = Figure(figsize=(6, 4))
    axis = figure.subplots()
    for stage in STAGES:
        values = columns[f'{stage}_ms']
        values = values[np.isfinite(values) & (values > 0)]
        if len(values):
            axis.hist(values, bins=40, histtype='step',
                      label=f'{stage} (p50 {np.median(values):.2f} ms, '
                            f'p95 {np.percentile(values, 95):.2f} ms)')
    axis.set_xlabel('time per frame [ms]')
    axis.set_ylabel('frames')
    axis.grid(True, alpha=0.3)
    axis.legend()
    return _save(figure, path)


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    with atomic_write_path(path) as tmp:
        figure.savefig(tmp, format='png', dpi=110)
    return path
