"""CameraModel: guessed and scaled intrinsics, validation."""
import math
import subprocess
import sys

import numpy as np
import pytest

from vpr_core.errors import ConfigError
from vpr_core.geometry.camera import CameraModel


def test_guess_has_the_requested_field_of_view():
    camera = CameraModel.guess(640, 480, hfov_deg=90.0)
    assert camera.fx == pytest.approx(320.0) and camera.fy == camera.fx
    assert (camera.cx, camera.cy) == (319.5, 239.5) and camera.distortion == ()
    half = math.degrees(math.atan((camera.width / 2) / camera.fx))
    assert 2 * half == pytest.approx(90.0)


def test_matrix_is_the_pinhole_k():
    camera = CameraModel(500.0, 510.0, 320.0, 240.0, 640, 480, (0.1, -0.05, 0.0, 0.0, 0.0))
    assert np.array_equal(camera.matrix, [[500, 0, 320], [0, 510, 240], [0, 0, 1]])
    assert camera.matrix.dtype == np.float64


def test_scaled_maps_pixel_centres_and_keeps_distortion():
    camera = CameraModel(500.0, 500.0, 319.5, 239.5, 640, 480, (0.1, 0.0, 0.0, 0.0, 0.0))
    half = camera.scaled(320, 240)
    assert (half.fx, half.fy, half.cx, half.cy) == (250.0, 250.0, 159.5, 119.5)
    assert half.distortion == camera.distortion and camera.scaled(640, 480) is camera
    back = half.scaled(640, 480)
    assert (back.fx, back.cx, back.cy) == (camera.fx, camera.cx, camera.cy)


@pytest.mark.parametrize('kwargs', [dict(fx=0.0), dict(fy=float('nan')), dict(width=0),
                                    dict(distortion=(0.1, 0.2, 0.3))])
def test_bad_intrinsics_are_refused(kwargs):
    values = dict(fx=500.0, fy=500.0, cx=320.0, cy=240.0, width=640, height=480)
    values.update(kwargs)
    with pytest.raises(ConfigError):
        CameraModel(**values)


def test_guess_refuses_an_impossible_field_of_view():
    with pytest.raises(ConfigError, match='hfov'):
        CameraModel.guess(640, 480, hfov_deg=180.0)


def test_config_and_camera_modules_load_no_opencv():
    """Loop and node configs import VerifyConfig and CameraModel: they must stay cheap."""
    code = ('import sys\nimport vpr_core.geometry.config, vpr_core.geometry.camera\n'
            "print('cv2' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ['False', 'False']
