"""Lost frames, gaps, clock jumps and bad odometry in the stream localizer."""
import logging

import numpy as np
import pytest

from vpr_core.descriptors import Descriptors, pack_codes
from vpr_core.evaluation.bag_report import error_summary
from vpr_core.localization.config import GateConfig, LocalizationConfig, SequenceConfig
from vpr_core.localization.recognizer import EVENTS, PlaceRecognizer
from vpr_core.localization.sequence import sequence_score_matrix
from vpr_core.localization.tracker import SequenceTracker
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.manifest import MapManifest
from vpr_core.mapdb.pose import Pose, quaternions_from_yaw

COUNT, DIM, SPACING = 200, 32, 2.0
VELOCITIES = (0.8, 0.9, 1.0, 1.1, 1.25)


def unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def make_map(places, rng):
    projection = rng.standard_normal((places.shape[1], 64))
    positions = np.zeros((len(places), 3))
    positions[:, 0] = SPACING * np.arange(len(places))
    manifest = MapManifest(model_fingerprint='model-a', descriptor_dim=places.shape[1],
                           code_bits=64, num_places=len(places))
    database = MapDatabase(manifest, Descriptors(places, pack_codes(places @ projection)),
                           positions, quaternions_from_yaw(np.zeros(len(places))),
                           np.arange(len(places), dtype=np.int64) * 10**9)
    return database, projection


@pytest.fixture
def route():
    """200 random places 2 m apart and noisy queries of each: one frame alone is often wrong
    (noise 0.9 per axis against unit rows), ten in a row are not."""
    rng = np.random.default_rng(0)
    places = unit(rng.standard_normal((COUNT, DIM)))
    queries = unit(places + 0.25 * rng.standard_normal((COUNT, DIM)))
    database, projection = make_map(places, rng)
    return database, Descriptors(queries, pack_codes(queries @ projection))


def config(**gate):
    return LocalizationConfig(sequence=SequenceConfig(length=8, velocities=VELOCITIES,
                                                      contrast_window=10),
                              gate=GateConfig(**gate))


def odometry(index):
    return Pose((SPACING * index, 0.0, 0.0))


def test_time_and_odometry_advance_equal_the_frame_count_on_a_regular_stream():
    rng = np.random.default_rng(2)
    places = unit(rng.standard_normal((30, 8)))
    queries = unit(rng.standard_normal((9, 8)))
    sequence = SequenceConfig(length=5, velocities=(0.5, 1.0, 2.0), contrast_window=6)
    offline = sequence_score_matrix(queries @ places.T, 5, velocities=sequence.velocities,
                                    similarity=True, contrast_window=6)
    positions = np.zeros((30, 3))
    positions[:, 0] = 3.0 * np.arange(30)
    counted = SequenceTracker(places, None, 0, sequence)
    timed = SequenceTracker(places, None, 0, sequence)
    both = SequenceTracker(places, None, 0, sequence, positions, 3.0)
    for q in range(len(queries)):
        row = Descriptors(queries[q:q + 1], None)
        counted.push(row)
        timed.push(row, stamp_ns=1_000_000_000 + q * 33_333_333)    # 30 Hz, ns rounding
        both.push(row, stamp_ns=q * 10**8, travel_m=3.0 * q)
        for tracker in (counted, timed, both):
            online = {h.index: h.score for h in tracker.score(np.arange(30))}
            scored = np.array([online.get(n, -np.inf) for n in range(30)])
            assert np.allclose(scored, offline[q], atol=1e-5)
    assert timed.period_s == pytest.approx(0.033333333)


def lossy_stream(seed, loss):
    """Indices 20..179 with ``loss`` of them removed at random (fixed seed)."""
    indices = np.arange(20, 180)
    return indices[np.random.default_rng(seed).random(len(indices)) >= loss]


@pytest.mark.parametrize('with_odometry', [False, True])
def test_the_route_is_tracked_through_lost_frames(route, with_odometry):
    database, queries = route
    kept = lossy_stream(1, 0.6)
    recognizer = PlaceRecognizer(database, None, config())
    results = [recognizer.process(queries[i:i + 1], int(i) * 10**9,
                                  odometry(i) if with_odometry else None) for i in kept]
    accepted = [(i, r.match.index) for i, r in zip(kept, results) if r.accepted]
    # without odometry, spacings over 3 periods restart the window (60 % loss: 1 in 5)
    assert len(accepted) >= (0.8 if with_odometry else 0.5) * len(kept)
    assert all(abs(int(i) - match) <= 1 for i, match in accepted)
    # counting frames instead (stamps that hide the loss, no odometry) loses the route
    counting = PlaceRecognizer(database, None, config())
    hidden = [counting.process(queries[i:i + 1], k * 10**9) for k, i in enumerate(kept)]
    right = sum(r.accepted and abs(int(i) - r.match.index) <= 1 for i, r in zip(kept, hidden))
    assert right < 0.5 * len(accepted)


def test_odometry_places_the_frames_when_the_stamps_hide_the_loss(route):
    database, queries = route
    kept = lossy_stream(3, 0.6)
    recognizer = PlaceRecognizer(database, None, config())
    results = [recognizer.process(queries[i:i + 1], k * 10**9, odometry(i))
               for k, i in enumerate(kept)]
    accepted = [(i, r.match.index) for i, r in zip(kept, results) if r.accepted]
    assert len(accepted) >= 0.8 * len(kept)
    assert all(abs(int(i) - match) <= 1 for i, match in accepted)


def test_a_backward_stamp_resets_the_tracker_and_the_gate(route, caplog):
    database, queries = route
    recognizer = PlaceRecognizer(database, None, config())
    for i in range(40, 60):
        result = recognizer.process(queries[i:i + 1], (100 + i) * 10**9)
    assert result.accepted and result.events == ()
    with caplog.at_level(logging.WARNING, logger='vpr_core.localization.recognizer'):
        looped = recognizer.process(queries[40:41], 140 * 10**9 - 1)     # the bag loops
    assert looped.events == ('clock_jump_back',) and 'clock_jump_back' in caplog.text
    assert looped.rejection_reason == 'warming up' and len(recognizer.tracker.window) == 1
    assert recognizer.state.previous == looped.match.index and recognizer.state.streak == 1
    again = [recognizer.process(queries[i:i + 1], (100 + i) * 10**9) for i in range(41, 60)]
    assert not any(r.events for r in again)
    assert again[-1].accepted and again[-1].match.index == 59
    assert recognizer.event_counts['clock_jump_back'] == 1 and set(EVENTS) == set(
        recognizer.event_counts)


def test_nan_odometry_is_reported_and_ignored(route, caplog):
    database, queries = route
    reference = PlaceRecognizer(database, None, config())
    recognizer = PlaceRecognizer(database, None, config(odometry_tolerance_m=1.0))
    bad = Pose((float('nan'), 0.0, 0.0))
    with caplog.at_level(logging.WARNING, logger='vpr_core.localization.recognizer'):
        for i in range(40, 60):
            pose = bad if i in (50, 51) else odometry(i)
            result = recognizer.process(queries[i:i + 1], i * 10**9, pose)
            plain = reference.process(queries[i:i + 1], i * 10**9)
            assert result.events == (('invalid_odometry',) if i in (50, 51) else ())
            assert result.match.index == plain.match.index
            if i > 45:
                assert result.accepted and result.match.index == i
    assert caplog.text.count('non-finite odometry') == 1       # throttled
    assert np.isfinite(recognizer._travel) and recognizer.event_counts['invalid_odometry'] == 2
    inf = recognizer.process(queries[60:61], 60 * 10**9,
                             Pose((SPACING * 60, 0.0, 0.0), (0.0, 0.0, float('inf'), 1.0)))
    assert inf.events == ('invalid_odometry',) and inf.accepted


@pytest.fixture
def aliased():
    """Places 120..159 look like 20..59 (the route passes the same scenery twice)."""
    rng = np.random.default_rng(5)
    places = unit(rng.standard_normal((COUNT, DIM)))
    places[120:160] = places[20:60]
    queries = unit(places + 0.25 * rng.standard_normal((COUNT, DIM)))
    database, projection = make_map(places, rng)
    return database, Descriptors(queries, pack_codes(queries @ projection))


@pytest.mark.parametrize('jump, periods', [(16, 16), (16, 6), (36, 10), (16, 40)])
def test_a_gap_never_yields_a_wrong_match_in_an_aliased_stretch(aliased, jump, periods):
    """Frames 90..109, then ``periods`` frame periods without a frame while the robot moves
    ``jump`` places (the same speed, faster, or long enough to restart the window), then the
    stretch that looks like 20..59."""
    database, queries = aliased
    after = np.arange(109 + jump, 160)
    stream = np.concatenate([np.arange(90, 110), after])
    stamps = np.concatenate([np.arange(90, 110), 109 + periods + after - after[0]])
    recognizer = PlaceRecognizer(database, None, config())
    results = [recognizer.process(queries[i:i + 1], int(t) * 10**9)
               for i, t in zip(stream, stamps)]
    assert results[20].events == ('gap',)
    assert sum('gap' in r.events for r in results) == 1
    assert recognizer.tracker.restarted is False and (periods > 20) == (
        results[20].frames == 1)
    wrong = [(i, r.match.index) for i, r in zip(stream, results)
             if r.accepted and abs(i - r.match.index) > 1]
    assert wrong == []
    assert not any(r.accepted for r in results[20:22])       # 3 post-gap frames at least
    if periods <= 20:
        assert [r.rejection_reason for r in results[20:22]] == ['after gap', 'after gap']


def test_odometry_bridges_a_gap_and_tells_the_twins_apart(aliased):
    database, queries = aliased
    stream = list(range(90, 110)) + list(range(125, 160))
    stamps = list(range(90, 110)) + list(range(115, 150))     # faster during the gap
    recognizer = PlaceRecognizer(database, None, config())
    results = [recognizer.process(queries[i:i + 1], t * 10**9, odometry(i))
               for i, t in zip(stream, stamps)]
    assert results[20].events == ('gap_bridged',)
    late = [(i, r) for i, r in zip(stream, results) if i >= 125]
    assert all(abs(i - r.match.index) <= 1 for i, r in late if r.accepted)
    # while the 8-frame window still reaches back before the gap (later it is all twins)
    assert sum(r.accepted for _, r in late[:8]) >= 5


def test_the_period_is_a_low_quantile_and_can_be_configured(route):
    database, queries = route
    recognizer = PlaceRecognizer(database, None, config())
    for i in lossy_stream(4, 0.75):
        recognizer.process(queries[i:i + 1], int(i) * 10**9)
    assert recognizer.tracker.period_s == pytest.approx(1.0)
    fixed = LocalizationConfig(sequence=SequenceConfig(frame_period_s=0.5))
    tracker = PlaceRecognizer(database, None, fixed).tracker
    assert tracker.period_s == 0.5


def test_the_covariance_covers_the_errors_with_and_without_gaps(route):
    database, queries = route
    kept = lossy_stream(6, 0.5)
    kept = kept[(kept < 100) | (kept >= 120)]                   # and a burst of 20 lost
    rng = np.random.default_rng(7)
    truth = SPACING * kept + rng.uniform(-0.5, 0.5, len(kept)) * SPACING    # between places
    recognizer = PlaceRecognizer(database, None, config())
    inside, floor = [], (0.5 * SPACING) ** 2
    for i, x in zip(kept, truth):
        result = recognizer.process(queries[i:i + 1], int(i) * 10**9, Pose((x, 0.0, 0.0)))
        covariance = np.asarray(result.covariance).reshape(6, 6)
        assert covariance[0, 0] >= floor and covariance[1, 1] >= floor   # never below
        step = recognizer.tracker.step_places
        assert covariance[0, 0] >= floor + (0.1 * step * SPACING) ** 2 - 1e-9
        if i == kept[kept >= 120][0]:
            assert 'gap_bridged' in result.events and step >= 20
        if result.accepted:
            error = np.asarray(result.pose.position[:2]) - (x, 0.0)
            inside.append(error @ np.linalg.inv(covariance[:2, :2]) @ error <= 5.991)
    assert len(inside) >= 0.7 * len(kept) and np.mean(inside) >= 0.9


def test_the_bag_report_gives_the_median_published_sigma():
    error = np.array([0.5, 1.0, 30.0, np.nan])
    columns = {'error_m': error, 'error_x': error, 'error_y': np.zeros(4),
               'sigma_x_m': np.array([1.0, 2.0, 3.0, 4.0]), 'sigma_y_m': np.array([5.0, 1, 1, 1]),
               'yaw_error_deg': np.full(4, np.nan), 'place_error': np.full(4, np.nan)}
    summary = error_summary(columns, np.array([True, True, True, True]))
    assert summary['count'] == 3 and summary['median_sigma_m'] == 3.0    # of 5, 2 and 3
    assert summary['within_95_ellipse'] == pytest.approx(2 / 3)          # 30 m is 10 sigma
