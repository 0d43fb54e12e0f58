"""SLAM mode's adapter pieces without a ROS graph: the depth cache matched by stamp, the depth
registration check and the keyframe table that follows the detector's rows."""
import numpy as np
import pytest

from vpr_ros.slam import KeyframeTable, registered, SensorCache


def test_depth_is_matched_by_stamp_within_the_tolerance():
    cache = SensorCache(depth_history=3)
    assert cache.depth_at(100, 10) is None and cache.camera() is None
    for stamp in (100, 200, 300, 400):
        cache.add_depth(stamp, np.full((2, 2), stamp, dtype=np.uint16))
    assert cache.depth_at(205, 10)[0, 0] == 200
    assert cache.depth_at(250, 10) is None
    assert cache.depth_at(100, 10) is None          # only the newest three are kept
    half = np.arange(12, dtype=np.uint16).reshape(3, 4)
    assert registered(half, 6, 8) and registered(half, 3, 4)
    assert not registered(half, 6, 6)                # another aspect ratio: not registered


def test_keyframe_table_follows_the_detector_rows():
    table = KeyframeTable(None)
    table.add(0, 1_000_000_001, None)
    table.add(1, 2_000_000_002, np.array([1.0, 2.0, 3.0]))
    ids, stamps, positions = table.keyframe_rows(np.array([1, 0]))
    assert list(ids) == [1, 0] and list(stamps) == [2_000_000_002, 1_000_000_001]
    assert np.allclose(positions[0], [1, 2, 3]) and np.all(np.isnan(positions[1]))
    with pytest.raises(ValueError, match='twice'):
        table.add(1, 3, None)
    table.add(3, 4_000_000_004, np.zeros(3))        # row 2 failed after the detector kept it
    ids, stamps, positions = table.keyframe_rows(np.array([2, 3]))
    assert list(ids) == [2, 3] and list(stamps) == [0, 4_000_000_004]
    assert np.all(np.isnan(positions[0])) and np.allclose(positions[1], 0.0)
