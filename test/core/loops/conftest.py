"""The rtabmap_loop sample for the loop-closure tests."""
from pathlib import Path

import pytest


RTABMAP = Path(__file__).resolve().parents[3] / '..' / 'shared' / 'data' / 'rtabmap_loop'


@pytest.fixture(scope='session')
def rtabmap() -> Path:
    """The shared rtabmap_loop folder; tests using it skip without it."""
    if not (RTABMAP / 'samples' / '84.jpg').is_file():
        pytest.skip('shared rtabmap_loop data not available')
    return RTABMAP
