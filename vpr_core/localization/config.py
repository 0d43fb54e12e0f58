"""Configuration of the stream localizer (one frozen dataclass tree, loaded by vpr_core.config).

Scores: with ``sequence.contrast_window`` > 1 the sequence score is a local z-score (how many
standard deviations the matched trajectory beats the places around it, SeqSLAM's D-hat);
otherwise it is the mean cosine similarity (or 1 - 2 h / bits for codes-only maps) along the
trajectory. ``gate.min_score``, ``gate.min_margin`` and ``confidence_temperature`` are in
those units.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from vpr_core.mapdb.index import SearchConfig
from vpr_core.mapdb.pose import IDENTITY_EXTRINSIC


@dataclass(frozen=True)
class SequenceConfig:
    """Temporal matching over the last ``length`` window steps (1: single-frame).

    ``velocities``: map places advanced per nominal frame period, and map metres per
    odometry metre (several make it speed- and scale-tolerant); ``candidates``: single-frame
    hits extended to sequences (plus the previous best, moved along); ``min_travel_m``: with
    odometry, a new window step starts after this much travel (0: the map's keyframe
    spacing), so a stopped robot does not flood the window; without odometry every frame is
    a step. Window frames sit on a trajectory by odometry travel and by elapsed time in
    nominal frame periods (``frame_period_s``; 0: a low quantile of the recent stamp
    spacing), not by frame count, so lost frames do not bend it. A spacing above
    ``gap_factor`` periods that odometry does not measure is a gap: a match then needs
    ``gate.min_frames`` frames after it; above ``gap_reset_factor`` periods the window
    restarts. ``hubness_k`` > 0: online hubness reduction (see
    :mod:`~vpr_core.localization.hubness`) before the trajectories are scored, from every
    frame's similarity to every map place (one pass over the map per frame); 0: off.
    """

    length: int = 10
    velocities: tuple[float, ...] = (0.8, 0.9, 1.0, 1.1, 1.25)
    contrast_window: int = 20
    candidates: int = 20
    min_travel_m: float = 0.0
    hubness_k: int = 0
    frame_period_s: float = 0.0
    gap_factor: float = 3.0
    gap_reset_factor: float = 20.0


@dataclass(frozen=True)
class GateConfig:
    """When a match is accepted (each check can be switched off with 0 / -inf).

    ``min_score``: sequence score of the match; ``min_frame_score``: the newest frame's own
    score at the matched place (after a kidnap the old trajectory still scores well for a few
    frames, but the newest frame does not fit it); ``min_margin``: its lead over the best
    candidate farther than ``same_place_radius_m`` (0: twice the keyframe spacing);
    ``min_frames``: window steps needed before anything is accepted; ``min_agreement``:
    consecutive results whose matches follow each other within ``agreement_tolerance``
    places; ``odometry_tolerance_m`` + ``odometry_tolerance_ratio`` x distance: how far the
    travel between two accepted matches may differ from the odometry's (0: off).
    """

    min_score: float = 1.3
    min_frame_score: float = 0.0
    min_margin: float = 0.1
    same_place_radius_m: float = 0.0
    min_frames: int = 3
    min_agreement: int = 2
    agreement_tolerance: int = 2
    odometry_tolerance_m: float = 0.0
    odometry_tolerance_ratio: float = 0.2


@dataclass(frozen=True)
class PriorConfig:
    """Pose prior covariance (variances in m^2 and rad^2, diagonal).

    ``floor_spacing_factor`` x keyframe spacing and ``min_sigma_m`` bound the position sigma
    from below; ``step_sigma`` x the places travelled since the previous frame x the keyframe
    spacing is added (in quadrature, on x and y) for the along-track uncertainty of a match
    made across that step (large after a gap); ``yaw_floor_deg`` bounds the yaw sigma;
    unobserved axes (z, roll, pitch on planar maps, yaw when the map has no orientation) get
    ``unobserved_variance``; every variance is clamped to [``min_variance``,
    ``max_variance``] (< 1e9, which Nav2 rejects).
    ``calibration``: JSON file of a fitted score-to-error calibration ('' for none).
    """

    camera_in_base: tuple[float, ...] = IDENTITY_EXTRINSIC
    floor_spacing_factor: float = 0.5
    min_sigma_m: float = 0.1
    step_sigma: float = 0.1
    yaw_floor_deg: float = 10.0
    rotation_floor_deg: float = 5.0
    unobserved_variance: float = 1.0e4
    min_variance: float = 1.0e-6
    max_variance: float = 1.0e6
    calibration: str = ''


@dataclass(frozen=True)
class LocalizationConfig:
    """Everything :class:`~vpr_core.localization.recognizer.PlaceRecognizer` reads."""

    search: SearchConfig = field(default_factory=SearchConfig)
    sequence: SequenceConfig = field(default_factory=SequenceConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    top_k: int = 10
    confidence_temperature: float = 0.25
