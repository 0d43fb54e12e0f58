"""Load: frames arriving while inference is busy never queue, and memory stays flat.

The checks count frames, not seconds, so they hold on a loaded 2-core machine: the fake
pipeline is held on a gate while frames arrive, and each step waits for the node to report
what it received. The 60 s, 30 Hz soak with the real model is ``bench/node_load.py``.
"""
import os
import threading

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
import numpy as np
import pytest
from sensor_msgs.msg import Image

from ros_harness import FakePipeline, wait_for
from vpr_core.image import encode_raw
from vpr_ros.conversions import stamp_from_seconds, stamp_seconds

pytestmark = pytest.mark.ros
BURST = 20
SIZE = (240, 320)


class GatedPipeline(FakePipeline):
    """Each ``process`` call waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered: list[float] = []

    def process(self, image, stamp, odometry=None, camera=0):
        self.entered.append(stamp)
        assert self.gate.wait(60.0), 'the test never opened the gate'
        return super().process(image, stamp, odometry, camera)


def vga_frame(stamp_s: float, value: int = 7, size=(480, 640)) -> Image:
    height, width = size
    step, data = encode_raw(np.full((height, width, 3), value, np.uint8), 'rgb8')
    message = Image(height=height, width=width, encoding='rgb8', step=step, data=data)
    message.header.stamp = stamp_from_seconds(stamp_s)
    return message


def resident_mb() -> float:
    with open('/proc/self/statm') as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf('SC_PAGE_SIZE') / 2**20


def test_frames_arriving_during_inference_are_dropped_not_queued(ros):
    pipeline = GatedPipeline()
    try:
        check_burst(ros, pipeline)
    finally:
        pipeline.gate.set()  # lets the worker finish before the fixture stops it


def check_burst(ros, pipeline):
    node = ros.vpr_node(pipeline=pipeline)
    probe = ros.probe()
    answers = probe.listen(PoseArray, '/vpr_node/candidates')
    diagnostics = probe.listen(DiagnosticArray, '/diagnostics')
    publisher = probe.publisher(Image, '/image')
    assert wait_for(lambda: publisher.get_subscription_count() == 1)

    publisher.publish(vga_frame(1000.0))
    assert wait_for(lambda: len(pipeline.entered) == 1), 'the worker never took the frame'
    for index in range(1, BURST + 1):
        publisher.publish(vga_frame(1000.0 + index))
        assert wait_for(lambda: node.stats.received == index + 1), f'frame {index} not received'
    # The worker is still inside the first call: the burst waits in a one-frame slot. The
    # callback counts a frame as received before it stores it, so wait for the last store.
    assert wait_for(lambda: node._slot.dropped == BURST - 1), node._slot.dropped
    assert len(pipeline.entered) == 1

    pipeline.gate.set()
    assert wait_for(lambda: len(answers) == 2)
    assert not wait_for(lambda: len(answers) > 2, timeout_s=1.0)
    assert pipeline.entered == [1000.0, 1000.0 + BURST]
    assert [stamp_seconds(m.header.stamp) for _, m in answers] == [1000.0, 1000.0 + BURST]
    assert node.stats.processed == 2 and node._slot.dropped == BURST - 1

    def reported_drops():
        with probe.lock:
            last = diagnostics[-1][1] if diagnostics else None
        values = {kv.key: kv.value for kv in last.status[0].values} if last else {}
        return values.get('dropped') == str(BURST - 1)
    assert wait_for(reported_drops), 'diagnostics do not report the dropped frames'


def test_resident_memory_stays_flat_over_many_frames(ros):
    pipeline = FakePipeline()
    node = ros.vpr_node(pipeline=pipeline)
    pipeline.calls = _Bounded()
    probe = ros.probe()
    probe.listen(PoseArray, '/vpr_node/candidates')
    publisher = probe.publisher(Image, '/image')
    assert wait_for(lambda: publisher.get_subscription_count() == 1)
    memory = []
    for index in range(400):
        publisher.publish(vga_frame(1000.0 + index, index % 256, SIZE))
        assert wait_for(lambda: node.stats.processed == index + 1), f'frame {index} stalled'
        if index % 50 == 49:
            memory.append(resident_mb())
    growth = max(memory[1:]) - memory[0]
    assert growth < 25, f'resident memory grew by {growth:.1f} MB: {memory}'


class _Bounded(list):
    """A list that keeps only its last 10 items (the fake pipeline logs every call)."""

    def append(self, item):
        super().append(item)
        if len(self) > 10:
            del self[0]
