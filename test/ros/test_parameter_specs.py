"""Engine parameters generated from the vpr_core dataclasses, typed updates, ``vpr_node --help``.
"""
from dataclasses import dataclass, field
import os
import subprocess
import sys
from typing import Literal

import pytest

from vpr_core.errors import ConfigError
from vpr_core.localization.config import LocalizationConfig
from vpr_ros import parameter_specs
from vpr_ros.parameter_specs import engine_config, engine_specs, replace_path
from vpr_ros.parameters import engine_values, localization_config, PARAMETERS, validate


@dataclass(frozen=True)
class Inner:
    ratio: float = 0.5
    kind: Literal['a', 'b'] = 'a'


@dataclass(frozen=True)
class Grown:
    inner: Inner = field(default_factory=Inner)
    steps: tuple[float, ...] = (1.0, 2.0)
    brand_new: int = 7
    top_k: int = 3
    nothing: float | None = None


def test_a_new_dataclass_field_becomes_a_parameter_without_a_table_entry(monkeypatch):
    monkeypatch.setattr(parameter_specs, 'SECTIONS', {'localization': Grown})
    specs = {spec.name: spec for spec in engine_specs()}
    assert set(specs) == {'localization.inner.ratio', 'localization.inner.kind',
                          'localization.steps', 'localization.brand_new'}   # top_k: node-level
    new = specs['localization.brand_new']
    assert new.default == 7 and new.range is None and new.runtime
    assert new.description == parameter_specs.GENERIC_DESCRIPTION
    assert specs['localization.inner.kind'].choices == ('a', 'b')
    assert specs['localization.steps'].default == [1.0, 2.0]
    assert sorted(parameter_specs.undocumented()) == sorted(specs)
    assert parameter_specs.unexposed() == ['localization.nothing']   # no ROS type: not declared


def test_read_only_and_runtime_split_is_kept():
    runtime = {spec.name for spec in PARAMETERS if spec.runtime}
    configure = {spec.name for spec in PARAMETERS if spec.applies == 'configure'}
    assert {'localization.gate.min_score', 'localization.sequence.length', 'top_k',
            'max_rate_hz', 'continuous'} <= runtime
    assert 'localization.prior.calibration' in configure and 'teach.min_distance_m' in configure
    assert all(name in configure for name in (spec.name for spec in PARAMETERS)
               if name.startswith('localization.search.'))
    assert {spec.name for spec in PARAMETERS if spec.applies == 'startup'} == {
        'autostart', 'diagnostics_period_s'}


def test_typed_update_replaces_one_field_and_keeps_types():
    base = LocalizationConfig()
    config = replace_path(base, 'gate.min_score', 2)
    assert config.gate.min_score == 2.0 and isinstance(config.gate.min_score, float)
    assert config.gate.min_margin == base.gate.min_margin and config.sequence is base.sequence
    import array
    config = engine_config({'sequence.velocities': array.array('d', [1.0, 2.0]), 'top_k': 4,
                            'search.mode': 'float'}, base)
    assert config.sequence.velocities == (1.0, 2.0) and config.top_k == 4
    assert config.search.mode == 'float' and base.search.mode == 'auto'


@pytest.mark.parametrize('values, message', [
    ({'gate.min_scor': 1.0}, "did you mean 'min_score'"),
    ({'gat.min_score': 1.0}, "did you mean 'gate'"),
    ({'top_k.deeper': 1}, 'is a value, not a section'),
    ({'gate.min_frames': 1.5}, 'gate.min_frames: expected an integer'),
    ({'search.mode': 'fastest'}, "search.mode: 'fastest' is not one of"),
])
def test_typed_update_errors_name_the_field(values, message):
    with pytest.raises(ConfigError, match=message):
        localization_config(values)


def test_engine_values_map_node_names_onto_the_dataclass():
    values = {'localization.gate.min_score': 1.5, 'top_k': 4, 'max_rate_hz': 2.0,
              'teach.min_distance_m': 2.0}
    assert engine_values(values) == {'gate.min_score': 1.5, 'top_k': 4}


def test_validate_checks_cross_field_rules_with_the_current_values():
    from rclpy.parameter import Parameter
    current = {'localization.sequence.gap_reset_factor': 20.0}
    ok = validate([Parameter('localization.sequence.gap_factor', value=10.0)], current)
    assert ok.successful
    refused = validate([Parameter('localization.sequence.gap_factor', value=30.0)], current)
    assert not refused.successful and 'gap_reset_factor' in refused.reason
    locked = validate([Parameter('map_dir', value='/m')], current, configurable=False)
    assert not locked.successful and 'unconfigured' in locked.reason


def test_vpr_node_help_prints_every_parameter_and_exits_without_ros():
    result = subprocess.run([sys.executable, '-m', 'vpr_ros.node', '--help'],
                            capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith('usage: vpr_node')
    for spec in PARAMETERS:
        assert f'  {spec.name} (' in out, spec.name
    assert 'localization.gate.min_score (double, default 1.3, runtime, range -100.0..100.0)' \
        in out
    assert 'least sequence score of an accepted match' in out
    assert "mode (string, default 'localize', configure, one of: localize, teach, slam)" \
        in out


def test_help_does_not_initialise_rclpy(capsys):
    import rclpy
    from vpr_ros.node import main
    assert main(['vpr_node', '--help']) == 0
    assert not rclpy.ok()
    assert 'usage: vpr_node' in capsys.readouterr().out
