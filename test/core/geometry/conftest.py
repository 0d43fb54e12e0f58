"""Real frames and a known camera for the geometric verification tests."""
from pathlib import Path

import pytest

from vpr_core.geometry.camera import CameraModel
from vpr_core.image import load_image_file

DATA = Path(__file__).resolve().parents[3] / '..' / 'shared' / 'data'


@pytest.fixture(scope='session')
def rtabmap_frame():
    """Frame k (1-based, as the file names) of rtabmap_loop as RGB uint8 [384, 512, 3]."""
    folder = DATA / 'rtabmap_loop' / 'samples'
    if not folder.is_dir():
        pytest.skip('shared rtabmap_loop data not available')
    return lambda k: load_image_file(folder / f'{k}.jpg')


@pytest.fixture(scope='session')
def toy_photos():
    """The vpr_methods_eval_toy photos (22), RGB uint8, different places (by file)."""
    folder = DATA / 'vpr_methods_eval_toy'
    if not folder.is_dir():
        pytest.skip('shared vpr_methods_eval_toy data not available')
    return [load_image_file(p) for p in sorted(folder.rglob('*.jpg'))]


@pytest.fixture(scope='session')
def camera():
    """A known pinhole camera for 512x384 frames (about 65 degrees horizontal FOV)."""
    return CameraModel(400.0, 410.0, 250.0, 195.0, 512, 384)
