"""The node's parameters: node-level specs here, engine specs generated from vpr_core.

Every parameter says when a change applies (:data:`~vpr_ros.parameter_specs.APPLIES_TEXT`):
``runtime`` ones (thresholds, ``top_k``, rate, outputs) are validated and applied while the
node runs; ``configure`` ones (model, map, topics, frames, search, teach keyframing) can be
set while the node is unconfigured and take effect at the next configure (``ros2 lifecycle
set /vpr_node deactivate``, ``cleanup``, ``ros2 param set ...``, ``configure``, ``activate``);
``startup`` ones (``autostart``, ``diagnostics_period_s``) are read-only. ``localization.*``,
``teach.*`` and ``loops.*`` (SLAM mode) are generated from the vpr_core dataclasses
(:mod:`vpr_ros.parameter_specs`).
"""
from __future__ import annotations

import array
from dataclasses import dataclass
import textwrap
from typing import Any, Mapping

import numpy as np
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.node import Node
from rclpy.parameter import Parameter

from vpr_core.backends import BACKEND_HELP, BACKENDS, DEFAULT_BACKEND
from vpr_core.errors import ConfigError
from vpr_core.image import DEFAULT_MAX_IMAGE_PIXELS
from vpr_core.localization import LocalizationConfig, SequenceTracker
from vpr_core.loops import LoopConfig
from vpr_ros.parameter_specs import (APPLIES_TEXT, engine_config, engine_specs, loop_config,
                                     ParameterSpec)

NODE_PARAMETERS = (
    ParameterSpec('autostart', True, 'configure and activate at start-up', 'startup'),
    ParameterSpec('mode', 'localize', 'localize against map_dir; teach: record a new map '
                  'into map_dir from images and pose_topic; slam: detect geometrically '
                  'verified loop closures within this session (and against the map at map_dir '
                  'if there is one, saved there again by ~/save_map and at shutdown)',
                  choices=('localize', 'teach', 'slam')),
    ParameterSpec('weights', '', 'model checkpoint (.safetensors); empty = bundled model'),
    ParameterSpec('map_dir', '', 'map directory (made by vpr build-map, or by teach mode)'),
    ParameterSpec('device', 'auto', 'auto (CUDA when present), cpu, cuda or cuda:N'),
    ParameterSpec('backend', DEFAULT_BACKEND, BACKEND_HELP, choices=BACKENDS),
    ParameterSpec('threads', 0, 'CPU threads per worker for torch, onnxruntime, faiss and '
                  'OpenCV (0: 1 on hosts with 2 cores or fewer, else cores / workers)',
                  range=(0, 256)),
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
    ParameterSpec('camera_info_topic', '', 'slam: sensor_msgs/CameraInfo of the camera (empty '
                  '= camera_info beside the resolved image topic); none received: the '
                  'intrinsics are guessed (60 degrees horizontal field of view)'),
    ParameterSpec('depth_topic', '', 'slam: depth image registered to the colour image '
                  '(16UC1 mm or 32FC1 m) for metric relative poses; empty = none'),
    ParameterSpec('depth_tolerance_s', 0.02, 'slam: largest stamp difference between a colour '
                  'frame and the depth image used with it', range=(0.0, 10.0)),
    ParameterSpec('top_k', LocalizationConfig().top_k, 'candidates published per query (also '
                  'LocalizationConfig.top_k)', 'runtime', range=(1, 100)),
    ParameterSpec('max_rate_hz', 0.0, 'most frames processed per second (0 = no limit)',
                  'runtime', range=(0.0, 1000.0)),
    ParameterSpec('continuous', True, 'localize every frame; false = after each '
                  '~/relocalize, until one match is accepted', 'runtime'),
    ParameterSpec('publish_markers', True, 'publish ~/markers', 'runtime'),
    ParameterSpec('marker_scale_m', 1.0, 'marker size in metres', 'runtime',
                  range=(0.01, 100.0)),
    ParameterSpec('diagnostics_period_s', 1.0, '/diagnostics period', 'startup',
                  range=(0.1, 60.0)),
)
PARAMETERS = NODE_PARAMETERS + engine_specs()
SPECS = {spec.name: spec for spec in PARAMETERS}
LOCALIZATION_PREFIX = 'localization.'
TEACH_PREFIX = 'teach.'
LOOPS_PREFIX = 'loops.'


def descriptor(spec: ParameterSpec) -> ParameterDescriptor:
    """The ROS descriptor of ``spec`` (description, read-only flag, range, choices)."""
    text = spec.description
    if spec.choices:
        text += f" (one of: {', '.join(spec.choices)})"
    text += f' [{APPLIES_TEXT[spec.applies]}]'
    result = ParameterDescriptor(description=text, read_only=spec.applies == 'startup')
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


def validate(parameters: list[Parameter], current: Mapping[str, Any] | None = None, *,
             configurable: bool = True) -> SetParametersResult:
    """Refuse a change of a ``configure`` parameter unless ``configurable`` (the node is
    unconfigured; setting its current value is no change), values outside a spec's choices,
    and engine values (``localization.*``, ``top_k``) that do not make a valid vpr_core config
    together with the ``current`` values. Ranges, types and read-only flags are checked by
    rclpy."""
    current = current or {}
    for parameter in parameters:
        spec = SPECS.get(parameter.name)
        if spec is None:
            continue
        if spec.applies == 'configure' and not configurable and \
                plain(parameter.value) != current.get(parameter.name):
            return SetParametersResult(
                successful=False,
                reason=f'{parameter.name} applies at configure: set it while the node is '
                       f'unconfigured (deactivate, cleanup, set, configure, activate)')
        if spec.choices and parameter.value not in spec.choices:
            return SetParametersResult(
                successful=False,
                reason=f"{parameter.name}={parameter.value!r} is not one of "
                       f"{', '.join(spec.choices)}")
    changed = {p.name: p.value for p in parameters}
    if any(name.startswith(LOCALIZATION_PREFIX) or name == 'top_k' for name in changed):
        try:
            check_engine(engine_config(engine_values({**current, **changed})))
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
    if any(name.startswith(LOOPS_PREFIX) for name in changed):
        try:
            loop_config(loop_values({**current, **changed}))
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
    return SetParametersResult(successful=True)


def loop_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``loops.*`` entries of ``values`` relative to LoopConfig."""
    return {name[len(LOOPS_PREFIX):]: plain(value) for name, value in values.items()
            if name.startswith(LOOPS_PREFIX)}


def engine_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``localization.*`` entries of ``values`` relative to LocalizationConfig, plus
    ``top_k`` (the node's top_k is LocalizationConfig.top_k)."""
    engine = {name[len(LOCALIZATION_PREFIX):]: value for name, value in values.items()
              if name.startswith(LOCALIZATION_PREFIX)}
    if 'top_k' in values:
        engine['top_k'] = values['top_k']
    return engine


def check_engine(config: LocalizationConfig) -> None:
    """The cross-field checks vpr_core makes when it builds the localizer (a dry run over a
    one-place map), so a value accepted here cannot fail later on the worker thread."""
    SequenceTracker(np.zeros((1, 1), dtype=np.float32), None, 0, config.sequence)


def localization_config(values: Mapping[str, Any],
                        base: LocalizationConfig | None = None) -> LocalizationConfig:
    """``base`` with ``values`` ({'gate.min_score': 1.2, 'top_k': 5, ...}) applied, typed.

    Raises ConfigError (naming the closest key) for a name LocalizationConfig does not have.
    """
    return engine_config(values, base)


def section(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Remove the ``prefix``ed entries of ``values``; returns them without the prefix."""
    return {name[len(prefix):]: values.pop(name) for name in list(values)
            if name.startswith(prefix)}


def plain(value: Any) -> Any:
    """A parameter value as plain Python (rclpy gives arrays as array.array)."""
    return list(value) if isinstance(value, (array.array, tuple)) else value


def read_values(node: Node, specs: tuple[ParameterSpec, ...] = PARAMETERS) -> dict[str, Any]:
    """Current value of every spec, as plain Python values (arrays become lists)."""
    values = {}
    for spec in specs:
        value = node.get_parameter(spec.name).value
        values[spec.name] = list(value) if isinstance(spec.default, list) else plain(value)
    return values


@dataclass(frozen=True)
class NodeSettings:
    """The parameter values a configure transition uses (a snapshot, never the live node)."""

    mode: str
    weights: str
    map_dir: str
    device: str
    backend: str
    threads: int
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
    camera_info_topic: str
    depth_topic: str
    depth_tolerance_s: float
    localization: LocalizationConfig
    teach: dict[str, Any]
    loops: LoopConfig

    @classmethod
    def from_node(cls, node: Node) -> 'NodeSettings':
        """Read every parameter of ``node``; ConfigError when values do not fit together."""
        values = read_values(node)
        values.pop('autostart')
        values['localization'] = engine_config(engine_values(values))
        check_engine(values['localization'])
        section(values, LOCALIZATION_PREFIX)
        values['teach'] = section(values, TEACH_PREFIX)
        values['loops'] = loop_config(section(values, LOOPS_PREFIX))
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
        if self.mode == 'slam' and len(self.image_topics) != 1:
            raise ConfigError(f'mode slam takes one camera (image_topics has '
                              f'{len(self.image_topics)}): run one node per camera')
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


def help_text(width: int = 99) -> str:
    """``vpr_node --help``: usage and every parameter with type, default, when it applies,
    range or choices, and description (generated from :data:`PARAMETERS`)."""
    lines = ['usage: vpr_node [--help] [--ros-args -p NAME:=VALUE ... --params-file FILE]', '',
             'Lifecycle node: camera frames in, ranked map places and a pose prior out',
             '(mode slam: verified loop closures of this session out).',
             'Parameters (runtime: changes apply at once; configure: settable while the node',
             'is unconfigured, applied at configure; startup: read-only):', '']
    for spec in PARAMETERS:
        limits = (f", one of: {', '.join(spec.choices)}" if spec.choices else
                  f', range {spec.range[0]!r}..{spec.range[1]!r}' if spec.range else '')
        lines.append(f'  {spec.name} ({_type_name(spec.default)}, default '
                     f'{spec.default!r}, {spec.applies}{limits})')
        lines += textwrap.wrap(spec.description, width, initial_indent=' ' * 6,
                               subsequent_indent=' ' * 6)
    return '\n'.join(lines) + '\n'


def _type_name(value: Any) -> str:
    if isinstance(value, list):
        return f'{_type_name(value[0]) if value else "string"} array'
    return {bool: 'bool', int: 'integer', float: 'double', str: 'string'}[type(value)]
