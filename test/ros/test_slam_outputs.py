"""What the node publishes in SLAM mode, with a stand-in pipeline: nothing for frames without
a loop; for a loop the constraint, the candidate cloud, ``[t_cur, t_prev]`` and a growing
LINE_LIST of loop edges; a loop whose covariance cannot be repaired is withheld whole."""
from geometry_msgs.msg import PoseWithCovarianceStamped
import numpy as np
import pytest
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Float64MultiArray
from visualization_msgs.msg import Marker, MarkerArray

from ros_harness import image_message, wait_for
from vpr_ros.conversions import cloud_to_array, stamp_ns
from vpr_ros.result import LoopArrays

pytestmark = pytest.mark.ros


class LoopPipeline:
    """Frame value v > 0 closes a loop with keyframe v - 1 (stamped 1000 + v - 1 s, at x = v -
    1); v == 0 closes none; v == 99 carries a non-finite covariance."""

    def __init__(self):
        self.calls = []

    def process(self, image, stamp, odometry=None, camera=0):
        self.calls.append(stamp)
        value = int(image[0, 0, 0])
        if value == 0:
            return LoopArrays(int(stamp), False, 'too_recent', (), True, float('nan'))
        match = value - 1
        covariance = np.eye(6) * (np.nan if value == 99 else 0.01)
        return LoopArrays(
            stamp_ns=int(stamp), accepted=True, reason='loop', events=(), keyframe=True,
            score=0.7, match_stamp_ns=(1000 + match) * 10**9, inliers=40, metric=True,
            constraint=np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]), covariance=covariance,
            keyframes=np.array([match]), place_ids=np.array([match]),
            stamps_ns=np.array([(1000 + match) * 10**9]),
            positions=np.array([[float(match), 0.0, 0.0]]), previous=np.array([False]),
            query_position=np.array([float(value), 5.0, 0.0]))

    def reset(self):
        pass

    def update(self, changes):
        pass

    def save(self):
        return 'saved'

    def close(self):
        pass

    def status(self):
        return {'device': 'cpu'}


def test_only_accepted_loops_are_published_and_edges_accumulate(ros):
    node = ros.vpr_node({'mode': 'slam', 'map_dir': '', 'map_frame': 'odom',
                         'base_frame': 'base_footprint'}, pipeline=LoopPipeline())
    assert node.state == 'active', node.error
    probe = ros.probe()
    loops = probe.listen(Float64MultiArray, '/vpr_node/loop_closure')
    constraints = probe.listen(PoseWithCovarianceStamped, '/vpr_node/loop_constraint')
    clouds = probe.listen(PointCloud2, '/vpr_node/candidates_cloud')
    markers = probe.listen(MarkerArray, '/vpr_node/markers')
    images = probe.publisher(Image, '/image')
    assert wait_for(lambda: images.get_subscription_count() == 1)
    for k, value in enumerate([0, 3, 99, 7]):
        processed = node.stats.processed
        images.publish(image_message(value, 2000.5 + k))
        assert wait_for(lambda: node.stats.processed > processed)
    assert wait_for(lambda: len(loops) == 2 and len(markers) == 2)
    assert [m.data.tolist() for _, m in loops] == [[2001.5, 1002.0], [2003.5, 1006.0]]
    assert [stamp_ns(m.header.stamp) for _, m in constraints] == [2001_500_000_000,
                                                                  2003_500_000_000]
    assert {m.header.frame_id for _, m in constraints} == {'base_footprint'}
    assert [cloud_to_array(m)['keyframe'][0] for _, m in clouds] == [2, 6]
    edges = markers[-1][1].markers[0]
    assert edges.type == Marker.LINE_LIST and edges.ns == 'vpr_loops'
    assert edges.header.frame_id == 'odom'
    assert [(p.x, p.y) for p in edges.points] == [(3.0, 5.0), (2.0, 0.0), (7.0, 5.0), (6.0, 0.0)]
    values = node.stats.values(0)
    assert values['accepted'] == '2' and values['invalid_covariance'] == '1'
    assert values['not_accepted.too_recent'] == '1'


class RecordingNode:
    """Stand-in lifecycle node: every publisher records what it is given, by topic."""

    def __init__(self):
        self.sent = {}

    def create_lifecycle_publisher(self, kind, topic, qos):
        sent = self.sent.setdefault(topic, [])

        class Publisher:
            def publish(self, message):
                sent.append(message)
        return Publisher()


def loop(match, previous):
    return LoopArrays(
        stamp_ns=2000 * 10**9, accepted=True, reason='loop', events=(), keyframe=True,
        score=0.7, match_stamp_ns=(1000 + match) * 10**9, match_session='s1' if previous else '',
        keyframes=np.array([match]), place_ids=np.array([match]),
        stamps_ns=np.array([(1000 + match) * 10**9]),
        positions=np.array([[float(match), 0.0, 0.0]]), previous=np.array([previous]),
        query_position=np.array([float(match), 5.0, 0.0]))


def test_previous_session_loops_publish_no_loop_closure_but_keep_the_cloud():
    from builtin_interfaces.msg import Time
    from vpr_ros.outputs import OutputPublishers
    node = RecordingNode()
    outputs = OutputPublishers(node, 'odom', slam=True)
    assert outputs.publish_loop(Time(sec=2000), loop(3, previous=True)) == 'accepted'
    assert outputs.publish_loop(Time(sec=2000), loop(4, previous=False)) == 'accepted'
    assert [m.data.tolist() for m in node.sent['~/loop_closure']] == [[2000.0, 1004.0]]
    clouds = [cloud_to_array(m) for m in node.sent['~/candidates_cloud']]
    assert [int(c['previous_session'][0]) for c in clouds] == [1, 0]


def test_loop_edges_keep_only_the_newest():
    from builtin_interfaces.msg import Time
    from vpr_ros.outputs import MAX_LOOP_EDGES, OutputPublishers
    node = RecordingNode()
    outputs = OutputPublishers(node, 'odom', slam=True)
    for match in range(MAX_LOOP_EDGES + 20):
        outputs.publish_loop(Time(sec=2000), loop(match, previous=False))
    points = node.sent['~/markers'][-1].markers[0].points
    assert len(points) == 2 * MAX_LOOP_EDGES
    assert points[0].x == 20.0 and points[-1].x == MAX_LOOP_EDGES + 19.0
