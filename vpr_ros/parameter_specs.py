"""ROS parameters generated from the vpr_core config dataclasses, and typed updates of them.

One source of truth: every leaf field of :class:`LocalizationConfig` becomes the parameter
``localization.<dotted path>``, every field of :class:`KeyframeConfig` ``teach.<name>`` and
every leaf of :class:`LoopConfig` (SLAM mode) ``loops.<dotted path>``,
with the dataclass default and a ROS type from the annotation (bool, int, float, str; a
``Literal`` of strings is a string with choices; ``tuple[float, ...]`` a double array). The
dataclasses stay ROS-free: descriptions and ranges live in :data:`FIELD_TABLE` here, keyed by
the parameter name; a field missing there gets a generic description and no range
(:func:`undocumented` lists them, and a test keeps that list empty). A field whose default
has no ROS type (None, an empty tuple) is not declared (:func:`unexposed`, also kept empty).
Two fields are node-level parameters instead (:data:`NODE_LEVEL`): ``top_k`` (also the number
of published candidates) and ``camera_to_base`` (x y z roll pitch yaw, 6 per camera, turned
into each camera's ``prior.camera_in_base``).

Runtime updates are typed: :func:`replace_path` rebuilds the frozen config along the dotted
path with ``dataclasses.replace``, coercing the one value with vpr_core's own rules (no YAML
text round trip).
"""
from __future__ import annotations

import array
from dataclasses import dataclass, fields, is_dataclass, replace
import typing
from typing import Any, Iterator, Literal, Mapping

from vpr_core.config import from_dict
from vpr_core.errors import ConfigError
from vpr_core.localization import LocalizationConfig
from vpr_core.loops import LoopConfig
from vpr_core.mapdb import KeyframeConfig

Applies = Literal['runtime', 'configure', 'startup']
APPLIES_TEXT = {'runtime': 'changes apply at once',
                'configure': 'settable while unconfigured, applied at configure',
                'startup': 'read-only: set at start-up'}


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: default (its type too), description, when a change applies, range
    (inclusive) or choices."""

    name: str
    default: Any
    description: str
    applies: Applies = 'configure'
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()

    @property
    def runtime(self) -> bool:
        """True when a change applies while the node runs."""
        return self.applies == 'runtime'


SECTIONS: dict[str, type] = {'localization': LocalizationConfig, 'teach': KeyframeConfig,
                             'loops': LoopConfig}
NODE_LEVEL = {'localization.top_k': 'top_k', 'localization.prior.camera_in_base': 'camera_to_base'}
# the keyframe rule and the kind of stored local features are fixed for a session
CONFIGURE_TIME = ('localization.search.', 'localization.prior.calibration', 'teach.',
                  'loops.keyframes.', 'loops.verify.features', 'loops.verify.max_features')
GENERIC_DESCRIPTION = 'vpr_core setting (see the docstring of its config dataclass)'
BIG = 1.0e6

# name: (description, range or None). Scores are in the units of LocalizationConfig's docstring.
FIELD_TABLE: dict[str, tuple[str, tuple[float, float] | None]] = {
    'localization.search.mode': ('map search: rerank (binary then float), binary, float or '
                                 'auto (what the map holds)', None),
    'localization.search.top_k': ('hits of a plain map search (vpr query); the node uses '
                                  'top_k', (1, 10000)),
    'localization.search.rerank_k': ('binary hits re-ranked with the float descriptor (0: '
                                     'a depth from the map size and code length)',
                                     (0, 1000000)),
    'localization.search.index': ('flat (exact), hnsw / ivf (approximate, binary) or auto '
                                  '(ivf from approximate_from places)', None),
    'localization.search.approximate_from': ('map size from which index auto goes '
                                             'approximate', (1, 10**12)),
    'localization.search.hnsw_m': ('HNSW links per node', (2, 1024)),
    'localization.search.hnsw_ef_search': ('HNSW search breadth', (1, 100000)),
    'localization.search.hnsw_ef_construction': ('HNSW build breadth', (1, 100000)),
    'localization.search.ivf_nlist': ('IVF lists (0: min(4 sqrt(N), 1024))', (0, 1000000)),
    'localization.search.ivf_nprobe': ('IVF lists visited per query', (1, 1000000)),
    'localization.search.backend': ('search library: faiss or numpy', None),
    'localization.search.device': ('faiss device: auto (CUDA faiss when present), cpu, cuda',
                                   None),
    'localization.sequence.length': ('window steps in the sequence score (1: single frame)',
                                     (1, 500)),
    'localization.sequence.velocities': ('map places advanced per nominal frame period '
                                         '(several: speed-tolerant)', None),
    'localization.sequence.contrast_window': ('places in the local contrast normalisation '
                                              '(0/1: off)', (0, 10000)),
    'localization.sequence.candidates': ('single-frame hits extended to sequences',
                                         (1, 10000)),
    'localization.sequence.min_travel_m': ('odometry travel per window step (0: the keyframe '
                                           'spacing)', (0.0, 10000.0)),
    'localization.sequence.hubness_k': ('online hubness reduction: charge every place its k '
                                        'nearest frames so far (0: off)', (0, 1000)),
    'localization.sequence.frame_period_s': ('nominal time between frames (0: a low quantile '
                                             'of the recent stamp spacing)', (0.0, 3600.0)),
    'localization.sequence.gap_factor': ('a stamp spacing above this many frame periods that '
                                         'odometry does not measure is a gap: a match then '
                                         'needs gate.min_frames frames after it',
                                         (1.0001, 1000.0)),
    'localization.sequence.gap_reset_factor': ('a gap longer than this many frame periods '
                                               'restarts the window (>= gap_factor)',
                                               (1.0001, 1.0e5)),
    'localization.gate.min_score': ('least sequence score of an accepted match',
                                    (-100.0, 100.0)),
    'localization.gate.min_frame_score': ("least score of the newest frame's own similarity "
                                          'at the matched place', (-100.0, 100.0)),
    'localization.gate.min_margin': ('least lead of the match over the best other place',
                                     (0.0, 100.0)),
    'localization.gate.same_place_radius_m': ('candidates nearer than this count as the same '
                                              'place (0: twice the keyframe spacing)',
                                              (0.0, 10000.0)),
    'localization.gate.min_frames': ('window steps needed before any match is accepted',
                                     (0, 1000)),
    'localization.gate.min_agreement': ('consecutive matches that must follow each other',
                                        (0, 100)),
    'localization.gate.agreement_tolerance': ('places two consecutive matches may differ by',
                                              (0, 1000)),
    'localization.gate.odometry_tolerance_m': ('allowed difference between map travel and '
                                               'odometry travel (0: off)', (0.0, 10000.0)),
    'localization.gate.odometry_tolerance_ratio': ('extra allowed difference per metre '
                                                   'travelled', (0.0, 10.0)),
    'localization.prior.floor_spacing_factor': ('position sigma floor as a multiple of the '
                                                'keyframe spacing', (0.0, 100.0)),
    'localization.prior.min_sigma_m': ('least position sigma (m)', (0.001, 1000.0)),
    'localization.prior.step_sigma': ('along-track sigma per place travelled since the '
                                      'previous frame, in keyframe spacings', (0.0, 100.0)),
    'localization.prior.yaw_floor_deg': ('least yaw sigma (deg)', (0.0, 180.0)),
    'localization.prior.rotation_floor_deg': ('roll/pitch sigma on non-planar maps (deg)',
                                              (0.0, 180.0)),
    'localization.prior.unobserved_variance': ('variance of axes the map does not observe',
                                               (1.0, BIG)),
    'localization.prior.min_variance': ('every variance is at least this', (1.0e-12, 1.0)),
    'localization.prior.max_variance': ('every variance is at most this (Nav2 rejects 1e9)',
                                        (1.0, 1.0e8)),
    'localization.prior.calibration': ('score-to-error calibration JSON (vpr bag-eval '
                                       '--fit-calibration); empty = none', None),
    'localization.confidence_temperature': ('softmax temperature of the confidence',
                                            (0.001, 100.0)),
    'teach.enabled': ('keyframe selection on (false: every frame with a pose is kept)', None),
    'teach.min_distance_m': ('travel between keyframes (0: off)', (0.0, 10000.0)),
    'teach.min_heading_deg': ('heading change between keyframes (0: off)', (0.0, 360.0)),
    'teach.max_interval_s': ('keyframe at least this often, even parked (0: off)',
                             (0.0, BIG)),
    'teach.min_interval_s': ('never two keyframes closer in time (0: off)', (0.0, BIG)),
    'loops.min_time_gap_s': ('keyframes of this session younger than this are never loop '
                             'candidates', (0.0, BIG)),
    'loops.min_travel_gap_m': ('... nor those closer along the travelled path (odometry)',
                               (0.0, BIG)),
    'loops.top_k': ('candidates searched per keyframe', (1, 1000)),
    'loops.min_score': ('least descriptor cosine similarity of a candidate to be verified '
                        '(a floor: geometry decides)', (-1.0, 1.0)),
    'loops.unverified_min_score': ('least similarity of a loop accepted without geometry '
                                   '(verification stepped aside)', (-1.0, 1.0)),
    'loops.rerank_k': ('Hamming candidates re-ranked by the floats (0: automatic)',
                       (0, 1000000)),
    'loops.consistency': ('consecutive keyframes whose candidates agree before a loop',
                          (1, 1000)),
    'loops.consistency_window': ('keyframes two agreeing candidates may be apart', (0, 1000)),
    'loops.unverified_consistency': ('the longer agreement needed when verification steps '
                                     'aside (small images, features none)', (1, 1000)),
    'loops.max_verifications': ('consistent candidates verified per keyframe, best first',
                                (1, 100)),
    'loops.evidence_inliers': ('inliers that make a loop at once; fewer need the previous '
                               "keyframe's verified neighbour, the two summing to this",
                               (0, 100000)),
    'loops.verify.features': ('local features for geometric verification: orb, sift or none '
                              '(off)', None),
    'loops.verify.max_features': ('keypoints kept per image', (8, 100000)),
    'loops.verify.ratio_test': ("Lowe's ratio of best to second-best match distance",
                                (0.01, 1.0)),
    'loops.verify.min_inliers': ('geometric inliers needed to accept a loop', (6, 100000)),
    'loops.verify.min_inlier_ratio': ('inliers / matches needed to accept a loop', (0.0, 1.0)),
    'loops.verify.min_image_side': ('images with a shorter side are not verified '
                                    '(too_small)', (16, 100000)),
    'loops.verify.ransac_threshold_px': ('RANSAC inlier threshold (pixels)', (0.01, 100.0)),
    'loops.keyframes.enabled': ('keyframe selection on (false: every frame is a keyframe)',
                                None),
    'loops.keyframes.min_distance_m': ('travel between keyframes (odometry; 0: off)',
                                       (0.0, 10000.0)),
    'loops.keyframes.min_heading_deg': ('heading change between keyframes (odometry; 0: off)',
                                        (0.0, 360.0)),
    'loops.keyframes.max_interval_s': ('keyframe at least this often, even parked (0: off)',
                                       (0.0, BIG)),
    'loops.keyframes.min_interval_s': ('never two keyframes closer in time (0: off; also '
                                       'the rate limit without odometry)', (0.0, BIG)),
}


def leaf_fields(config: type, prefix: str) -> Iterator[tuple[str, Any, Any]]:
    """(dotted name, type hint, default) of every non-dataclass field under ``config``."""
    hints = typing.get_type_hints(config)
    instance = config()
    for item in fields(config):
        name, hint = f'{prefix}.{item.name}', hints[item.name]
        if is_dataclass(hint):
            yield from leaf_fields(hint, name)
        else:
            yield name, hint, getattr(instance, item.name)


def engine_specs() -> tuple[ParameterSpec, ...]:
    """One spec per vpr_core config field (except :data:`NODE_LEVEL`), in field order."""
    specs = []
    for section, config in SECTIONS.items():
        for name, hint, default in leaf_fields(config, section):
            if name in NODE_LEVEL or not is_ros_value(ros_value(default)):
                continue
            description, limits = FIELD_TABLE.get(name, (GENERIC_DESCRIPTION, None))
            choices = typing.get_args(hint) if typing.get_origin(hint) is Literal else ()
            applies = 'configure' if name.startswith(CONFIGURE_TIME) else 'runtime'
            specs.append(ParameterSpec(name, ros_value(default), description, applies,
                                       limits, tuple(choices)))
    return tuple(specs)


def unexposed() -> list[str]:
    """Config fields that cannot be ROS parameters (a default of None, an empty or mixed
    tuple, a mapping): not declared, and a test keeps this list empty."""
    return [name for section, config in SECTIONS.items()
            for name, _, default in leaf_fields(config, section)
            if name not in NODE_LEVEL and not is_ros_value(ros_value(default))]


def is_ros_value(value: Any) -> bool:
    """True for a bool, int, float or str, or a non-empty list of one of them."""
    scalars = (bool, int, float, str)
    if isinstance(value, list):
        return bool(value) and len({type(v) for v in value}) == 1 and \
            isinstance(value[0], scalars)
    return isinstance(value, scalars)


def undocumented() -> list[str]:
    """Generated parameters without a :data:`FIELD_TABLE` entry (generic description)."""
    return [spec.name for spec in engine_specs() if spec.name not in FIELD_TABLE]


def ros_value(value: Any) -> Any:
    """A config value as a ROS parameter value (tuples become lists)."""
    return [ros_value(v) for v in value] if isinstance(value, (tuple, list)) else value


def replace_path(config: Any, path: str, value: Any, where: str = '') -> Any:
    """``config`` (a frozen dataclass) with the field at dotted ``path`` set to ``value``,
    typed by vpr_core's own coercion (lists become tuples, ints floats where declared).

    Raises ConfigError for an unknown name (naming the closest) or a value of the wrong type.
    """
    head, _, rest = path.partition('.')
    names = {item.name for item in fields(config)}
    if head not in names or not rest:     # an unknown name: from_dict names the closest
        if isinstance(value, (tuple, list, array.array)):   # rclpy gives array.array
            value = list(value)
        typed = getattr(from_dict(type(config), {head: value}, where=where), head)
        return replace(config, **{head: typed})
    child = getattr(config, head)
    if not is_dataclass(child):
        raise ConfigError(f"'{where + '.' if where else ''}{head}' is a value, not a section "
                          f"(in '{path}')")
    inner = f'{where}.{head}' if where else head
    return replace(config, **{head: replace_path(child, rest, value, inner)})


def loop_config(values: Mapping[str, Any], base: LoopConfig | None = None) -> LoopConfig:
    """``base`` (default: the defaults) with ``values`` ({'verify.min_inliers': 30, ...}:
    names relative to LoopConfig) applied one field at a time, typed; ConfigError for an
    unknown name or a value LoopConfig refuses."""
    config = base if base is not None else LoopConfig()
    for path, value in values.items():
        config = replace_path(config, path, value, 'loops')
    return config


def engine_config(values: Mapping[str, Any],
                  base: LocalizationConfig | None = None) -> LocalizationConfig:
    """``base`` (default: the defaults) with ``values`` ({'gate.min_score': 1.2, 'top_k': 5,
    ...}: names relative to LocalizationConfig) applied one field at a time, typed."""
    config = base if base is not None else LocalizationConfig()
    for path, value in values.items():
        config = replace_path(config, path, value)
    return config
