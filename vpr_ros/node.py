"""``vpr_node``: a lifecycle node, camera frames in, place matches and a pose prior out.

configure loads the model and the map (one vpr_core call), activate subscribes and starts the
worker thread, deactivate unsubscribes, cleanup frees the model and the map. Subscription
callbacks only store the newest frame; the worker decodes, runs the one vpr_core ``process``
call and publishes, so the executor never waits for inference.

A frame can fail; localization must not. Every per-frame failure is caught in the worker and
the next frame is served: a frame that cannot be decoded (bad encoding, corrupt payload, more
than ``max_image_pixels``: refused from its header before any allocation) is counted as
``rejected.<reason>``; any other exception (an engine bug, an OpenCV error, a publisher
failure) as ``frame_errors.<ExceptionClass>`` and logged with its traceback (throttled).
/diagnostics WARNs while the last frame failed and is OK again with the next answered one.

Should the worker thread stop anyway (a BaseException, a bug in the loop itself), it is not
silent: /diagnostics goes to ERROR at once (``worker_restarts`` counts it) and stays there
until a frame is served again, and the worker is restarted so a transient fault costs one
frame. A fault that persists (MAX_WORKER_RESTARTS restarts with no frame served in between)
is a node failure: the node leaves ``active`` through the lifecycle's ErrorProcessing state
(``~/transition_event`` shows it to a lifecycle manager), frees the model and the map and
lands in ``unconfigured``, from where configure + activate start it afresh. rcl has no
transition from Active into ErrorProcessing, so the node takes the deactivate transition and
reports it failed (ERROR), which rcl routes through ErrorProcessing.

Input health: /diagnostics compares the frames received with those expected from the header
stamps of each camera (``input_loss_ratio``, ``input_gaps``, ``input_lost``; WARN over 20%),
apart from the frames the busy worker skipped (``dropped``), and counts stamps that jump
back (``clock_jumps_back``) and the engine's result events (``events.<name>``).

``mode: slam`` runs vpr_core's loop detector on the frames instead (:mod:`vpr_ros.slam`): the
node also subscribes to the camera's ``camera_info`` (the newest is cached) and an optional
registered depth image, and publishes only for accepted loops: ``~/loop_closure``
``[t_cur, t_prev]``, ``~/loop_constraint``, ``~/candidates_cloud`` and the loop edges on
``~/markers`` (docs/loop_closure.md). ``~/save_map`` (and shutdown) saves the session map.
"""
from __future__ import annotations

from functools import partial
import sys
import threading
import time
import traceback
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
import rclpy
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CompressedImage, Image
from std_srvs.srv import SetBool, Trigger

from vpr_core.errors import UnsupportedImageError, VPRError
from vpr_ros.conversions import image_to_rgb, rejection_reason, stamp_ns, stamp_seconds
from vpr_ros.diagnostics import diagnostic_array, error_kind, NodeStatistics, node_status
from vpr_ros.outputs import OutputPublishers
from vpr_ros.parameters import declare_parameters, help_text, NodeSettings, plain, SPECS, validate
from vpr_ros.pipeline import load_pipeline, Pipeline, PipelineFactory
from vpr_ros.pose_history import POSE_TYPES, PoseHistory
from vpr_ros.result import result_arrays
from vpr_ros.slam_inputs import subscribe_slam_inputs
from vpr_ros.worker import Frame, LatestFrameSlot, SupervisedWorker

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
ERROR = TransitionCallbackReturn.ERROR
MAX_WORKER_RESTARTS = 3
ACTIVITY = {'localize': 'localizing', 'teach': 'recording keyframes', 'slam': 'detecting loops'}
RUNTIME = tuple(name for name, spec in SPECS.items() if spec.runtime)


def sensor_qos(depth: int) -> QoSProfile:
    """A new best-effort profile for every subscription: rclpy writes parameter overrides
    (``qos_overrides.<topic>...``) into the profile object it is given, so a shared one would
    carry one node's override into every later node of the process."""
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.BEST_EFFORT)


class VprNode(LifecycleNode):
    """The place recognition node; ``pipeline_factory`` builds the vpr_core engine."""

    def __init__(self, node_name: str = 'vpr_node', *,
                 pipeline_factory: PipelineFactory | None = None, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._factory = pipeline_factory or load_pipeline
        self.stats = NodeStatistics()
        self.state = 'unconfigured'
        self.error = ''
        self.settings: NodeSettings | None = None
        self._pipeline: Pipeline | None = None
        self._outputs: OutputPublishers | None = None
        self._slot = LatestFrameSlot(1)
        self._worker: SupervisedWorker | None = None
        self._failing = False
        self._fail_timer = None
        self._inputs: list = []
        self._poses = PoseHistory()
        self._enabled = True
        self._one_shot = threading.Event()
        self._reset = threading.Event()
        self._pending: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.runtime: dict[str, Any] = {}     # the current value of every parameter in SPECS
        self.add_on_set_parameters_callback(lambda params: validate(
            params, self.runtime, configurable=self.state == 'unconfigured'))
        self.add_post_set_parameters_callback(self._after_set_parameters)
        declare_parameters(self)
        group = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, '~/relocalize', self._on_relocalize, callback_group=group)
        self.create_service(SetBool, '~/enable', self._on_enable, callback_group=group)
        self.create_service(Trigger, '~/save_map', self._on_save_map, callback_group=group)
        self._diagnostics = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        period_s = self.get_parameter('diagnostics_period_s').value
        self.create_timer(period_s, self.publish_diagnostics,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        if self.get_parameter('autostart').value and self.trigger_configure() == SUCCESS:
            self.trigger_activate()

    # lifecycle -------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.settings = NodeSettings.from_node(self)
            self._pipeline = self._factory(self.settings)
        except VPRError as exc:
            self.error = f'configure failed: {exc}'
            self.get_logger().error(self.error)
            return FAILURE
        except Exception:  # rclpy would turn it into a silent ERROR transition: log, re-raise
            self.error = f'configure failed: {traceback.format_exc()}'
            self.get_logger().error(self.error)
            raise
        self.error = ''
        info = self._pipeline.status()
        if info.get('map_frame_id', self.settings.map_frame) != self.settings.map_frame:
            self.get_logger().warning(
                f"the map was built in frame '{info['map_frame_id']}', outputs use map_frame "
                f"'{self.settings.map_frame}'")
        with self._lock:
            self._pending.clear()
        self._outputs = OutputPublishers(self, self.settings.map_frame,
                                         self.settings.prior_frame_id,
                                         base_frame=self.settings.base_frame,
                                         slam=self.settings.mode == 'slam')
        self._apply_output_options()
        self._slot = LatestFrameSlot(len(self.settings.image_topics))
        self.state = 'inactive'
        self.get_logger().info(f'configured: {info}')
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        settings = self.settings
        kind = CompressedImage if settings.input_transport == 'compressed' else Image
        options = QoSOverridingOptions.with_default_policies()
        self._inputs = [self.create_subscription(kind, settings.topic(camera),
                                                 partial(self._on_image, camera), sensor_qos(1),
                                                 qos_overriding_options=options)
                        for camera in range(len(settings.image_topics))]
        if settings.pose_topic:
            self._inputs.append(self.create_subscription(
                POSE_TYPES[settings.pose_type], settings.pose_topic, self._poses.add_message,
                sensor_qos(50), qos_overriding_options=options))
        sensors = getattr(self._pipeline, 'sensors', None)
        if settings.mode == 'slam' and sensors is not None:
            self._inputs += subscribe_slam_inputs(self, settings, sensors, self.stats)
        self.stats.reset_input_tracking()
        self._worker = SupervisedWorker(self._slot, self._handle,
                                        on_stopped=self._on_worker_stopped,
                                        max_rate_hz=self.runtime['max_rate_hz'],
                                        max_restarts=MAX_WORKER_RESTARTS)
        self.state = 'active'
        self._worker.start()
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_inputs()
        self.state = 'inactive'
        if self._failing:  # reported as ERROR: rcl goes on to ErrorProcessing (on_error)
            return ERROR
        return super().on_deactivate(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """ErrorProcessing: free everything; SUCCESS lands in unconfigured."""
        self._failing = False
        self._stop_inputs()
        self._release()
        self.state = 'unconfigured'
        self.get_logger().error(f'in ErrorProcessing, now unconfigured: {self.error}')
        return super().on_error(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.state = 'unconfigured'
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.finish()
        return super().on_shutdown(state)

    def finish(self) -> None:
        """Stop the worker, save a teach-mode map, free the pipeline (idempotent)."""
        self._stop_inputs()
        self._release()
        self.state = 'finalized'

    def destroy_node(self) -> None:
        """Destroy the node and its lifecycle state machine. rclpy's LifecycleNode leaves the
        state machine (the lifecycle services, ~/transition_event) to the garbage collector:
        until it runs, a destroyed node stays in the DDS graph, and the stale endpoints it
        leaves made a later node's lifecycle services look unavailable (request readers and
        reply writers of /vpr_node/change_state unpaired in the graph)."""
        super().destroy_node()
        self._state_machine.destroy_when_not_in_use()

    def _stop_inputs(self) -> None:
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs = []
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()
        self._slot.clear()
        self._poses.clear()

    def _release(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            self._save_map(pipeline)
            pipeline.close()
        if self._outputs is not None:
            self._outputs.destroy()
            self._outputs = None

    # frames ----------------------------------------------------------------------------
    def _on_image(self, camera: int, message: Image | CompressedImage) -> None:
        self.stats.on_input(camera=camera, stamp_ns=stamp_ns(message.header.stamp))
        if self._enabled and (self.runtime['continuous'] or self._one_shot.is_set()):
            self._slot.put(Frame(camera, message, time.monotonic()))

    def _handle(self, frame: Frame) -> None:
        """Serve one frame; whatever fails is counted and logged here, never raised, so the
        worker goes on with the next frame."""
        try:
            self._localize(frame)
        except Exception as exc:  # the per-frame boundary: any failure costs one frame only
            kind = error_kind(exc)
            self.stats.on_frame_error(kind, str(exc)[:200])
            self.get_logger().error(
                f'a frame failed with an unexpected {kind}; serving the next frame\n'
                f'{traceback.format_exc()}', throttle_duration_sec=5.0)

    def _localize(self, frame: Frame) -> None:
        pipeline, outputs = self._pipeline, self._outputs
        if not (self.runtime['continuous'] or self._one_shot.is_set()):
            return
        max_pixels = self.settings.max_image_pixels
        try:
            image = image_to_rgb(frame.message, max_pixels)
        except UnsupportedImageError as exc:
            self.stats.on_rejected(rejection_reason(frame.message, max_pixels), str(exc)[:200])
            self.get_logger().warning(f'dropped a bad frame: {exc}', throttle_duration_sec=5.0)
            return
        stamp = frame.message.header.stamp
        slam = self.settings.mode == 'slam'     # exact stamps: they are published back
        try:
            self._apply_pending(pipeline)
            result = pipeline.process(image, stamp_ns(stamp) if slam else stamp_seconds(stamp),
                                      camera=frame.camera,
                                      odometry=self._poses.pose_at(stamp_ns(stamp)))
            arrays = result if slam else result_arrays(result, self.runtime['top_k'])
        except VPRError as exc:
            self.stats.on_rejected('pipeline_error', str(exc)[:200])
            self.get_logger().warning(f'frame not localized: {exc}', throttle_duration_sec=5.0)
            return
        events = tuple(getattr(result, 'events', ()) or ())
        if events:
            self.stats.on_events(events)
        outcome = outputs.publish_loop(stamp, arrays, frame.camera) if slam else \
            outputs.publish(stamp, arrays, frame.camera)
        if outcome == 'invalid_covariance':
            self.stats.on_invalid_covariance()
            self.get_logger().error('withheld a pose prior (slam: a loop) with a non-finite '
                                    'covariance',
                                    throttle_duration_sec=5.0)
        latency_ms = (time.monotonic() - frame.received_s) * 1e3
        self.stats.on_processed(latency_ms, arrays.best_score, outcome == 'accepted',
                                arrays.reason or outcome)
        worker = self._worker
        if worker is not None:
            worker.served()
        if outcome == 'accepted':
            self._one_shot.clear()

    def _apply_pending(self, pipeline: Pipeline) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        if pending:
            pipeline.update(pending)
        if self._reset.is_set():
            self._reset.clear()
            pipeline.reset()

    # the worker's supervision ---------------------------------------------------------
    def _on_worker_stopped(self, exc: BaseException, restarted: bool) -> None:
        """The worker thread stopped on ``exc`` (called on that thread); it was restarted, or
        it stopped too often without serving a frame and the node fails."""
        worker = self._worker
        failure = worker.failure if worker is not None else repr(exc)
        if restarted:
            self.stats.on_worker_restart()
            self.get_logger().error(f'the frame worker stopped ({failure}); restarted it')
            return
        self.error = (f'the frame worker stopped {MAX_WORKER_RESTARTS + 1} times without '
                      f'serving a frame, last with {failure}')
        self.get_logger().error(f'{self.error}; leaving active through ErrorProcessing')
        if self._fail_timer is None:  # lifecycle transitions run on the executor
            self._fail_timer = self.create_timer(0.0, self._fail,
                                                 clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _fail(self) -> None:
        timer, self._fail_timer = self._fail_timer, None
        if timer is not None:
            self.destroy_timer(timer)
        if self.state == 'active':
            self._failing = True
            self.trigger_deactivate()
            self._failing = False

    # parameters and services -----------------------------------------------------------
    def _after_set_parameters(self, parameters: list) -> None:
        with self._lock:
            for parameter in parameters:
                if parameter.name in SPECS:
                    self.runtime[parameter.name] = plain(parameter.value)
                if parameter.name in RUNTIME:
                    self._pending[parameter.name] = plain(parameter.value)
        if self._worker is not None:
            self._worker.set_max_rate(self.runtime['max_rate_hz'])
        self._apply_output_options()

    def _apply_output_options(self) -> None:
        if self._outputs is not None:
            self._outputs.publish_markers = self.runtime['publish_markers']
            self._outputs.marker_scale_m = self.runtime['marker_scale_m']

    def _on_relocalize(self, request: Trigger.Request, response: Trigger.Response
                       ) -> Trigger.Response:
        response.success = self.state == 'active'
        if not response.success:
            response.message = f'node is {self.state}, not active'
            return response
        self._reset.set()
        self._one_shot.set()
        response.message = ('temporal state reset; localizing from scratch' if
                            self.runtime['continuous'] else 'armed: localizing until one match '
                            'is accepted and published on ~/pose_prior')
        return response

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response
                   ) -> SetBool.Response:
        self._enabled = bool(request.data)
        response.success = True
        response.message = 'processing enabled' if self._enabled else 'processing disabled'
        return response

    def _on_save_map(self, request: Trigger.Request, response: Trigger.Response
                     ) -> Trigger.Response:
        pipeline = self._pipeline
        if self.settings is None or not _saves_map(self.settings) or pipeline is None:
            response.message = ('save_map needs a configured node in teach mode, or in slam '
                                'mode with map_dir')
            return response
        response.message = self._save_map(pipeline)
        response.success = not response.message.startswith('save failed')
        return response

    def _save_map(self, pipeline: Pipeline) -> str:
        if self.settings is None or not _saves_map(self.settings):
            return ''
        try:
            summary = pipeline.save()
        except (VPRError, OSError) as exc:  # the previous map on disk is left intact
            summary = f'save failed: {exc}'
            self.get_logger().error(summary)
            return summary
        self.get_logger().info(summary)
        return summary

    def publish_diagnostics(self) -> None:
        """Publish one ``DiagnosticArray`` on /diagnostics (timer callback)."""
        worker = self._worker
        if worker is not None:
            worker.check()
        pipeline = self._pipeline
        info = pipeline.status() if pipeline is not None else {}
        level, message = node_status(self.state, self.error, self._enabled,
                                     self.stats.input_is_stale(),
                                     worker is not None and worker.alive,
                                     worker_failure=worker.failure if worker else '',
                                     input_loss=self.stats.input_loss_ratio(),
                                     last_failure=self.stats.last_failure,
                                     activity=ACTIVITY.get(getattr(self.settings, 'mode',
                                                                   ''), 'localizing'))
        values = {'state': self.state, 'enabled': str(self._enabled), **info,
                  **self.stats.values(self._slot.dropped)}
        self._diagnostics.publish(diagnostic_array(
            f'{self.get_fully_qualified_name()}: place recognition', info.get('device', ''),
            level, message, values, self.get_clock().now().to_msg()))


def _saves_map(settings: NodeSettings) -> bool:
    """Teach mode writes its map, slam mode its session map when map_dir is set."""
    return settings.mode == 'teach' or (settings.mode == 'slam' and bool(settings.map_dir))


def main(args: list[str] | None = None) -> int:
    """Run ``vpr_node`` until Ctrl-C; a teach-mode map is saved on the way out. ``--help``
    (before ``--ros-args``) prints the parameters and returns without starting ROS."""
    argv = sys.argv if args is None else args
    own = argv[1:argv.index('--ros-args')] if '--ros-args' in argv else argv[1:]
    if '--help' in own or '-h' in own:
        sys.stdout.write(help_text())
        return 0
    rclpy.init(args=args)
    node = VprNode()
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.finish()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
