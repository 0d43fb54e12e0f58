"""The node never publishes a covariance with a zero or negative variance, a negative element
or an element above 1e9, whatever the engine hands it."""
from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
import numpy as np
import pytest
from sensor_msgs.msg import Image

from ros_harness import FakePipeline, image_message, wait_for
from vpr_ros.conversions import MAX_COVARIANCE, MIN_VARIANCE, safe_covariance, stamp_seconds

BAD = {
    'zeros': np.zeros((6, 6)),
    'negative_variance': np.diag([-1.0, 0.5, 1e4, 1e4, 1e4, 0.1]),
    'huge': np.diag([1e12, 1e12, 1e15, 1e15, 1e15, 1e10]),
    'negative_off_diagonal': np.diag([1.0] * 6) + np.eye(6, k=1) * -0.3 + np.eye(6, k=-1) * -0.3,
    'not_positive_definite': np.full((6, 6), 2.0) + np.diag([-1.5] * 6),
    'asymmetric': np.diag([1.0] * 6) + np.eye(6, k=1) * 0.2,
}


def assert_publishable(matrix):
    assert matrix.shape == (6, 6)
    assert np.all(np.isfinite(matrix))
    assert np.all(np.diag(matrix) >= MIN_VARIANCE) and np.all(matrix >= 0)
    assert np.all(matrix <= MAX_COVARIANCE)
    assert np.allclose(matrix, matrix.T)
    assert np.linalg.eigvalsh(matrix).min() >= -1e-9


@pytest.mark.parametrize('name', sorted(BAD))
def test_guard_repairs(name):
    assert_publishable(safe_covariance(BAD[name]))


def test_guard_keeps_a_valid_matrix():
    valid = np.diag([0.3, 0.4, 1e4, 1e4, 1e4, 0.02])
    valid[0, 1] = valid[1, 0] = 0.1
    assert np.array_equal(safe_covariance(valid), valid)


@pytest.mark.parametrize('value', [np.nan, np.inf])
def test_guard_refuses_non_finite(value):
    matrix = np.diag([1.0] * 6)
    matrix[2, 2] = value
    assert safe_covariance(matrix) is None


@pytest.mark.ros
def test_node_publishes_only_guarded_covariances(ros):
    pipeline = FakePipeline()
    node = ros.vpr_node(pipeline=pipeline)
    probe = ros.probe()
    priors = probe.listen(PoseWithCovarianceStamped, '/vpr_node/pose_prior')
    candidates = probe.listen(PoseArray, '/vpr_node/candidates')
    publisher = probe.publisher(Image, '/image')
    cases = [BAD[name] for name in sorted(BAD)] + [np.full((6, 6), np.nan)]
    for index, covariance in enumerate(cases):
        pipeline.covariance = covariance
        # Frames of this case are stamped from 10 * index s on: a late answer to the previous
        # case's frames (processed with its covariance) does not count.
        first_s = 10.0 * index
        for attempt in range(50):
            publisher.publish(image_message(1, first_s + 0.1 * attempt))
            if wait_for(lambda: answered(candidates, first_s), 0.1):
                break
        assert answered(candidates, first_s)
    assert wait_for(lambda: len(priors) >= len(BAD))
    for _, prior in priors:
        assert_publishable(np.array(prior.pose.covariance).reshape(6, 6))
    assert not answered(priors, 10.0 * len(BAD)), 'a prior went out with a NaN covariance'
    assert wait_for(lambda: node.stats.invalid_covariance >= 1)


def answered(messages, since_s):
    """True when one of ``messages`` answers a frame stamped ``since_s`` or later."""
    return any(stamp_seconds(message.header.stamp) >= since_s for _, message in messages)
