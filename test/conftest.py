"""Test-run isolation (own DDS domain, localhost-only discovery, CPU-only by default) and the
shared Nordland data."""
import os
from pathlib import Path
import random
import tempfile

import pytest

NORDLAND = Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data' / 'nordland_64x32'


def pytest_configure(config):
    # Every run gets its own DDS domain so parallel runs on one host never see each other.
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 100)))
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')
    os.environ.setdefault('MPLBACKEND', 'Agg')
    # caches (ONNX graphs, map verification) of this run only, never the user's
    os.environ['VPR_CACHE'] = tempfile.mkdtemp(prefix='vpr-cache-')


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests use tiny tensors: thread hand-offs cost more than the arithmetic, badly so on a
    busy 2-core machine (a tiny forward took 370 ms on two threads, 2 ms on one)."""
    torch = pytest.importorskip('torch')
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope='session')
def nordland() -> Path:
    """The shared Nordland 64x32 folder (``../shared/data``); tests using it skip without it."""
    if not NORDLAND.is_dir():
        pytest.skip('shared Nordland data not available')
    return NORDLAND


def pytest_collection_modifyitems(config, items):
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason='needs CUDA')
    for item in items:
        if 'gpu' in item.keywords:
            item.add_marker(skip)
