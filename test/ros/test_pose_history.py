"""The pose history the node looks odometry up in: interpolation, tolerance, time going back."""
import numpy as np
import pytest
from nav_msgs.msg import Odometry

from vpr_ros.conversions import stamp_from_seconds
from vpr_ros.pose_history import PoseHistory

pytestmark = pytest.mark.ros
S = 1_000_000_000


def at_x(x: float) -> np.ndarray:
    return np.array([x, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0])


def test_interpolates_between_the_samples_around_the_stamp():
    history = PoseHistory(tolerance_s=0.5)
    for second in range(100):
        history.add(second * S // 10, at_x(float(second)))
    assert history.pose_at(int(4.25 * S)).position == pytest.approx((42.5, 0.0, 0.0))
    assert history.pose_at(0).position == pytest.approx((0.0, 0.0, 0.0))
    assert history.pose_at(int(9.9 * S)).position == pytest.approx((99.0, 0.0, 0.0))
    assert history.pose_at(int(10.3 * S)).position == pytest.approx((99.0, 0.0, 0.0))
    assert history.pose_at(int(10.5 * S)) is None
    assert history.pose_at(-S) is None


def test_odometry_messages_are_read_at_their_stamps():
    history = PoseHistory()
    for second in (1.0, 2.0):
        message = Odometry()
        message.header.stamp = stamp_from_seconds(second)
        message.pose.pose.position.x = 10 * second
        message.pose.pose.orientation.w = 1.0
        history.add_message(message)
    assert history.pose_at(int(1.5 * S)).position == pytest.approx((15.0, 0.0, 0.0))


def test_late_samples_are_ignored_and_a_jump_back_restarts_the_history():
    history = PoseHistory(tolerance_s=0.5)
    history.add(10 * S, at_x(10.0))
    history.add(11 * S, at_x(11.0))
    history.add(int(10.8 * S), at_x(-1.0))        # late by 0.2 s: ignored
    assert len(history) == 2
    history.add(2 * S, at_x(2.0))                 # a replay restarted
    assert len(history) == 1 and history.pose_at(11 * S) is None
    assert history.pose_at(2 * S).position == pytest.approx((2.0, 0.0, 0.0))
    history.clear()
    assert len(history) == 0 and history.pose_at(2 * S) is None
