"""launch/vpr.launch.py and config/vpr_node.yaml name only things that exist, and the
generated engine parameters equal their vpr_core dataclass fields.

``launch``/``launch_ros`` are not on the package index, so every run checks the launch file
statically (ast); where launch_ros imports, the description is also built for real.
"""
import ast
import importlib.util
from pathlib import Path
import xml.etree.ElementTree as ElementTree

import pytest
import yaml

from param_files import flatten
from vpr_ros.parameter_specs import (FIELD_TABLE, leaf_fields, NODE_LEVEL, SECTIONS, undocumented,
                                     unexposed)
from vpr_ros.parameters import PARAMETERS, SPECS

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / 'launch' / 'vpr.launch.py'
CONFIG = ROOT / 'config' / 'vpr_node.yaml'
REQUIRED_ARGUMENTS = {'params_file', 'weights', 'map_dir', 'image_topic', 'image_topics',
                      'map_frame', 'base_frame', 'prior_frame_id', 'namespace',
                      'use_sim_time', 'log_level'}
ROS_PARAMETERS = {'use_sim_time'}
VALUE_TYPES = {'str': str, 'bool': bool, 'int': int, 'float': float}


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


def launch_arguments(tree):
    """{name: (default or None where it is a substitution, description)} of ARGUMENTS."""
    table = next(node.value for node in tree.body if isinstance(node, ast.Assign)
                 and node.targets[0].id == 'ARGUMENTS')
    arguments = {}
    for element in table.elts:
        name, default, description = element.elts
        value = default.value if isinstance(default, ast.Constant) else None
        arguments[name.value] = (value, ast.literal_eval(description))
    return arguments


def test_launch_arguments_are_declared_described_and_used(tree):
    declared = launch_arguments(tree)
    used = {call.args[0].value for call in calls(tree, 'LaunchConfiguration')}
    assert REQUIRED_ARGUMENTS <= set(declared) and used == set(declared)
    assert all(len(description) > 10 for _, description in declared.values())


def node_parameter_values(tree):
    """{parameter: (launch argument, value_type)} of the launch file's parameter dict."""
    node = calls(tree, 'LifecycleNode')[0]
    result = {}
    for mapping in (d for d in ast.walk(keyword(node, 'parameters')) if isinstance(d, ast.Dict)):
        for key, value in zip(mapping.keys, mapping.values):
            argument = calls(value, 'LaunchConfiguration')[0].args[0].value
            value_type = keyword(value, 'value_type')
            type_name = ast.unparse(value_type)
            result[ast.literal_eval(key)] = (argument, type_name)
    return result


def test_launch_parameters_have_the_node_type_and_default(tree):
    """A launch argument left out gives the node its own default, in the node's type."""
    declared = launch_arguments(tree)
    for name, (argument, type_name) in node_parameter_values(tree).items():
        if name in ROS_PARAMETERS:
            continue
        default = SPECS[name].default
        if type_name == 'List[str]':
            assert isinstance(default, list) and all(isinstance(v, str) for v in default)
            assert yaml.safe_load(declared[argument][0]) == default, name
        else:
            assert type(default) is VALUE_TYPES[type_name], name
            assert declared[argument][0] == default, name


def test_remapped_topics_are_the_node_inputs(tree):
    node = calls(tree, 'LifecycleNode')[0]
    sources = {pair.elts[0].value for pair in keyword(node, 'remappings').elts}
    topic = SPECS['image_topics'].default[0]
    assert sources == {topic, f'{topic}/compressed'}


def same_value(a, b):
    """Equal, and of the same ROS type (1 and 1.0 are different parameter types)."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def commented_applies(text):
    """{dotted name: first word of its comment} for every leaf line of the YAML file."""
    found, path = {}, []
    for line in text.splitlines():
        content = line.split('#', 1)[0].rstrip()
        if not content.strip() or content.strip().startswith('/**'):
            continue
        depth = (len(content) - len(content.lstrip())) // 2 - 2   # under ros__parameters
        key, _, value = content.strip().partition(':')
        if key == 'ros__parameters':
            continue
        path = path[:depth] + [key]
        if value.strip() and '#' in line:
            found['.'.join(path)] = line.split('#', 1)[1].split(';')[0].split()[0]
    return found


def test_config_values_are_declared_parameters_with_their_defaults():
    text = CONFIG.read_text()
    values = flatten(yaml.safe_load(text)['/**']['ros__parameters'])
    assert set(values) <= set(SPECS), set(values) - set(SPECS)
    for name, value in values.items():
        assert same_value(value, SPECS[name].default), (name, value, SPECS[name].default)
    applies = commented_applies(text)
    assert set(applies) == set(values)
    assert {name: SPECS[name].applies for name in applies} == applies


def test_every_engine_field_is_a_parameter_with_its_default_type_and_a_valid_range():
    """The task's check: every generated ROS parameter equals its dataclass field in name,
    default and range (the default lies inside the range), choices from the annotation."""
    import typing
    fields = {name: (hint, default) for section, config in SECTIONS.items()
              for name, hint, default in leaf_fields(config, section)}
    generated = {spec.name: spec for spec in PARAMETERS
                 if spec.name.partition('.')[0] in SECTIONS}
    assert set(generated) == set(fields) - set(NODE_LEVEL)
    for name, spec in generated.items():
        hint, default = fields[name]
        expected = list(default) if isinstance(default, tuple) else default
        assert same_value(spec.default, expected), name
        if typing.get_origin(hint) is typing.Literal:
            assert spec.choices == typing.get_args(hint) and default in spec.choices, name
        if spec.range is not None:
            low, high = spec.range
            assert low <= default <= high, f'{name}: default {default} outside {spec.range}'
            assert type(low) is type(high) is type(default), f'{name}: range type'
    for name, node_name in NODE_LEVEL.items():
        assert node_name in SPECS, name
    assert same_value(SPECS['top_k'].default, fields['localization.top_k'][1])


def test_every_engine_parameter_is_described_and_the_table_names_only_fields():
    assert undocumented() == [], 'add these vpr_core fields to FIELD_TABLE'
    assert unexposed() == [], 'these vpr_core fields have no ROS parameter type'
    assert set(FIELD_TABLE) <= {spec.name for spec in PARAMETERS}


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
