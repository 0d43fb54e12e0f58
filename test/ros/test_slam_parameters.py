"""SLAM mode's parameters: ``loops.*`` are generated from vpr_core's LoopConfig (name, default,
range, when a change applies), validated together, and reach the running detector."""
from dataclasses import fields, is_dataclass

import pytest
from rcl_interfaces.msg import SetParametersResult
from rclpy.parameter import Parameter

from vpr_core.errors import ConfigError
from vpr_core.loops.config import LoopConfig
from vpr_ros.parameter_specs import loop_config, undocumented
from vpr_ros.parameters import SPECS, validate

pytestmark = pytest.mark.ros


def leaves(config, prefix):
    for item in fields(config):
        value = getattr(config, item.name)
        if is_dataclass(value):
            yield from leaves(value, f'{prefix}.{item.name}')
        else:
            yield f'{prefix}.{item.name}', value


def test_every_loop_config_field_is_a_parameter_with_its_default():
    expected = dict(leaves(LoopConfig(), 'loops'))
    declared = {name: spec for name, spec in SPECS.items() if name.startswith('loops.')}
    assert set(declared) == set(expected)
    for name, default in expected.items():
        assert declared[name].default == default and \
            type(declared[name].default) is type(default), name
        if declared[name].range is not None:
            low, high = declared[name].range
            assert low <= default <= high, name
    assert not [name for name in undocumented() if name.startswith('loops.')]
    assert SPECS['loops.verify.features'].applies == 'configure'
    assert SPECS['loops.keyframes.min_interval_s'].applies == 'configure'
    assert SPECS['loops.min_score'].applies == 'runtime'
    assert 'slam' in SPECS['mode'].choices


def test_loop_values_are_checked_together():
    current = {'loops.consistency': 2, 'loops.unverified_consistency': 4}
    assert validate([Parameter('loops.unverified_consistency', value=3)], current).successful
    refused = validate([Parameter('loops.unverified_consistency', value=1)], current)
    assert isinstance(refused, SetParametersResult) and not refused.successful
    assert 'unverified_consistency' in refused.reason
    refused = validate([Parameter('loops.verify.features', value='surf')], current)
    assert not refused.successful and 'features' in refused.reason
    config = loop_config({'verify.min_inliers': 40, 'min_score': 0.3})
    assert config.verify.min_inliers == 40 and config.min_score == 0.3
    with pytest.raises(ConfigError, match='min_scor'):
        loop_config({'min_scor': 0.5})


def test_a_runtime_change_reaches_the_detector_and_configure_ones_wait(ros):
    node = ros.vpr_node({'mode': 'slam', 'map_dir': '', 'device': 'cpu',
                         'loops.verify.min_inliers': 30}, factory=None)
    assert node.state == 'active', node.error
    detector = node._pipeline._detector
    assert detector.config.verify.min_inliers == 30
    result = node.set_parameters([Parameter('loops.min_score', value=0.3)])[0]
    assert result.successful
    node._apply_pending(node._pipeline)                 # what the worker does before a frame
    assert detector.config.min_score == 0.3 and detector.config.verify.min_inliers == 30
    refused = node.set_parameters([Parameter('loops.min_score', value=0.5)])[0]
    assert not refused.successful and 'unverified_min_score' in refused.reason
    refused = node.set_parameters([Parameter('loops.verify.features', value='sift')])[0]
    assert not refused.successful and 'unconfigured' in refused.reason


def test_slam_takes_one_camera(ros):
    node = ros.vpr_node({'mode': 'slam', 'map_dir': '', 'device': 'cpu',
                         'image_topics': ['front/image', 'rear/image'],
                         'camera_to_base': [0.0] * 12}, factory=None)
    assert node.state == 'unconfigured' and 'one camera' in node.error
