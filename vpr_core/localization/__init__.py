"""Localization for streams: sequence matching, gating and pose priors with covariance.

- :mod:`~vpr_core.localization.recognizer`: :class:`PlaceRecognizer`, ``LocalizationResult``;
- :mod:`~vpr_core.localization.sequence`: offline ``sequence_match`` over a [Q, N] matrix;
- :mod:`~vpr_core.localization.config`: :class:`LocalizationConfig` and its sections;
- :mod:`~vpr_core.localization.calibration`: score-to-error calibration of the covariance.
"""

from vpr_core.exports import lazy_exports

_EXPORTS = {
    'LocalizationConfig': 'vpr_core.localization.config',
    'FramePeriod': 'vpr_core.localization.period',
    'LocalizationResult': 'vpr_core.localization.recognizer',
    'PlaceRecognizer': 'vpr_core.localization.recognizer',
    'SequenceTracker': 'vpr_core.localization.tracker',
    'sequence_match': 'vpr_core.localization.sequence',
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
