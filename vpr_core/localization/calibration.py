"""Score-to-error calibration of the pose prior covariance.

The prior's position variance is first predicted from the data (candidate spread plus a floor
from the keyframe spacing). Evaluation on bags with ground truth then measures, for accepted
matches, how the squared error compares with that prediction at each score; the calibration
stores the mean ratio per score bin (never increasing with the score, floored at
``min_factor``) and the localizer multiplies the covariance by it. A prior whose score says
"confident" but whose errors were large gets inflated to what was observed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vpr_core.errors import ConfigError
from vpr_core.model.weights import atomic_write_path

FORMAT = 'vpr-score-calibration-1'


@dataclass(frozen=True)
class ScoreCalibration:
    """Covariance scale factor by score: ``edges`` [B - 1] ascending bin edges, ``factors``
    [B] (non-increasing). The default (one bin, factor 1) leaves the covariance unchanged."""

    edges: tuple[float, ...] = ()
    factors: tuple[float, ...] = (1.0,)
    samples: int = 0

    def factor(self, score: float) -> float:
        """Scale for a match of ``score``."""
        return float(self.factors[int(np.searchsorted(self.edges, score, side='right'))])

    @classmethod
    def fit(cls, scores: np.ndarray, predicted_variance: np.ndarray, squared_error: np.ndarray,
            bins: int = 5, min_factor: float = 0.1) -> 'ScoreCalibration':
        """Fit from accepted matches: ``scores`` [M], the prior's predicted position variance
        [M] (m^2, per axis) and the squared position error per axis [M] (m^2)."""
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        ratio = np.asarray(squared_error, np.float64).reshape(-1) / np.maximum(
            np.asarray(predicted_variance, np.float64).reshape(-1), 1e-12)
        if len(scores) != len(ratio) or not len(scores):
            raise ConfigError('calibration needs matching, non-empty scores and errors')
        bins = max(1, min(bins, len(scores) // 10 or 1))
        edges = np.quantile(scores, np.linspace(0, 1, bins + 1)[1:-1]) if bins > 1 else \
            np.zeros(0)
        which = np.searchsorted(edges, scores, side='right')
        means = np.array([ratio[which == b].mean() if np.any(which == b) else np.nan
                          for b in range(bins)])
        means = np.where(np.isnan(means), np.nanmean(ratio), means)
        # higher score must never mean a larger covariance: running max from the top bin down
        factors = np.maximum(np.maximum.accumulate(means[::-1])[::-1], min_factor)
        return cls(tuple(float(e) for e in edges), tuple(float(f) for f in factors),
                   len(scores))

    def save(self, path: str | Path) -> None:
        """Write JSON atomically (temp file, fsync, rename)."""
        path = Path(path)
        data = {'format': FORMAT, 'edges': list(self.edges), 'factors': list(self.factors),
                'samples': self.samples}
        with atomic_write_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> 'ScoreCalibration':
        """Read a calibration written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f'cannot read score calibration {path}: {exc}') from exc
        if not isinstance(data, dict) or data.get('format') != FORMAT:
            raise ConfigError(f"{path} is not a score calibration (format '{FORMAT}')")
        edges, factors = tuple(data['edges']), tuple(data['factors'])
        if len(factors) != len(edges) + 1 or min(factors) <= 0:
            raise ConfigError(f'{path}: needs len(factors) == len(edges) + 1, factors > 0')
        return cls(edges, factors, int(data.get('samples', 0)))
