"""launch/vpr.launch.py and config/vpr_node.yaml name only things that exist.

``launch``/``launch_ros`` are not on the package index, so every run checks the launch file
statically (ast); where launch_ros imports, the description is also built for real.
"""
import ast
import importlib.util
from pathlib import Path
import xml.etree.ElementTree as ElementTree

import pytest
import yaml

from vpr_ros.parameters import PARAMETERS, SPECS

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / 'launch' / 'vpr.launch.py'
CONFIG = ROOT / 'config' / 'vpr_node.yaml'
REQUIRED_ARGUMENTS = {'params_file', 'weights', 'map_dir', 'image_topic', 'namespace',
                      'use_sim_time', 'log_level'}
ROS_PARAMETERS = {'use_sim_time'}


def calls(tree, name):
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and getattr(node.func, 'id', getattr(node.func, 'attr', None)) == name]


def keyword(call, name):
    return next(k.value for k in call.keywords if k.arg == name)


def console_scripts():
    tree = ast.parse((ROOT / 'setup.py').read_text())
    entry_points = keyword(calls(tree, 'setup')[0], 'entry_points')
    scripts = ast.literal_eval(entry_points)['console_scripts']
    return {line.split('=')[0].strip(): line.split('=')[1].strip() for line in scripts}


def package_name():
    return ElementTree.parse(ROOT / 'package.xml').getroot().findtext('name')


@pytest.fixture(scope='module')
def tree():
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def test_one_lifecycle_node_of_an_existing_executable(tree):
    nodes = calls(tree, 'LifecycleNode') + calls(tree, 'Node')
    assert len(nodes) == 1
    node = nodes[0]
    assert ast.literal_eval(keyword(node, 'package')) == package_name()
    executable = ast.literal_eval(keyword(node, 'executable'))
    scripts = console_scripts()
    assert executable in scripts
    module, function = scripts[executable].split(':')
    assert callable(getattr(importlib.import_module(module), function))


def test_parameters_in_the_launch_file_are_declared(tree):
    node = calls(tree, 'LifecycleNode')[0]
    dicts = [d for d in ast.walk(keyword(node, 'parameters')) if isinstance(d, ast.Dict)]
    names = {ast.literal_eval(key) for d in dicts for key in d.keys}
    assert names and names <= set(SPECS) | ROS_PARAMETERS


def test_files_named_in_the_launch_file_exist_and_are_installed(tree):
    paths = []
    for join in calls(tree, 'PathJoinSubstitution'):
        share, *parts = join.args[0].elts
        assert calls(share, 'FindPackageShare')[0].args[0].value == package_name()
        paths.append(Path(*[ast.literal_eval(part) for part in parts]))
    assert paths
    setup_text = (ROOT / 'setup.py').read_text()
    for path in paths:
        assert (ROOT / path).is_file(), path
        assert f"glob('{path.parent}/*{path.suffix}')" in setup_text


def test_launch_arguments_are_declared_and_used(tree):
    declared = {element.elts[0].value for element in
                next(node.value for node in tree.body if isinstance(node, ast.Assign)
                     and node.targets[0].id == 'ARGUMENTS').elts}
    used = {call.args[0].value for call in calls(tree, 'LaunchConfiguration')}
    assert REQUIRED_ARGUMENTS <= declared and used == declared


def test_remapped_topics_are_the_node_inputs(tree):
    node = calls(tree, 'LifecycleNode')[0]
    sources = {pair.elts[0].value for pair in keyword(node, 'remappings').elts}
    topic = SPECS['image_topics'].default[0]
    assert sources == {topic, f'{topic}/compressed'}


def flatten(values, prefix=''):
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f'{prefix}{key}.'))
        else:
            flat[prefix + key] = value
    return flat


def test_config_holds_every_default():
    content = yaml.safe_load(CONFIG.read_text())
    values = flatten(content['/**']['ros__parameters'])
    assert set(values) == {spec.name for spec in PARAMETERS}
    for spec in PARAMETERS:
        assert values[spec.name] == spec.default, spec.name


def test_engine_parameters_mirror_the_vpr_core_config():
    from vpr_core.config import to_dict
    from vpr_core.localization.config import LocalizationConfig
    from vpr_core.mapdb.keyframe import KeyframeConfig
    core = {'localization': flatten(to_dict(LocalizationConfig())),
            'teach': flatten(to_dict(KeyframeConfig()))}
    for spec in PARAMETERS:
        section, _, key = spec.name.partition('.')
        if section in core:
            assert key in core[section], f'{spec.name} is not a vpr_core config field'
            assert core[section][key] == spec.default, spec.name


def test_launch_description_builds_where_launch_ros_exists():
    pytest.importorskip('launch_ros')
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument
    from launch_ros.actions import LifecycleNode
    spec = importlib.util.spec_from_file_location('vpr_launch', LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, LaunchDescription)
    entities = description.entities
    arguments = {e.name for e in entities if isinstance(e, DeclareLaunchArgument)}
    assert REQUIRED_ARGUMENTS <= arguments
    assert sum(isinstance(e, LifecycleNode) for e in entities) == 1
