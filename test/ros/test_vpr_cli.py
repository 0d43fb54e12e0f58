"""The ``vpr`` console script: vpr_core's commands plus ``bag-replay``."""
import os
import struct
import subprocess
import sys
import types

import cv2
import numpy as np
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


def test_an_image_too_large_is_one_line_not_a_traceback(tmp_path, capsys):
    rng = np.random.default_rng(0)
    (tmp_path / 'map_images').mkdir()
    for index in range(3):
        cv2.imwrite(str(tmp_path / 'map_images' / f'{index}.png'),
                    rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    assert cli.main(['build-map', '--images', str(tmp_path / 'map_images'), '--pixels',
                     '--out', str(tmp_path / 'map'), '--no-progress']) == 0
    ok, payload = cv2.imencode('.jpg', rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    data = bytearray(payload.tobytes())
    sof = data.find(b'\xff\xc0')
    data[sof + 5:sof + 9] = struct.pack('>HH', 65000, 65000)
    (tmp_path / 'queries').mkdir()
    (tmp_path / 'queries' / 'huge.jpg').write_bytes(bytes(data))
    capsys.readouterr()
    assert cli.main(['query', '--map', str(tmp_path / 'map'), '--pixels', '--images',
                     str(tmp_path / 'queries')]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and 'Traceback' not in error
    assert 'huge.jpg is 65000x65000' in error and 'max_image_pixels cap of 50,000,000' in error


def test_an_opencv_error_is_one_line(monkeypatch, capsys):
    def register(subparsers):
        def run(args):
            cv2.cvtColor(np.zeros((2, 2, 5), np.uint8), cv2.COLOR_BGR2RGB)  # raises cv2.error
        subparsers.add_parser('convert').set_defaults(func=run)
    monkeypatch.setitem(sys.modules, 'opencv_failure', types.SimpleNamespace(register=register))
    assert cli.cli.main(['convert'], extra_modules=('opencv_failure',)) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith('vpr convert: error: OpenCV could not process an image: ')
    assert len(error.splitlines()) == 1
