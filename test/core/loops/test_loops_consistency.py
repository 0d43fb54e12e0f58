"""Temporal consistency: runs of consecutive keyframes with neighbouring candidates."""
from vpr_core.loops.consistency import ConsistencyFilter


def test_runs_grow_along_neighbouring_matches_in_either_direction():
    flt = ConsistencyFilter(window=1)
    assert flt.update([10, 50]) == {10: 1, 50: 1}
    assert flt.update([11, 70]) == {11: 2, 70: 1}
    assert flt.update([12]) == {12: 3}
    assert flt.update([11]) == {11: 4}          # backwards along the old path
    assert flt.update([13]) == {13: 1}          # 2 away from 11: outside the window


def test_keyframe_without_candidates_ends_every_run_and_reset_forgets():
    flt = ConsistencyFilter(window=2)
    flt.update([5])
    flt.update([6])
    assert flt.update([]) == {}
    assert flt.update([7]) == {7: 1}
    flt.update([8])
    flt.reset()
    assert flt.update([9]) == {9: 1}


def test_a_candidate_takes_the_longest_supporting_run():
    flt = ConsistencyFilter(window=2)
    flt.update([1])
    flt.update([2, 30])
    assert flt.update([3, 31]) == {3: 3, 31: 2}
