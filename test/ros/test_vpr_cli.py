"""The ``vpr`` console script: vpr_core's commands plus ``bag-replay``."""
import os
import subprocess
import sys

import pytest

from ros_harness import write_image_bag
from vpr_ros import cli
from vpr_ros.commands import replay_options

pytestmark = pytest.mark.ros


def test_bag_replay_is_registered(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(['bag-replay', '--help'])
    assert exit_info.value.code == 0
    assert '--rate' in capsys.readouterr().out


def test_remap_syntax_is_checked(capsys):
    args = cli.cli.build_parser(cli.ROS_COMMAND_MODULES).parse_args(
        ['bag-replay', 'x', '--remap', '/a:=/b', '--rate', '2'])
    options = replay_options(args)
    assert options.remap == (('/a', '/b'),) and options.rate == 2.0 and options.clock
    assert cli.main(['bag-replay', 'x', '--remap', 'nonsense']) == 2
    assert 'must look like /from:=/to' in capsys.readouterr().err


def test_replay_from_the_command_line(tmp_path):
    write_image_bag(tmp_path / 'bag', 'sqlite3', count=5, period_s=0.1)
    result = subprocess.run(
        [sys.executable, '-m', 'vpr_ros.cli', 'bag-replay', str(tmp_path / 'bag'), '--rate',
         '10', '--remap', '/odom:=/robot/odom'], capture_output=True, text=True, timeout=60,
        env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    assert '/camera/image' in result.stdout and '/robot/odom' in result.stdout
    assert '10 messages' in result.stdout
