"""Fixtures of the ROS tests (real rclpy and DDS; the top-level conftest isolates the domain)."""
import threading
import time

import pytest

pytest.importorskip('rclpy')

# Threads that libraries keep for the process lifetime (tqdm's monitor), not leaks.
LONG_LIVED = ('TMonitor', 'tqdm_monitor')


@pytest.fixture
def ros():
    """A fresh rclpy context with a spinning executor; everything is shut down afterwards and
    every thread the test started must have ended."""
    from ros_harness import Ros
    before = set(threading.enumerate())
    env = Ros()
    yield env
    env.close()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and _new_threads(before):
        time.sleep(0.05)
    assert not _new_threads(before), f'threads left running: {_new_threads(before)}'


def _new_threads(before):
    return [t.name for t in threading.enumerate()
            if t not in before and t.is_alive() and not t.name.startswith(LONG_LIVED)]
