"""Every lifecycle transition, driven through the node's lifecycle services over DDS."""
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
import pytest
from sensor_msgs.msg import Image

from ros_harness import call, failing_factory, FakePipeline, image_message, wait_for

pytestmark = pytest.mark.ros


def change(probe, transition_id):
    response = call(probe, ChangeState, '/vpr_node/change_state',
                    ChangeState.Request(transition=Transition(id=transition_id)))
    return response.success


def state_of(probe):
    return call(probe, GetState, '/vpr_node/get_state', GetState.Request()).current_state.label


def outputs_flow(probe, publisher, candidates, start_s, attempts=50):
    """True when a frame published now produces a ~/candidates message (waits for the node's
    subscription first when many attempts are allowed). On success it returns once answers to
    the earlier attempts have stopped arriving, so none is taken for a later frame's."""
    before = len(candidates)
    if attempts > 10:
        wait_for(lambda: publisher.get_subscription_count() > 0, 10.0)
    for i in range(attempts):
        publisher.publish(image_message(1, start_s + i))
        if wait_for(lambda: len(candidates) > before, 0.2):
            while True:
                seen = len(candidates)
                if not wait_for(lambda: len(candidates) > seen, 0.5):
                    return True
    return False


def test_every_transition(ros):
    pipelines = []

    def factory(settings):
        pipelines.append(FakePipeline())
        return pipelines[-1]
    node = ros.vpr_node({'autostart': False}, factory=factory)
    probe = ros.probe()
    candidates = probe.listen(PoseArray, '/vpr_node/candidates')
    publisher = probe.publisher(Image, '/image')
    assert state_of(probe) == 'unconfigured' and node.state == 'unconfigured'
    assert publisher.get_subscription_count() == 0

    assert change(probe, Transition.TRANSITION_CONFIGURE)
    assert state_of(probe) == 'inactive' and len(pipelines) == 1
    assert publisher.get_subscription_count() == 0

    assert change(probe, Transition.TRANSITION_ACTIVATE)
    assert state_of(probe) == 'active'
    assert outputs_flow(probe, publisher, candidates, 10.0)

    assert change(probe, Transition.TRANSITION_DEACTIVATE)
    assert state_of(probe) == 'inactive'
    assert wait_for(lambda: publisher.get_subscription_count() == 0)
    assert not outputs_flow(probe, publisher, candidates, 100.0, attempts=10)
    assert not pipelines[0].closed

    assert change(probe, Transition.TRANSITION_ACTIVATE)
    assert outputs_flow(probe, publisher, candidates, 200.0)
    assert change(probe, Transition.TRANSITION_DEACTIVATE)
    assert change(probe, Transition.TRANSITION_CLEANUP)
    assert state_of(probe) == 'unconfigured' and pipelines[0].closed

    assert change(probe, Transition.TRANSITION_CONFIGURE)
    assert len(pipelines) == 2 and not pipelines[1].closed
    assert change(probe, Transition.TRANSITION_ACTIVATE)
    assert outputs_flow(probe, publisher, candidates, 300.0)
    assert change(probe, Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert state_of(probe) == 'finalized' and pipelines[1].closed
    assert not node._worker


def test_configure_failure_is_reported(ros):
    node = ros.vpr_node({'autostart': False, 'map_dir': 'no/such/map'}, factory=failing_factory)
    probe = ros.probe()
    diagnostics = probe.listen(DiagnosticArray, '/diagnostics')
    assert not change(probe, Transition.TRANSITION_CONFIGURE)
    assert state_of(probe) == 'unconfigured'
    assert 'map directory not found: no/such/map' in node.error
    assert wait_for(lambda: any(m.status[0].level == m.status[0].ERROR for _, m in diagnostics))
    status = diagnostics[-1][1].status[0]
    assert 'no/such/map' in status.message


def test_autostart_with_a_missing_map_stays_unconfigured(ros):
    node = ros.vpr_node({'map_dir': 'missing'}, factory=failing_factory)
    assert node.state == 'unconfigured' and 'missing' in node.error


def test_localize_mode_needs_a_map(ros):
    node = ros.vpr_node({'map_dir': ''})
    assert node.state == 'unconfigured' and 'needs map_dir' in node.error


def test_a_destroyed_node_leaves_the_graph(ros):
    """Lifecycle services included: a node an earlier test had left in the graph once made
    this file's services look unavailable (request readers and reply writers unpaired)."""
    node = ros.vpr_node({'autostart': False})
    probe = ros.probe()

    def service_endpoints():
        return (len(probe.get_subscriptions_info_by_topic('rq/vpr_node/get_stateRequest',
                                                          no_mangle=True))
                + len(probe.get_publishers_info_by_topic('rr/vpr_node/get_stateReply',
                                                         no_mangle=True)))
    assert wait_for(lambda: service_endpoints() == 2)
    ros.executor.remove_node(node)
    ros.nodes.remove(node)
    node.destroy_node()
    assert wait_for(lambda: service_endpoints() == 0)
    assert 'vpr_node' not in [name for name, _ in probe.get_node_names_and_namespaces()]
