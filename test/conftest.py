"""Test-run isolation: own DDS domain, localhost-only discovery, CPU-only by default."""
import os
import random

import pytest


def pytest_configure(config):
    # Every run gets its own DDS domain so parallel runs on one host never see each other.
    os.environ.setdefault('ROS_DOMAIN_ID', str(random.SystemRandom().randint(1, 100)))
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')
    os.environ.setdefault('MPLBACKEND', 'Agg')


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
