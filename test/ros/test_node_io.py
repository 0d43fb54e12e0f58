"""The node over real DDS: images in, standard messages out, stamped with the image stamp."""
import math

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from std_msgs.msg import Float64MultiArray
from visualization_msgs.msg import MarkerArray

from ros_harness import compressed_message, FakePipeline, image_message, wait_for
from vpr_ros.conversions import cloud_to_array, stamp_seconds
from vpr_ros.parameters import SPECS

# the fake pipeline ranks 8 of its 10 places; the node publishes top_k of them
CANDIDATES = min(8, SPECS['top_k'].default)

pytestmark = pytest.mark.ros

OUTPUTS = {'pose_prior': PoseWithCovarianceStamped, 'candidates': PoseArray,
           'candidates_cloud': PointCloud2, 'loop_closure': Float64MultiArray,
           'markers': MarkerArray}


def listen_outputs(probe, node_name='/vpr_node'):
    return {name: probe.listen(kind, f'{node_name}/{name}') for name, kind in OUTPUTS.items()}


def publish_until(publisher, make, received, count=1, timeout_s=10.0):
    """Publish frames (fresh stamps) until ``received`` has ``count`` messages."""
    sent = []

    def step():
        message = make(len(sent))
        sent.append(message)
        publisher.publish(message)
        return wait_for(lambda: len(received) >= count, 0.2)
    assert wait_for(step, timeout_s), f'only {len(received)} outputs after {len(sent)} frames'
    return sent


def check_outputs(outputs, sent_stamps):
    prior = outputs['pose_prior'][0][1]
    assert prior.header.frame_id == 'map'
    assert round(stamp_seconds(prior.header.stamp), 6) in sent_stamps
    covariance = np.array(prior.pose.covariance).reshape(6, 6)
    assert np.all(np.diag(covariance) > 0) and np.all(covariance >= 0)
    assert np.all(covariance <= 1e9)
    q = prior.pose.pose.orientation
    assert math.isclose(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2, 1.0, rel_tol=1e-6)
    stamp = stamp_seconds(prior.header.stamp)
    candidates = next(m for _, m in outputs['candidates']
                      if stamp_seconds(m.header.stamp) == stamp)
    assert candidates.header.frame_id == 'map' and len(candidates.poses) == CANDIDATES
    cloud = next(m for _, m in outputs['candidates_cloud']
                 if stamp_seconds(m.header.stamp) == stamp)
    points = cloud_to_array(cloud)
    assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'score', 'place_id', 'rank',
                                              'camera']
    assert list(points['rank']) == list(range(CANDIDATES)) and not any(points['camera'])
    assert np.all(np.diff(points['score']) < 0)
    assert np.allclose(points['x'], points['place_id'])
    assert np.allclose(points['x'], [p.position.x for p in candidates.poses])
    loop = outputs['loop_closure'][0][1]
    assert loop.data[0] in [stamp_seconds(p.header.stamp) for _, p in outputs['pose_prior']]
    assert loop.data[1] == pytest.approx(100.0 + points['place_id'][0])


def test_raw_image_in_outputs_out_with_the_image_stamp(ros):
    pipeline = FakePipeline()
    node = ros.vpr_node(pipeline=pipeline)
    assert node.state == 'active'
    probe = ros.probe()
    outputs = listen_outputs(probe)
    publisher = probe.publisher(Image, '/image')
    sent = publish_until(publisher, lambda i: image_message(3, 1000.25 + i),
                         outputs['pose_prior'])
    assert wait_for(lambda: all(outputs[name] for name in OUTPUTS))
    check_outputs(outputs, {round(stamp_seconds(m.header.stamp), 6) for m in sent})
    stamp, shape, camera, odometry = pipeline.calls[0]
    assert shape == (24, 32, 3) and camera == 0 and odometry is None
    markers = outputs['markers'][0][1].markers
    assert markers[0].action == markers[0].DELETEALL and len(markers) == 2 * CANDIDATES + 2


def test_compressed_image_in(ros):
    node = ros.vpr_node({'input_transport': 'compressed'})
    probe = ros.probe()
    outputs = listen_outputs(probe)
    publisher = probe.publisher(CompressedImage, '/image/compressed')
    sent = publish_until(publisher, lambda i: compressed_message(4, 50.5 + i, 'png'),
                         outputs['pose_prior'])
    assert wait_for(lambda: all(outputs[name] for name in OUTPUTS))
    check_outputs(outputs, {round(stamp_seconds(m.header.stamp), 6) for m in sent})
    assert node.stats.rejected == {}


def test_rejected_match_publishes_candidates_but_no_prior(ros):
    ros.vpr_node(pipeline=FakePipeline(accept=False))
    probe = ros.probe()
    outputs = listen_outputs(probe)
    publish_until(probe.publisher(Image, '/image'), lambda i: image_message(2, 10.0 + i),
                  outputs['candidates'], count=3)
    assert outputs['pose_prior'] == [] and outputs['loop_closure'] == []


def test_bad_frames_are_counted_and_the_node_keeps_serving(ros):
    node = ros.vpr_node()
    probe = ros.probe()
    outputs = listen_outputs(probe)
    diagnostics = probe.listen(DiagnosticArray, '/diagnostics')
    raw = probe.publisher(Image, '/image')
    publish_until(raw, lambda i: image_message(1, 5.0 + i), outputs['candidates'])
    unknown = image_message(1, 6.0)
    unknown.encoding = 'weird16'
    short = image_message(1, 7.0)
    short.data = short.data[:-5]
    empty = image_message(1, 8.0)
    empty.width = empty.height = empty.step = 0
    empty.data = b''
    for count, message in enumerate((unknown, short, empty), start=1):
        raw.publish(message)
        assert wait_for(lambda: sum(node.stats.rejected.values()) >= count)
    assert wait_for(lambda: set(node.stats.rejected) >= {'unknown_encoding',
                                                         'wrong_data_length', 'zero_size'})
    before = len(outputs['candidates'])
    publish_until(raw, lambda i: image_message(1, 9.0 + i), outputs['candidates'],
                  count=before + 1)
    assert wait_for(lambda: any(_value(m, 'rejected.zero_size') == '1'
                                for _, m in diagnostics), 5.0)
    status = diagnostics[-1][1].status[0]
    assert int(_value(diagnostics[-1][1], 'rejected_inputs')) == 3
    assert status.level == status.OK


def test_corrupt_jpeg_is_counted(ros):
    node = ros.vpr_node({'input_transport': 'compressed'})
    probe = ros.probe()
    outputs = listen_outputs(probe)
    publisher = probe.publisher(CompressedImage, '/image/compressed')
    corrupt = compressed_message(5, 1.0)
    corrupt.data = bytes(corrupt.data[:20]) + bytes(50)
    publisher.publish(corrupt)
    assert wait_for(lambda: node.stats.rejected.get('corrupt_payload') == 1)
    publish_until(publisher, lambda i: compressed_message(5, 2.0 + i), outputs['candidates'])


def _value(array, key):
    values = {kv.key: kv.value for kv in array.status[0].values}
    return values.get(key)


def test_prior_frame_id_changes_only_the_prior(ros):
    ros.vpr_node({'prior_frame_id': 'base_link', 'map_frame': 'world'})
    probe = ros.probe()
    outputs = listen_outputs(probe)
    publish_until(probe.publisher(Image, '/image'), lambda i: image_message(3, 20.0 + i),
                  outputs['pose_prior'])
    assert wait_for(lambda: outputs['candidates'])
    assert outputs['pose_prior'][0][1].header.frame_id == 'base_link'
    assert outputs['candidates'][0][1].header.frame_id == 'world'
