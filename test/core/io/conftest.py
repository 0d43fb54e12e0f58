"""Fixtures of the I/O tests: tiny models and odd-sized images."""
import numpy as np
import pytest

from io_tiny_models import tiny_model


@pytest.fixture(params=['float', 'hash', 'two_branch'])
def branch_model(request):
    return tiny_model(request.param)


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    sizes = [(30, 40), (28, 28), (50, 33), (61, 70), (28, 29)]
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]
