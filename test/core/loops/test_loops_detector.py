"""LoopDetector on a toy model: exclusion of the recent stretch, consistency, sessions.

The toy images (48 x 48) are below ``verify.min_image_side``: verification steps aside and
loops need ``unverified_consistency`` consecutive agreeing keyframes (accepted unverified).
"""
import dataclasses

import pytest

from vpr_core.errors import IncompatibleMapError, MapError
from vpr_core.loops.config import LoopConfig
from vpr_core.loops.detector import LoopDetector, with_verification
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.keyframe import KeyframeConfig
from vpr_core.mapdb.pose import Pose

from loop_toys import place_image, PlaceExtractor, textured_image

CONFIG = LoopConfig(min_time_gap_s=10.0, min_travel_gap_m=5.0, min_score=0.2,
                    unverified_min_score=0.5, consistency=2, unverified_consistency=3,
                    keyframes=KeyframeConfig(enabled=False))


def _feed(detector, places, start_s=0.0, variant=1, odometry=None):
    results = []
    for i, place in enumerate(places):
        pose = None if odometry is None else odometry(i)
        results.append(detector.process(place_image(place, variant), start_s + i, pose))
    return results


def test_second_pass_closes_loops_after_the_consistency_run():
    detector = LoopDetector(PlaceExtractor(), CONFIG)
    first = _feed(detector, range(30), variant=1)
    assert all(r.loop is None for r in first)
    assert {r.reason for r in first} <= {'too_recent', 'low_score', 'inconsistent'}
    second = _feed(detector, range(30), start_s=30.0, variant=2)
    loops = [r.loop for r in second]
    # keyframes 30 and 31 build the run; from the third on every keyframe closes a loop
    assert [r.reason for r in second[:2]] == ['inconsistent', 'inconsistent']
    assert all(loop is not None for loop in loops[2:])
    for k, loop in enumerate(loops[2:], start=2):
        assert (loop.query_index, loop.match_index, loop.place_id) == (30 + k, k, k)
        assert loop.query_stamp_ns == (30 + k) * 10**9 and loop.match_stamp_ns == k * 10**9
        assert loop.match_session == '' and not loop.verified
        assert loop.verification.reason == 'too_small' and loop.verification.pose is None
        assert loop.candidates[0] == k
    assert detector.size == 60 and detector.counts['loop'] == 28


def test_recent_keyframes_are_never_candidates():
    """A robot standing still: identical frames. Within the time gap nothing is searched;
    with odometry that measures no travel, nothing ever is (the travel gap)."""
    detector = LoopDetector(PlaceExtractor(), CONFIG)
    results = _feed(detector, [7] * 25)
    # keyframe 10 (10 s) is the first old enough to see keyframe 0
    assert [r.reason for r in results[:10]] == ['too_recent'] * 10
    assert results[10].reason == 'inconsistent'
    loops = [r.loop for r in results if r.loop is not None]
    assert loops and all(loop.query_stamp_ns - loop.match_stamp_ns >= 10 * 10**9
                         for loop in loops)
    still = LoopDetector(PlaceExtractor(), CONFIG)
    results = _feed(still, [7] * 25, odometry=lambda i: Pose())
    assert {r.reason for r in results} == {'too_recent'}
    moving = LoopDetector(PlaceExtractor(), CONFIG)
    results = _feed(moving, [7] * 25, odometry=lambda i: Pose((0.3 * i, 0.0, 0.0)))
    # 10 s and 5 m: keyframe 17 (at 5.1 m) is the first to see keyframe 0
    assert {r.reason for r in results[:17]} == {'too_recent'}
    assert results[17].reason != 'too_recent'


def test_keyframes_by_travel_with_odometry_and_every_frame_without():
    config = dataclasses.replace(CONFIG, keyframes=KeyframeConfig(min_distance_m=1.0,
                                                                  min_heading_deg=0.0))
    detector = LoopDetector(PlaceExtractor(), config)
    results = _feed(detector, range(10), odometry=lambda i: Pose((0.5 * i, 0.0, 0.0)))
    assert [r.keyframe for r in results] == [True, False] * 5
    assert [r.keyframe_index for r in results[::2]] == [0, 1, 2, 3, 4]
    assert results[1].reason == 'not_keyframe'
    timed = LoopDetector(PlaceExtractor(), dataclasses.replace(
        CONFIG, keyframes=KeyframeConfig(min_interval_s=2.0)))
    assert [r.keyframe for r in _feed(timed, range(6))] == [True, False] * 3


def test_clock_jump_back_and_invalid_odometry_are_events():
    detector = LoopDetector(PlaceExtractor(), CONFIG)
    detector.process(place_image(1), 5.0)
    result = detector.process(place_image(2), 4.0, Pose((float('nan'), 0.0, 0.0)))
    assert result.events == ('clock_jump_back', 'invalid_odometry')
    assert result.keyframe


def test_session_saved_and_reloaded_as_previous_closes_loops_across_sessions(tmp_path):
    extractor = PlaceExtractor()
    first = LoopDetector(extractor, CONFIG)
    _feed(first, range(20), variant=1)
    map_id = first.save(tmp_path / 'session1')
    previous = MapDatabase.load(tmp_path / 'session1')
    assert previous.size == 20 and previous.manifest.map_id == map_id
    assert previous.manifest.synthetic_poses        # no odometry came
    assert (tmp_path / 'session1' / 'local_features.json').is_file()
    second = LoopDetector(extractor, CONFIG, previous=previous)
    results = _feed(second, range(20), start_s=1000.0, variant=2)
    loops = [r.loop for r in results if r.loop is not None]
    assert len(loops) == 18
    assert all(loop.match_session == map_id and loop.match_index == loop.query_index - 20
               for loop in loops)
    assert all(loop.place_id == loop.match_index for loop in loops)
    # session 2 saved: both sessions in one map, this session's place ids after session 1's
    second.save(tmp_path / 'both')
    both = MapDatabase.load(tmp_path / 'both')
    assert both.size == 40 and both.place_ids.tolist() == list(range(40))


def test_previous_map_of_another_model_is_refused(tmp_path):
    first = LoopDetector(PlaceExtractor(), CONFIG)
    _feed(first, range(3))
    first.save(tmp_path / 'map')
    other = PlaceExtractor()
    other.fingerprint = 'another-model'
    with pytest.raises(IncompatibleMapError, match='another-model'):
        LoopDetector(other, CONFIG, previous=MapDatabase.load(tmp_path / 'map'))
    with pytest.raises(MapError, match='nothing to save'):
        LoopDetector(PlaceExtractor(), CONFIG).save(tmp_path / 'empty')


def test_update_config_and_verification_switch():
    detector = LoopDetector(PlaceExtractor(), CONFIG)
    _feed(detector, range(15))
    detector.update_config(dataclasses.replace(CONFIG, unverified_min_score=0.99))
    results = _feed(detector, range(15), start_s=15.0, variant=2)
    assert all(r.loop is None for r in results)         # noisy repeats score below 0.99
    off = with_verification(CONFIG, False)
    assert off.verify.features == 'none' and with_verification(CONFIG, True) is CONFIG
    detector.reset()
    assert detector.size == 30


def test_reset_restarts_the_consistency_run():
    """Two keyframes build a run toward the third's loop; after reset() the third keyframe
    starts a new run instead of closing the loop (the database is kept)."""
    control = LoopDetector(PlaceExtractor(), CONFIG)
    reset = LoopDetector(PlaceExtractor(), CONFIG)
    for detector in (control, reset):
        _feed(detector, range(15))
        assert [r.loop for r in _feed(detector, [0, 1], start_s=15.0, variant=2)] == \
            [None, None]
    reset.reset()
    assert reset.size == control.size == 17
    closed = control.process(place_image(2, 2), 17.0)
    restarted = reset.process(place_image(2, 2), 17.0)
    assert closed.loop is not None and closed.loop.match_index == 2
    assert restarted.loop is None and restarted.reason == 'inconsistent'


@pytest.mark.parametrize('field, value', [('consistency', 0), ('top_k', 0),
                                          ('unverified_consistency', 1),
                                          ('min_score', 0.6), ('min_time_gap_s', -1.0)])
def test_bad_config_is_refused(field, value):
    from vpr_core.errors import ConfigError
    with pytest.raises(ConfigError, match=field):
        dataclasses.replace(CONFIG, **{field: value})


def test_weak_geometric_evidence_needs_the_previous_keyframe():
    """A view verified at the bare inlier threshold is a loop only with the previous
    keyframe's verified neighbouring candidate (inliers summed), never alone."""
    config = dataclasses.replace(CONFIG, evidence_inliers=50, consistency_window=1)
    detector = LoopDetector(PlaceExtractor(), config)
    assert detector._enough_evidence(12, 50, None)
    assert not detector._enough_evidence(12, 30, None)
    assert detector._enough_evidence(12, 30, (11, 20))
    assert detector._enough_evidence(12, 30, (13, 25))
    assert not detector._enough_evidence(12, 30, (11, 19))      # 49 < 50
    assert not detector._enough_evidence(12, 30, (20, 200))     # not a neighbour
    with pytest.raises(Exception, match='evidence_inliers'):
        LoopConfig(evidence_inliers=-1)


def _textured_session(tmp_path, config=CONFIG):
    """Session 1 (20 textured keyframes with ORB features) saved to tmp_path / 'map'."""
    first = LoopDetector(PlaceExtractor(), config)
    for place in range(20):
        first.process(textured_image(place, 1), float(place))
    first.save(tmp_path / 'map')
    assert (tmp_path / 'map' / 'local_features_keypoints.npy').is_file()
    return MapDatabase.load(tmp_path / 'map')


def _second_session(detector):
    return [detector.process(textured_image(place, 2), 1000.0 + place) for place in range(20)]


def test_previous_features_of_another_kind_are_dropped_at_load(tmp_path, caplog):
    previous = _textured_session(tmp_path)
    sift = dataclasses.replace(CONFIG, verify=dataclasses.replace(CONFIG.verify,
                                                                  features='sift'))
    second = LoopDetector(PlaceExtractor(), sift, previous=previous)
    assert "store orb local features but verify.features is 'sift'" in caplog.text
    results = _second_session(second)          # raised ConfigError before
    loops = [r.loop for r in results if r.loop is not None]
    assert len(loops) == 18 and all(not loop.verified for loop in loops)
    assert {loop.verification.reason for loop in loops} == {'no_features'}
    assert second.counts['no_features'] == 1       # the run's second keyframe (consistent)


def test_missing_stored_features_give_reason_no_features(tmp_path, caplog):
    previous = _textured_session(tmp_path)
    (tmp_path / 'map' / 'local_features_keypoints.npy').unlink()
    second = LoopDetector(PlaceExtractor(), CONFIG, previous=previous)
    assert 'without geometric verification' in caplog.text
    loops = [r.loop for r in _second_session(second) if r.loop is not None]
    assert len(loops) == 18
    assert all(loop.verification.reason == 'no_features' and loop.verification.pose is None
               for loop in loops)
    assert second.counts['no_features'] == 1 and 'too_small' not in second.counts


def _moving(i):
    return Pose((2.0 * i, 1.0, 0.0))


@pytest.mark.parametrize('first_posed', [True, False])
def test_sessions_with_and_without_odometry_save_with_synthetic_poses(tmp_path, caplog,
                                                                      first_posed):
    """One session with odometry, the other without (both orders): the save keeps both
    sessions, with synthetic poses for every row (append raised MapError before)."""
    first = LoopDetector(PlaceExtractor(), CONFIG)
    _feed(first, range(10), odometry=_moving if first_posed else None)
    first.save(tmp_path / 'one')
    previous = MapDatabase.load(tmp_path / 'one')
    assert previous.manifest.synthetic_poses != first_posed
    second = LoopDetector(PlaceExtractor(), CONFIG, previous=previous)
    _feed(second, range(10, 15), start_s=100.0, odometry=None if first_posed else _moving)
    second.save(tmp_path / 'both')
    both = MapDatabase.load(tmp_path / 'both')
    assert both.size == 15 and both.manifest.synthetic_poses
    assert both.positions[:, 0].tolist() == [float(i) for i in range(15)]
    assert 'synthetic poses for all 15 keyframes' in caplog.text


def test_session_is_posed_only_when_every_keyframe_had_odometry(tmp_path):
    late = LoopDetector(PlaceExtractor(), CONFIG)       # odometry from the 4th keyframe on
    _feed(late, range(8), odometry=lambda i: None if i < 3 else _moving(i))
    late.save(tmp_path / 'late')
    saved = MapDatabase.load(tmp_path / 'late')
    assert saved.manifest.synthetic_poses
    assert saved.positions[:, 0].tolist() == [float(i) for i in range(8)]
    gap = LoopDetector(PlaceExtractor(), CONFIG)        # odometry lost after the 4th
    _feed(gap, range(8), odometry=lambda i: _moving(i) if i < 4 else None)
    gap.save(tmp_path / 'gap')
    assert MapDatabase.load(tmp_path / 'gap').manifest.synthetic_poses
    full = LoopDetector(PlaceExtractor(), CONFIG)
    _feed(full, range(8), odometry=_moving)
    full.save(tmp_path / 'full')
    saved = MapDatabase.load(tmp_path / 'full')
    assert not saved.manifest.synthetic_poses
    assert saved.positions.tolist() == [[2.0 * i, 1.0, 0.0] for i in range(8)]
