"""Parameters (ranges, read-only, runtime changes), QoS overrides, cameras and services."""
import time

from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
import pytest
from rcl_interfaces.srv import SetParameters
from rclpy.exceptions import InvalidParameterValueException
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import Image
from std_srvs.srv import SetBool, Trigger

from ros_harness import call, FakePipeline, image_message, wait_for
from vpr_ros.parameters import PARAMETERS

pytestmark = pytest.mark.ros


def set_remote(probe, **values):
    request = SetParameters.Request(
        parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    return call(probe, SetParameters, '/vpr_node/set_parameters', request).results


def test_out_of_range_and_read_only_changes_are_refused(ros):
    node = ros.vpr_node()
    probe = ros.probe()
    too_many, = set_remote(probe, top_k=500)
    assert not too_many.successful and node.get_parameter('top_k').value == 5
    negative, = set_remote(probe, max_rate_hz=-1.0)
    assert not negative.successful
    read_only, = set_remote(probe, map_dir='/elsewhere')
    assert not read_only.successful and node.get_parameter('map_dir').value == 'unused'
    results = set_remote(probe, top_k=3, max_rate_hz=4.0)
    assert all(r.successful for r in results)
    assert node.runtime['top_k'] == 3 and node.runtime['max_rate_hz'] == 4.0
    engine, = set_remote(probe, **{'localization.gate.min_score': 2.5})
    assert engine.successful and node.runtime['localization.gate.min_score'] == 2.5
    too_short, = set_remote(probe, **{'localization.sequence.length': 0})
    assert not too_short.successful


def test_a_bad_choice_is_refused_at_start(ros):
    with pytest.raises(InvalidParameterValueException):
        ros.vpr_node({'input_transport': 'theora'})


def test_every_parameter_has_a_description():
    assert all(spec.description for spec in PARAMETERS)
    assert len({spec.name for spec in PARAMETERS}) == len(PARAMETERS)


def test_runtime_top_k_changes_the_outputs_and_reaches_the_pipeline(ros):
    pipeline = FakePipeline()
    ros.vpr_node(pipeline=pipeline)
    probe = ros.probe()
    candidates = probe.listen(PoseArray, '/vpr_node/candidates')
    set_remote(probe, top_k=2)
    publisher = probe.publisher(Image, '/image')
    for i in range(50):
        publisher.publish(image_message(1, 1.0 + i))
        if wait_for(lambda: candidates, 0.1):
            break
    assert len(candidates[-1][1].poses) == 2
    assert {'top_k': 2} in pipeline.updates


def test_qos_is_sensor_data_by_default_and_overridable(ros):
    default = ros.vpr_node()
    info, = default.get_subscriptions_info_by_topic('/image')
    assert info.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
    assert default.get_parameter('qos_overrides./image.subscription.depth').value == 1
    reliable = ros.vpr_node({'qos_overrides./other.subscription.reliability': 'reliable',
                             'image_topics': ['other']}, node_name='vpr_reliable')
    info, = reliable.get_subscriptions_info_by_topic('/other')
    assert info.qos_profile.reliability == ReliabilityPolicy.RELIABLE


def test_several_cameras(ros):
    pipeline = FakePipeline()
    ros.vpr_node({'image_topics': ['front/image', 'rear/image'],
                  'camera_to_base': [0.0] * 12}, pipeline=pipeline)
    probe = ros.probe()
    front = probe.publisher(Image, '/front/image')
    rear = probe.publisher(Image, '/rear/image')
    for i in range(50):
        front.publish(image_message(1, 1.0 + i))
        rear.publish(image_message(2, 1.5 + i))
        if wait_for(lambda: {call[2] for call in pipeline.calls} == {0, 1}, 0.1):
            break
    assert {call[2] for call in pipeline.calls} == {0, 1}


def publish_frames(publisher, count, start_s, until=None):
    for i in range(count):
        publisher.publish(image_message(1, start_s + i))
        if until is not None and wait_for(until, 0.05):
            return
        time.sleep(0.05)


def test_one_shot_relocalize_runs_until_a_match_is_accepted(ros):
    pipeline = FakePipeline(accept_after=3)
    node = ros.vpr_node({'continuous': False}, pipeline=pipeline)
    probe = ros.probe()
    priors = probe.listen(PoseWithCovarianceStamped, '/vpr_node/pose_prior')
    publisher = probe.publisher(Image, '/image')
    assert wait_for(lambda: publisher.get_subscription_count() == 1)
    publish_frames(publisher, 5, 1.0)
    assert wait_for(lambda: node.stats.received >= 3)
    assert pipeline.calls == []
    response = call(probe, Trigger, '/vpr_node/relocalize', Trigger.Request())
    assert response.success and 'armed' in response.message
    publish_frames(publisher, 60, 10.0, until=lambda: priors)
    assert wait_for(lambda: len(priors) == 1)
    publish_frames(publisher, 5, 100.0)
    assert len(pipeline.calls) == 4 and len(priors) == 1 and pipeline.resets == 1
    assert node.stats.accepted == 1 and node.stats.match_rejections['low score'] == 3


def test_enable_switches_processing(ros):
    pipeline = FakePipeline()
    node = ros.vpr_node(pipeline=pipeline)
    probe = ros.probe()
    publisher = probe.publisher(Image, '/image')
    assert wait_for(lambda: publisher.get_subscription_count() == 1)
    assert call(probe, SetBool, '/vpr_node/enable', SetBool.Request(data=False)).success
    publish_frames(publisher, 5, 1.0)
    assert wait_for(lambda: node.stats.received >= 3)
    assert pipeline.calls == []
    call(probe, SetBool, '/vpr_node/enable', SetBool.Request(data=True))
    publish_frames(publisher, 30, 10.0, until=lambda: pipeline.calls)
    assert pipeline.calls
    response = call(probe, Trigger, '/vpr_node/relocalize', Trigger.Request())
    assert response.success and 'reset' in response.message
    publish_frames(publisher, 30, 50.0, until=lambda: pipeline.resets)
    assert pipeline.resets == 1
