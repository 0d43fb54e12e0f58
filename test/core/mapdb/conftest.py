"""Fixtures of the map database tests."""
import pytest
from synthetic_maps import clustered_descriptors, make_map


@pytest.fixture
def small_map():
    """(map of 200 places, queries [200])."""
    places, queries = clustered_descriptors(200)
    return make_map(places), queries
