"""The one frame-period estimator (tracker and node diagnostics)."""
import numpy as np
import pytest

from vpr_core.errors import ConfigError
from vpr_core.localization.period import FramePeriod


def estimate(spacings, **kwargs):
    period = FramePeriod(**kwargs)
    for spacing in spacings:
        period.add(spacing)
    return period.estimate()


def test_jitter_does_not_bias_the_period_low():
    rng = np.random.default_rng(0)
    spacings = 1 / 30 + rng.uniform(-0.003, 0.003, 64)
    assert estimate(spacings) == pytest.approx(1 / 30, abs=5e-4)
    # a low quantile (the tracker's former estimator) sits near the jitter's lower edge
    assert np.quantile(spacings, 0.1) < 1 / 30 - 0.002


@pytest.mark.parametrize('loss', [0.5, 0.75, 0.9])
def test_heavy_loss_keeps_the_period(loss):
    rng = np.random.default_rng(1)
    kept = np.flatnonzero(rng.random(4000) >= loss)
    spacings = np.diff(kept) * 0.1
    assert estimate(spacings, history=100) == pytest.approx(0.1)
    if loss > 0.5:
        assert np.median(spacings) >= 0.2   # what a plain median would say


def test_history_minimum_clear_and_ignored_spacings():
    period = FramePeriod(history=4, min_history=3)
    for spacing in (0.0, -1.0, 2.0, 2.0):
        period.add(spacing)
    assert len(period) == 2 and period.estimate() is None
    for spacing in (1.0, 1.0, 1.0, 1.0):
        period.add(spacing)
    assert list(period) == [1.0] * 4 and period.estimate() == 1.0   # oldest dropped
    period.clear()
    assert len(period) == 0 and period.estimate() is None


@pytest.mark.parametrize('kwargs', [dict(min_history=0), dict(history=2, min_history=3),
                                    dict(cluster_factor=0.5)])
def test_bad_settings_are_errors(kwargs):
    with pytest.raises(ConfigError):
        FramePeriod(**kwargs)
