"""Localization for streams: sequence matching, gating and pose priors with covariance.

- :mod:`~vpr_core.localization.recognizer`: :class:`PlaceRecognizer`, ``LocalizationResult``;
- :mod:`~vpr_core.localization.sequence`: offline ``sequence_match`` over a [Q, N] matrix;
- :mod:`~vpr_core.localization.config`: :class:`LocalizationConfig` and its sections;
- :mod:`~vpr_core.localization.calibration`: score-to-error calibration of the covariance.
"""
