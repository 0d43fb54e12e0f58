"""Parameters (ranges, when a change applies, runtime changes), QoS overrides, cameras and
services."""
import time

from geometry_msgs.msg import PoseArray, PoseWithCovarianceStamped
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
import pytest
from rcl_interfaces.srv import DescribeParameters, SetParameters
from rclpy.exceptions import InvalidParameterValueException
from rclpy.parameter import Parameter
from rclpy.qos import ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2
from std_srvs.srv import SetBool, Trigger

from ros_harness import call, FakePipeline, image_message, wait_for
from vpr_core.localization.config import LocalizationConfig
from vpr_ros.conversions import cloud_to_array
from vpr_ros.parameters import PARAMETERS, SPECS

pytestmark = pytest.mark.ros


def set_remote(probe, **values):
    request = SetParameters.Request(
        parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
    return call(probe, SetParameters, '/vpr_node/set_parameters', request).results


def change(probe, transition_id):
    return call(probe, ChangeState, '/vpr_node/change_state',
                ChangeState.Request(transition=Transition(id=transition_id))).success


def test_out_of_range_and_configure_time_changes_are_refused(ros):
    node = ros.vpr_node()
    probe = ros.probe()
    too_many, = set_remote(probe, top_k=500)
    assert not too_many.successful
    assert node.get_parameter('top_k').value == LocalizationConfig().top_k == 10
    negative, = set_remote(probe, max_rate_hz=-1.0)
    assert not negative.successful
    configure_time, = set_remote(probe, map_dir='/elsewhere')
    assert not configure_time.successful and 'applies at configure' in configure_time.reason
    assert node.get_parameter('map_dir').value == 'unused'
    unchanged, = set_remote(probe, map_dir='unused')   # e.g. ros2 param load of the same file
    assert unchanged.successful
    startup, = set_remote(probe, diagnostics_period_s=5.0)
    assert not startup.successful and node.get_parameter('diagnostics_period_s').value == 1.0
    results = set_remote(probe, top_k=3, max_rate_hz=4.0)
    assert all(r.successful for r in results)
    assert node.runtime['top_k'] == 3 and node.runtime['max_rate_hz'] == 4.0
    engine, = set_remote(probe, **{'localization.gate.min_score': 2.5})
    assert engine.successful and node.runtime['localization.gate.min_score'] == 2.5
    too_short, = set_remote(probe, **{'localization.sequence.length': 0})
    assert not too_short.successful
    velocities, = set_remote(probe, **{'localization.sequence.velocities': [1.0, 1.5]})
    assert velocities.successful
    # in range each, but vpr_core needs gap_factor <= gap_reset_factor: refused here, not on
    # the worker thread later
    crossed, = set_remote(probe, **{'localization.sequence.gap_factor': 50.0})
    assert not crossed.successful and 'gap_reset_factor' in crossed.reason
    assert node.get_parameter('localization.sequence.gap_factor').value == 3.0


def test_configure_time_parameters_apply_at_the_next_configure(ros):
    seen = []

    def factory(settings):
        seen.append(settings)
        return FakePipeline()
    node = ros.vpr_node(factory=factory)
    probe = ros.probe()
    assert node.state == 'active' and seen[0].map_dir == 'unused'
    assert change(probe, Transition.TRANSITION_DEACTIVATE)
    refused, = set_remote(probe, map_dir='/inactive')
    assert not refused.successful
    assert change(probe, Transition.TRANSITION_CLEANUP) and node.state == 'unconfigured'
    results = set_remote(probe, map_dir='/new/map', **{'localization.search.mode': 'float',
                                                       'teach.min_distance_m': 3.0})
    assert all(r.successful for r in results)
    assert len(seen) == 1
    assert change(probe, Transition.TRANSITION_CONFIGURE)
    assert change(probe, Transition.TRANSITION_ACTIVATE) and node.state == 'active'
    assert seen[1].map_dir == '/new/map' and seen[1].localization.search.mode == 'float'
    assert seen[1].teach['min_distance_m'] == 3.0
    assert seen[1].localization.top_k == seen[1].top_k == 10


def test_descriptors_say_when_a_change_applies(ros):
    ros.vpr_node()
    probe = ros.probe()
    names = ['top_k', 'map_dir', 'autostart', 'localization.gate.min_score',
             'localization.search.mode', 'localization.sequence.velocities']
    response = call(probe, DescribeParameters, '/vpr_node/describe_parameters',
                    DescribeParameters.Request(names=names))
    described = dict(zip(names, response.descriptors))
    assert not described['top_k'].read_only and 'apply at once' in described['top_k'].description
    assert not described['map_dir'].read_only
    assert 'applied at configure' in described['map_dir'].description
    assert described['autostart'].read_only
    gate = described['localization.gate.min_score']
    assert gate.floating_point_range[0].from_value == SPECS['localization.gate.min_score'].range[0]
    assert 'one of: auto' in described['localization.search.mode'].additional_constraints
    assert described['localization.sequence.velocities'].type == 8   # PARAMETER_DOUBLE_ARRAY


def test_a_bad_choice_is_refused_at_start(ros):
    with pytest.raises(InvalidParameterValueException):
        ros.vpr_node({'input_transport': 'theora'})


def test_every_parameter_has_a_description():
    assert all(spec.description for spec in PARAMETERS)
    assert len({spec.name for spec in PARAMETERS}) == len(PARAMETERS)
    assert {spec.applies for spec in PARAMETERS} == {'runtime', 'configure', 'startup'}


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


def own_subscription(node, topic):
    """The QoS of ``node``'s own subscription to ``topic``: the DDS graph is shared by every
    participant of the domain (a node process of an earlier test may still be leaving it)."""
    found = []
    assert wait_for(lambda: found.extend(
        info for info in node.get_subscriptions_info_by_topic(topic)
        if info.node_name == node.get_name()) or found, 5.0), topic
    info, = found
    return info.qos_profile


def test_qos_is_sensor_data_by_default_and_overridable(ros):
    default = ros.vpr_node()
    assert own_subscription(default, '/image').reliability == ReliabilityPolicy.BEST_EFFORT
    assert default.get_parameter('qos_overrides./image.subscription.depth').value == 1
    reliable = ros.vpr_node({'qos_overrides./other.subscription.reliability': 'reliable',
                             'image_topics': ['other']}, node_name='vpr_reliable')
    assert own_subscription(reliable, '/other').reliability == ReliabilityPolicy.RELIABLE
    # rclpy writes overrides into the profile it is given: one node's override must not
    # become the next node's default (it did while the profile was a shared constant)
    later = ros.vpr_node({'image_topics': ['other']}, node_name='vpr_later')
    assert own_subscription(later, '/other').reliability == ReliabilityPolicy.BEST_EFFORT


def test_several_cameras_and_the_cloud_names_the_camera(ros):
    pipeline = FakePipeline()
    ros.vpr_node({'image_topics': ['front/image', 'rear/image'],
                  'camera_to_base': [0.0] * 12}, pipeline=pipeline)
    probe = ros.probe()
    clouds = probe.listen(PointCloud2, '/vpr_node/candidates_cloud')
    front = probe.publisher(Image, '/front/image')
    rear = probe.publisher(Image, '/rear/image')
    for i in range(50):
        front.publish(image_message(1, 1.0 + i))
        rear.publish(image_message(2, 1.5 + i))
        if wait_for(lambda: {call[2] for call in pipeline.calls} == {0, 1}, 0.1):
            break
    assert {call[2] for call in pipeline.calls} == {0, 1}
    assert wait_for(lambda: {cloud_to_array(m)['camera'][0] for _, m in clouds} == {0, 1})
    for _, cloud in clouds:
        points = cloud_to_array(cloud)
        assert [f.name for f in cloud.fields][-1] == 'camera' and cloud.point_step == 28
        assert len(set(points['camera'])) == 1
        # the fake pipeline ranks place (image value) first: 1 from the front camera (0),
        # 2 from the rear camera (1)
        assert points['place_id'][0] == 1 + points['camera'][0]


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
