"""config/integrations/*.yaml: ROS parameter files the real rcl parser reads, whose vpr_node
settings are declared parameters, and whose topics and services exist on a running node."""
from pathlib import Path

import pytest
import rclpy
from rclpy.parameter import Parameter
import yaml

from param_files import flatten
from ros_harness import FakePipeline
from vpr_ros.parameters import SPECS, validate

pytestmark = pytest.mark.ros

ROOT = Path(__file__).resolve().parents[2]
INTEGRATIONS = sorted((ROOT / 'config' / 'integrations').glob('*.yaml'))
NODE_KEYS = ('/**', '/**/vpr_node', 'vpr_node', '/vpr_node')
MARKERS = ('# remap:', '# relay:', '# service:')


def load(name):
    return yaml.safe_load((ROOT / 'config' / 'integrations' / name).read_text())


def node_values(content):
    """The vpr_node parameters of a parameter file, flattened to dotted names."""
    values = {}
    for key in NODE_KEYS:
        values.update(flatten(content.get(key, {}).get('ros__parameters', {})))
    return values


def named_interfaces(path):
    """Our topics and services named by the file: ``# remap: THEIR_NAME OUR_TOPIC``,
    ``# relay: OUR_TOPIC THEIR_TOPIC``, ``# service: OUR_SERVICE``."""
    named = {'topics': set(), 'services': set()}
    for line in path.read_text().splitlines():
        if line.startswith('# remap:'):
            named['topics'].add(line.split()[3])
        elif line.startswith('# relay:'):
            named['topics'].add(line.split()[2])
        elif line.startswith('# service:'):
            named['services'].add(line.split()[2])
    return named


def test_the_three_recipes_are_shipped_and_installed():
    assert {p.name for p in INTEGRATIONS} == {
        'robot_localization_ekf.yaml', 'amcl_relocalization.yaml', 'rtabmap.yaml'}
    assert "glob('config/integrations/*.yaml')" in (ROOT / 'setup.py').read_text()
    for path in INTEGRATIONS:
        assert named_interfaces(path)['topics'], f'{path.name} names none of our topics'


@pytest.mark.parametrize('path', INTEGRATIONS, ids=lambda p: p.stem)
def test_vpr_node_settings_are_declared_parameters_with_valid_values(path):
    content = yaml.safe_load(path.read_text())
    assert all('ros__parameters' in section for section in content.values())
    values = node_values(content)
    for name, value in values.items():
        spec = SPECS.get(name)
        assert spec is not None, f'{path.name}: vpr_node has no parameter {name}'
        assert type(value) is type(spec.default), name
        assert not spec.choices or value in spec.choices, name
    result = validate([Parameter(name, value=value) for name, value in values.items()])
    assert result.successful, result.reason


@pytest.mark.parametrize('path', INTEGRATIONS, ids=lambda p: p.stem)
def test_rcl_reads_the_file_and_vpr_node_takes_its_values(path):
    from vpr_ros.node import VprNode
    context = rclpy.Context()
    rclpy.init(args=['--ros-args', '--params-file', str(path)], context=context)
    try:
        node = VprNode(context=context, pipeline_factory=lambda settings: FakePipeline(),
                       parameter_overrides=[Parameter('map_dir', value='unused'),
                                            Parameter('autostart', value=False)])
        try:
            for name, value in node_values(yaml.safe_load(path.read_text())).items():
                assert node.get_parameter(name).value == value, name
        finally:
            node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_named_topics_and_services_exist_on_a_running_node(ros):
    node = ros.vpr_node(pipeline=FakePipeline())
    assert node.state == 'active'
    topics = {publisher.topic_name for publisher in node.publishers}
    services = {service.service_name for service in node.services}
    for path in INTEGRATIONS:
        named = named_interfaces(path)
        assert named['topics'] <= topics, (path.name, named['topics'] - topics)
        assert named['services'] <= services, (path.name, named['services'] - services)
    assert load('robot_localization_ekf.yaml')['ekf_map']['ros__parameters']['pose0'] in topics


def test_robot_localization_fuses_x_y_yaw_of_the_prior_in_the_map_frame():
    ekf = load('robot_localization_ekf.yaml')['ekf_map']['ros__parameters']
    assert ekf['world_frame'] == ekf['map_frame'] == SPECS['map_frame'].default
    assert ekf['base_link_frame'] == SPECS['base_frame'].default
    selected = [i for i, on in enumerate(ekf['pose0_config']) if on]
    assert len(ekf['pose0_config']) == 15 and selected == [0, 1, 5]
    assert ekf['pose0_differential'] is False and ekf['pose0_rejection_threshold'] > 0
    assert ekf['smooth_lagged_data'] is True and ekf['history_length'] > 0
    assert len(ekf['odom0_config']) == 15 and not any(ekf['odom0_config'][:6])


def test_amcl_gets_one_prior_per_relocalize_in_its_global_frame():
    content = load('amcl_relocalization.yaml')
    node, amcl = node_values(content), content['/**/amcl']['ros__parameters']
    assert node['continuous'] is False
    assert node['map_frame'] == amcl['global_frame_id'] and node['prior_frame_id'] == ''
    assert node['base_frame'] == amcl['base_frame_id']


def test_rtabmap_gets_the_posed_frame_as_frame_id():
    content = load('rtabmap.yaml')
    node, rtabmap = node_values(content), content['/**/rtabmap']['ros__parameters']
    assert node['prior_frame_id'] == rtabmap['frame_id'] == node['base_frame'] == 'base_link'
    assert node['map_frame'] == rtabmap['map_frame_id']
