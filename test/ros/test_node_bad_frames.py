"""Bad frames and failures cost one frame, never the node: over real DDS, after each kind of
failure the next good frame is answered within 1 s and /diagnostics counts the failure."""
from dataclasses import dataclass, field
import struct
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseArray
from lifecycle_msgs.srv import GetState
import numpy as np
import pytest
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image

from ros_harness import call, compressed_message, FakePipeline, image_message, wait_for
from vpr_core.image import encode_compressed
from vpr_ros.conversions import stamp_from_seconds, stamp_seconds

pytestmark = pytest.mark.ros

ANSWER_WITHIN_S = 1.0
POISON = 13  # pixel value of the frames the test pipeline fails on


class WorkerKiller(BaseException):
    """Not an Exception: passes the per-frame catch and stops the worker thread."""


@dataclass
class FailingPipeline(FakePipeline):
    """FakePipeline that raises ``failure`` for POISON frames and reports a tracker reset
    event when a stamp goes back (as the vpr_core tracker does)."""

    failure: BaseException | None = None
    last_stamp: float = float('-inf')
    events: list = field(default_factory=list)

    def process(self, image, stamp, odometry=None, camera=0):
        if int(image[0, 0, 0]) == POISON and self.failure is not None:
            raise self.failure
        result = super().process(image, stamp, odometry, camera)
        result.events = ('clock_jump_back',) if stamp < self.last_stamp else ()
        self.last_stamp = stamp
        return result


def jpeg_claiming(width, height):
    """A valid 32x24 JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    data = bytearray(encode_compressed(np.full((24, 32, 3), 7, np.uint8), 'jpeg')[1])
    sof = data.find(b'\xff\xc0')
    data[sof + 5:sof + 9] = struct.pack('>HH', height, width)
    return bytes(data)


def compressed(data, stamp_s):
    message = CompressedImage(format='jpeg', data=data)
    message.header.stamp = stamp_from_seconds(stamp_s)
    return message


class Bench:
    """A node on the compressed transport, a probe publishing frames and reading outputs."""

    def __init__(self, ros, pipeline, params=None, transport='compressed'):
        self.node = ros.vpr_node({'input_transport': transport, 'diagnostics_period_s': 0.1,
                                  **(params or {})}, pipeline=pipeline)
        probe = ros.probe()
        self.probe = probe
        self.answers = probe.listen(PoseArray, '/vpr_node/candidates')
        self.diagnostics = probe.listen(DiagnosticArray, '/diagnostics')
        kind, topic = (CompressedImage, '/image/compressed') if transport == 'compressed' \
            else (Image, '/image')
        self.publisher = probe.publisher(kind, topic)
        self.make = compressed_message if transport == 'compressed' else image_message
        self.stamp_s = 100.0
        assert self.answer_good(timeout_s=10.0, repeat=True) is not None, 'no first answer'

    def next_stamp(self):
        self.stamp_s += 0.1
        return self.stamp_s

    def answered(self, stamp_s):
        return any(abs(stamp_seconds(m.header.stamp) - stamp_s) < 1e-6 for _, m in self.answers)

    def answer_good(self, timeout_s=5.0, repeat=False):
        """Publish a good frame (again every 0.2 s with ``repeat``, for discovery); seconds
        until its answer, None without one."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stamp_s = self.next_stamp()
            start = time.monotonic()
            self.publisher.publish(self.make(1, stamp_s))
            if wait_for(lambda: self.answered(stamp_s), 0.2 if repeat else timeout_s):
                return next(t for t, m in self.answers
                            if abs(stamp_seconds(m.header.stamp) - stamp_s) < 1e-6) - start
        return None

    def values(self):
        """The node's latest /diagnostics status: (level, message, key -> value)."""
        with self.probe.lock:
            statuses = [s for _, m in self.diagnostics for s in m.status
                        if 'place recognition' in s.name]
        if not statuses:
            return None, '', {}
        status = statuses[-1]
        return status.level, status.message, {kv.key: kv.value for kv in status.values}

    def diagnosed(self, key, at_least=1, timeout_s=5.0):
        return wait_for(lambda: int(self.values()[2].get(key, 0)) >= at_least, timeout_s)


def garbage(prefix=b''):
    return prefix + np.random.default_rng(0).integers(0, 256, 900, np.uint8).tobytes()


BAD_FRAMES = {
    # a 933-byte class of JPEG: its header claims 65000 x 65000 (cv2 would raise)
    'header_65000x65000': ({}, lambda: jpeg_claiming(65000, 65000), 'rejected.too_large'),
    'garbage_bytes': ({}, garbage, 'rejected.unknown_format'),
    'garbage_after_jpeg_signature': ({}, lambda: garbage(b'\xff\xd8'),
                                     'rejected.corrupt_payload'),
    # under a raised cap, 40000 x 30000 reaches cv2.imdecode, which raises cv2.error
    'cv2_raises': ({'max_image_pixels': 2_000_000_000}, lambda: jpeg_claiming(40000, 30000),
                   'rejected.corrupt_payload'),
}


@pytest.mark.parametrize('case', sorted(BAD_FRAMES))
def test_a_bad_frame_costs_one_frame(ros, case):
    params, make_payload, key = BAD_FRAMES[case]
    bench = Bench(ros, FakePipeline(), params)
    bench.publisher.publish(compressed(make_payload(), bench.next_stamp()))
    assert bench.diagnosed(key), f'{key} not counted: {bench.values()}'
    level, message, _ = bench.values()
    assert level == DiagnosticStatus.WARN and 'last frame failed' in message
    elapsed_s = bench.answer_good()
    print(f'{case}: next good frame answered after {elapsed_s:.3f} s')
    assert elapsed_s is not None and elapsed_s < ANSWER_WITHIN_S
    assert wait_for(lambda: bench.values()[0] == DiagnosticStatus.OK, 5.0), bench.values()
    assert bench.node.state == 'active'


def test_a_too_large_raw_frame_is_refused_before_decoding(ros):
    bench = Bench(ros, FakePipeline(), {'max_image_pixels': 32 * 24}, transport='raw')
    bench.publisher.publish(image_message(1, bench.next_stamp(), size=(33, 24)))
    assert bench.diagnosed('rejected.too_large'), bench.values()
    assert bench.answer_good() < ANSWER_WITHIN_S


def test_an_engine_exception_costs_one_frame(ros):
    bench = Bench(ros, FailingPipeline(failure=RuntimeError('engine bug')))
    bench.publisher.publish(compressed_message(POISON, bench.next_stamp()))
    assert bench.diagnosed('frame_errors.RuntimeError'), bench.values()
    assert 'RuntimeError: engine bug' in bench.values()[1]
    elapsed_s = bench.answer_good()
    print(f'engine RuntimeError: next good frame answered after {elapsed_s:.3f} s')
    assert elapsed_s is not None and elapsed_s < ANSWER_WITHIN_S
    _, _, values = bench.values()
    assert values['worker_restarts'] == '0' and values['frame_errors'] == '1'


def test_a_dead_worker_is_reported_and_restarted(ros, monkeypatch):
    monkeypatch.setattr('threading.excepthook', lambda args: None)  # the expected traceback
    bench = Bench(ros, FailingPipeline(failure=WorkerKiller('out of the blue')))
    bench.publisher.publish(compressed_message(POISON, bench.next_stamp()))
    assert bench.diagnosed('worker_restarts'), bench.values()
    level, message, _ = bench.values()
    assert level == DiagnosticStatus.ERROR and 'WorkerKiller' in message
    elapsed_s = bench.answer_good()
    print(f'worker killed: next good frame answered after {elapsed_s:.3f} s')
    assert elapsed_s is not None and elapsed_s < ANSWER_WITHIN_S
    assert wait_for(lambda: bench.values()[0] == DiagnosticStatus.OK, 5.0), bench.values()
    assert bench.node.state == 'active'


def test_a_worker_that_keeps_dying_fails_the_node_through_error_processing(ros, monkeypatch):
    from lifecycle_msgs.msg import TransitionEvent
    monkeypatch.setattr('threading.excepthook', lambda args: None)
    pipeline = FailingPipeline(failure=WorkerKiller('always'))
    bench = Bench(ros, pipeline)
    events = bench.probe.listen(TransitionEvent, '/vpr_node/transition_event')
    time.sleep(0.5)  # the transition_event subscription is matched
    for _ in range(10):
        if bench.node.state != 'active':
            break
        bench.publisher.publish(compressed_message(POISON, bench.next_stamp()))
        time.sleep(0.2)
    state = call(bench.probe, GetState, '/vpr_node/get_state', GetState.Request())
    assert state.current_state.label == 'unconfigured'
    assert wait_for(lambda: any(m.goal_state.label == 'errorprocessing' for _, m in events))
    assert pipeline.closed
    assert wait_for(lambda: bench.values()[0] == DiagnosticStatus.ERROR
                    and 'without serving a frame' in bench.values()[1])
    assert bench.values()[2]['worker_restarts'] == '3'


def test_clock_jump_back_and_input_loss_are_diagnosed(ros):
    # reliable, so that DDS loses nothing on a busy host: the only loss is the test's
    override = 'qos_overrides./image/compressed.subscription.'
    bench = Bench(ros, FailingPipeline(), {override + 'reliability': 'reliable',
                                           override + 'depth': 100})
    [subscription] = bench.probe.get_subscriptions_info_by_topic('/image/compressed')
    assert subscription.qos_profile.reliability == ReliabilityPolicy.RELIABLE
    # a 10 Hz camera of which 60% of the frames never arrive, at random
    arrives = np.random.default_rng(3).random(80) > 0.6
    start_s = bench.stamp_s
    for index in np.flatnonzero(arrives):
        bench.publisher.publish(compressed_message(1, start_s + 0.1 * (index + 1)))
        time.sleep(0.03)
    bench.stamp_s = start_s + 8.1
    missing = int(np.flatnonzero(arrives)[-1]) + 1 - int(arrives.sum())
    assert wait_for(lambda: int(bench.values()[2].get('input_lost', 0)) >= missing), \
        bench.values()
    level, message, values = bench.values()
    print(f"input loss: {values['input_lost']} frames lost in {values['input_gaps']} gaps "
          f"counted ({missing} missing), ratio {values['input_loss_ratio']}")
    assert int(values['input_lost']) == missing  # every missing frame found from the stamps
    assert float(values['input_loss_ratio']) > 0.4 and values['input_period_ms'] == '100.0'
    assert level == DiagnosticStatus.WARN and 'missing' in message, message
    bench.stamp_s = 50.0  # the stamps jump back by 54 s
    assert bench.answer_good() is not None
    assert bench.diagnosed('clock_jumps_back'), bench.values()
    assert bench.values()[2]['clock_jumps_back'] == '1'
    assert bench.diagnosed('events.clock_jump_back'), bench.values()
