"""The node's parameters: one table of specs, declared with descriptions and ranges.

Read-only parameters need a lifecycle cleanup/configure (or a restart) to change; the others
(thresholds, ``top_k``, rate, outputs) are validated and applied at run time. Parameters under
``localization.`` and ``teach.`` are ``key.path=value`` overrides of the vpr_core config.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.node import Node
from rclpy.parameter import Parameter

from vpr_core.config import apply_overrides, from_dict, to_dict
from vpr_core.errors import ConfigError
from vpr_core.image import DEFAULT_MAX_IMAGE_PIXELS
from vpr_core.localization.config import LocalizationConfig


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter: default (its type too), description, range (inclusive) or choices."""

    name: str
    default: Any
    description: str
    read_only: bool = True
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()


PARAMETERS = (
    ParameterSpec('autostart', True, 'configure and activate at start-up'),
    ParameterSpec('mode', 'localize', 'localize against map_dir, or teach: record a new map '
                  'into map_dir from images and pose_topic', choices=('localize', 'teach')),
    ParameterSpec('weights', '', 'model checkpoint (.safetensors); empty = bundled model'),
    ParameterSpec('map_dir', '', 'map directory (made by vpr build-map, or by teach mode)'),
    ParameterSpec('device', 'auto', 'auto (CUDA when present), cpu, cuda or cuda:N'),
    ParameterSpec('image_topics', ['image'], 'camera topics (relative names remap in launch); '
                  'compressed transport appends /compressed'),
    ParameterSpec('input_transport', 'raw', 'raw: sensor_msgs/Image; compressed: '
                  'sensor_msgs/CompressedImage (jpeg/png)', choices=('raw', 'compressed')),
    ParameterSpec('max_image_pixels', DEFAULT_MAX_IMAGE_PIXELS, 'largest image accepted, width '
                  'x height; a larger frame is refused from its header (raw fields, JPEG SOF, '
                  'PNG IHDR) before it is decoded, and counted as rejected.too_large',
                  range=(1, 2**40)),
    ParameterSpec('pose_topic', '', 'odometry or pose of base_frame (teach: keyframe poses; '
                  'localize: motion for the temporal filter); empty = none'),
    ParameterSpec('pose_type', 'odometry', 'message type on pose_topic',
                  choices=('odometry', 'pose', 'pose_with_covariance')),
    ParameterSpec('map_frame', 'map', 'frame_id of every output'),
    ParameterSpec('base_frame', 'base_link', 'robot frame whose pose the prior gives (names '
                  'the convention: PoseWithCovarianceStamped carries no child frame)'),
    ParameterSpec('prior_frame_id', '', 'frame_id of ~/pose_prior only (empty = map_frame); '
                  'rtabmap global_pose wants the posed frame, e.g. base_link'),
    ParameterSpec('camera_to_base', [0.0] * 6, 'camera pose in base_frame: x y z (m) roll '
                  'pitch yaw (rad); 6 numbers for all cameras or 6 per camera'),
    ParameterSpec('top_k', 5, 'candidates published per query', read_only=False,
                  range=(1, 100)),
    ParameterSpec('max_rate_hz', 0.0, 'most frames processed per second (0 = no limit)',
                  read_only=False, range=(0.0, 1000.0)),
    ParameterSpec('continuous', True, 'localize every frame; false = after each '
                  '~/relocalize, until one match is accepted', read_only=False),
    ParameterSpec('publish_markers', True, 'publish ~/markers', read_only=False),
    ParameterSpec('marker_scale_m', 1.0, 'marker size in metres', read_only=False,
                  range=(0.01, 100.0)),
    ParameterSpec('diagnostics_period_s', 1.0, '/diagnostics period', range=(0.1, 60.0)),
    # vpr_core LocalizationConfig (thresholds: runtime; scores in the units of its docstring)
    ParameterSpec('localization.gate.min_score', 1.0, 'least sequence score of an accepted '
                  'match', read_only=False, range=(-100.0, 100.0)),
    ParameterSpec('localization.gate.min_margin', 0.1, 'least lead of the match over the best '
                  'other place', read_only=False, range=(0.0, 100.0)),
    ParameterSpec('localization.gate.min_frames', 3, 'frames needed before any match is '
                  'accepted', read_only=False, range=(0, 1000)),
    ParameterSpec('localization.gate.min_agreement', 2, 'consecutive matches that must follow '
                  'each other', read_only=False, range=(0, 100)),
    ParameterSpec('localization.gate.agreement_tolerance', 2, 'places two consecutive matches '
                  'may differ by', read_only=False, range=(0, 1000)),
    ParameterSpec('localization.gate.same_place_radius_m', 0.0, 'candidates nearer than this '
                  'count as the same place (0: twice the keyframe spacing)', read_only=False,
                  range=(0.0, 10000.0)),
    ParameterSpec('localization.gate.odometry_tolerance_m', 0.0, 'allowed difference between '
                  'map travel and odometry travel (0: off)', read_only=False,
                  range=(0.0, 10000.0)),
    ParameterSpec('localization.gate.odometry_tolerance_ratio', 0.2, 'extra allowed difference '
                  'per metre travelled', read_only=False, range=(0.0, 10.0)),
    ParameterSpec('localization.sequence.length', 10, 'frames in the sequence window (1: '
                  'single frame)', read_only=False, range=(1, 500)),
    ParameterSpec('localization.sequence.contrast_window', 20, 'places in the local contrast '
                  'normalisation (0/1: off)', read_only=False, range=(0, 10000)),
    ParameterSpec('localization.sequence.candidates', 20, 'single-frame hits extended to '
                  'sequences', read_only=False, range=(1, 10000)),
    ParameterSpec('localization.sequence.min_travel_m', 0.0, 'odometry travel per window step '
                  '(0: the keyframe spacing)', read_only=False, range=(0.0, 10000.0)),
    ParameterSpec('localization.sequence.hubness_k', 0, 'online hubness reduction: charge '
                  'every place its k nearest frames so far (0: off)', read_only=False,
                  range=(0, 1000)),
    ParameterSpec('localization.confidence_temperature', 0.25, 'softmax temperature of the '
                  'confidence', read_only=False, range=(0.001, 100.0)),
    ParameterSpec('localization.prior.floor_spacing_factor', 0.5, 'position sigma floor as a '
                  'multiple of the keyframe spacing', read_only=False, range=(0.0, 100.0)),
    ParameterSpec('localization.prior.min_sigma_m', 0.1, 'least position sigma (m)',
                  read_only=False, range=(0.001, 1000.0)),
    ParameterSpec('localization.prior.yaw_floor_deg', 10.0, 'least yaw sigma (deg)',
                  read_only=False, range=(0.0, 180.0)),
    ParameterSpec('localization.prior.unobserved_variance', 1.0e4, 'variance of axes the map '
                  'does not observe', read_only=False, range=(1.0, 1.0e6)),
    ParameterSpec('localization.prior.calibration', '', 'score-to-error calibration JSON '
                  '(from the evaluation tools); empty = none'),
    ParameterSpec('localization.search.mode', 'auto', 'map search: rerank (binary then float), '
                  'binary, float or auto', choices=('auto', 'rerank', 'binary', 'float')),
    # teach mode keyframing (vpr_core KeyframeConfig)
    ParameterSpec('teach.min_distance_m', 1.0, 'travel between keyframes (0: off)',
                  range=(0.0, 10000.0)),
    ParameterSpec('teach.min_heading_deg', 15.0, 'heading change between keyframes (0: off)',
                  range=(0.0, 360.0)),
    ParameterSpec('teach.max_interval_s', 0.0, 'keyframe at least this often, even parked '
                  '(0: off)', range=(0.0, 1.0e6)),
    ParameterSpec('teach.min_interval_s', 0.0, 'never two keyframes closer in time',
                  range=(0.0, 1.0e6)),
)
SPECS = {spec.name: spec for spec in PARAMETERS}
LOCALIZATION_PREFIX = 'localization.'
TEACH_PREFIX = 'teach.'


def descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    """The ROS descriptor of ``spec`` (description, read-only flag, range, choices)."""
    text = spec.description
    if spec.choices:
        text += f" (one of: {', '.join(spec.choices)})"
    result = ParameterDescriptor(description=text, read_only=spec.read_only)
    if spec.choices:
        result.additional_constraints = f"one of: {', '.join(spec.choices)}"
    if spec.range is not None and isinstance(spec.default, bool):
        raise TypeError(f'parameter {spec.name}: a range needs a number default')
    if spec.range is not None and isinstance(spec.default, int):
        result.integer_range = [IntegerRange(from_value=int(spec.range[0]),
                                             to_value=int(spec.range[1]), step=1)]
    elif spec.range is not None:
        result.floating_point_range = [FloatingPointRange(
            from_value=float(spec.range[0]), to_value=float(spec.range[1]), step=0.0)]
    return result


def declare_parameters(node: Node, specs: tuple[ParameterSpec, ...] = PARAMETERS) -> None:
    """Declare every spec on ``node`` (values from --params-file / overrides win)."""
    for spec in specs:
        node.declare_parameter(spec.name, spec.default, descriptor(spec))


def validate(parameters: list[Parameter], current: dict[str, Any] | None = None
             ) -> SetParametersResult:
    """Refuse values outside a spec's choices, and engine values (``localization.*``,
    ``top_k``) that do not make a valid vpr_core config together with ``current`` values.
    Ranges and types are checked by rclpy."""
    for parameter in parameters:
        spec = SPECS.get(parameter.name)
        if spec is not None and spec.choices and parameter.value not in spec.choices:
            return SetParametersResult(
                successful=False,
                reason=f"{parameter.name}={parameter.value!r} is not one of "
                       f"{', '.join(spec.choices)}")
    engine = {p.name: p.value for p in parameters
              if p.name.startswith(LOCALIZATION_PREFIX) or p.name == 'top_k'}
    if engine:
        values = {**(current or {}), **engine}
        try:
            localization_config({**section(values, LOCALIZATION_PREFIX),
                                 'top_k': values.get('top_k', SPECS['top_k'].default)})
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
    return SetParametersResult(successful=True)


def localization_config(values: dict[str, Any],
                        base: LocalizationConfig = LocalizationConfig()) -> LocalizationConfig:
    """``base`` with ``values`` ({'gate.min_score': 1.2, 'top_k': 5, ...}) applied.

    Raises ConfigError (naming the closest key) for a name LocalizationConfig does not have.
    """
    overrides = [f'{name}={_yaml_value(value)}' for name, value in values.items()]
    return from_dict(LocalizationConfig, apply_overrides(to_dict(base), overrides))


def _yaml_value(value: Any) -> str:
    if isinstance(value, str):
        return "''" if not value else value
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return repr(list(value)) if isinstance(value, (list, tuple)) else repr(value)


def section(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Remove the ``prefix``ed entries of ``values``; returns them without the prefix."""
    return {name[len(prefix):]: values.pop(name) for name in list(values)
            if name.startswith(prefix)}


def read_values(node: Node, specs: tuple[ParameterSpec, ...] = PARAMETERS) -> dict[str, Any]:
    """Current value of every spec, as plain Python values (arrays become lists)."""
    values = {}
    for spec in specs:
        value = node.get_parameter(spec.name).value
        values[spec.name] = list(value) if isinstance(spec.default, list) else value
    return values


@dataclass(frozen=True)
class NodeSettings:
    """The parameter values a configure transition uses (a snapshot, never the live node)."""

    mode: str
    weights: str
    map_dir: str
    device: str
    image_topics: tuple[str, ...]
    input_transport: str
    max_image_pixels: int
    pose_topic: str
    pose_type: str
    map_frame: str
    base_frame: str
    prior_frame_id: str
    camera_to_base: tuple[float, ...]
    top_k: int
    max_rate_hz: float
    continuous: bool
    publish_markers: bool
    marker_scale_m: float
    diagnostics_period_s: float
    localization: dict[str, Any]
    teach: dict[str, Any]

    @classmethod
    def from_node(cls, node: Node) -> 'NodeSettings':
        """Read every parameter of ``node``; ConfigError when values do not fit together."""
        values = read_values(node)
        values.pop('autostart')
        values['localization'] = section(values, LOCALIZATION_PREFIX)
        values['localization']['top_k'] = values['top_k']
        values['teach'] = section(values, TEACH_PREFIX)
        values['image_topics'] = tuple(values['image_topics'])
        values['camera_to_base'] = tuple(float(v) for v in values['camera_to_base'])
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-parameter checks (ranges and choices are enforced on declaration)."""
        if not self.image_topics or not all(self.image_topics):
            raise ConfigError('image_topics must list at least one non-empty topic name')
        if len(self.camera_to_base) not in (6, 6 * len(self.image_topics)):
            raise ConfigError(
                f'camera_to_base needs 6 numbers (x y z roll pitch yaw) or 6 per camera '
                f'({6 * len(self.image_topics)} for {len(self.image_topics)} cameras), got '
                f'{len(self.camera_to_base)}')
        if self.mode == 'teach' and not (self.map_dir and self.pose_topic):
            raise ConfigError('mode teach needs map_dir (the new map) and pose_topic')
        if self.mode == 'localize' and not self.map_dir:
            raise ConfigError('mode localize needs map_dir (a map made by vpr build-map or '
                              'by teach mode)')

    def topic(self, camera: int) -> str:
        """Subscription topic of camera ``camera`` for the chosen transport."""
        base = self.image_topics[camera]
        return f'{base}/compressed' if self.input_transport == 'compressed' else base

    def extrinsic(self, camera: int) -> tuple[float, ...]:
        """(x, y, z, roll, pitch, yaw) of camera ``camera`` in base_frame."""
        start = 0 if len(self.camera_to_base) == 6 else 6 * camera
        return self.camera_to_base[start:start + 6]
