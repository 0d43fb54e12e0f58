"""Statistics behind /diagnostics and the status summary."""
import math

import numpy as np
import pytest

from vpr_ros.diagnostics import (diagnostic_array, error_kind, LEVEL_ERROR, LEVEL_OK, LEVEL_WARN,
                                 node_status, NodeStatistics, RateMeter, StampGaps)
from vpr_ros.conversions import stamp_from_seconds


def test_rate_meter():
    meter = RateMeter(window_s=5.0)
    for i in range(11):
        meter.tick(100.0 + 0.1 * i)
    assert meter.rate_hz(101.0) == 10.0
    assert meter.rate_hz(110.0) == 0.0


def test_statistics_values():
    stats = NodeStatistics()
    assert math.isnan(stats.latency_percentiles_ms()[0])
    for i in range(100):
        stats.on_input(now_s=float(i) / 30)
        stats.on_processed(float(i + 1), score=0.5, accepted=i % 2 == 0, now_s=float(i) / 30)
    stats.on_rejected('zero_size')
    stats.on_rejected('zero_size')
    values = stats.values(dropped=7, now_s=99 / 30)
    assert values['received'] == '100' and values['processed'] == '100'
    assert values['accepted'] == '50' and values['dropped'] == '7'
    assert values['rejected_inputs'] == '2' and values['rejected.zero_size'] == '2'
    assert float(values['latency_p50_ms']) == 50.5
    assert float(values['latency_p95_ms']) == 95.0
    assert abs(float(values['input_rate_hz']) - 30.0) < 0.1
    assert not stats.input_is_stale(now_s=4.0) and stats.input_is_stale(now_s=20.0)


def test_status_levels():
    assert node_status('unconfigured', 'configure failed: x', True, True, False)[0] == \
        LEVEL_ERROR
    assert node_status('inactive', '', True, True, False)[0] == LEVEL_OK
    assert node_status('active', '', True, True, True)[0] == LEVEL_WARN
    assert node_status('active', '', True, False, True) == (LEVEL_OK, 'active, localizing')
    assert node_status('active', '', True, False, False)[0] == LEVEL_ERROR


def test_array_message():
    array = diagnostic_array('vpr', 'cpu', LEVEL_OK, 'ok', {'a': '1'}, stamp_from_seconds(2.0))
    status = array.status[0]
    assert status.hardware_id == 'cpu' and status.values[0].key == 'a'
    assert array.header.stamp.sec == 2


def feed(gaps, stamps_s, start_s=0.0):
    for index, stamp_s in enumerate(stamps_s):
        gaps.add(int(round(stamp_s * 1e9)), start_s + 0.01 * index)


def test_regular_jittered_stream_loses_nothing():
    gaps = StampGaps()
    rng = np.random.default_rng(0)
    feed(gaps, 10.0 + np.arange(300) / 30.0 + rng.uniform(-0.003, 0.003, 300))
    assert gaps.lost == 0 and gaps.gaps == 0 and gaps.jumps_back == 0
    assert abs(gaps.period_ns() / 1e6 - 33.3) < 1.0
    assert gaps.window(3.0) == (300, 0)


@pytest.mark.parametrize('loss', [0.1, 0.5, 0.75])
def test_random_loss_is_found_from_the_stamps(loss):
    rng = np.random.default_rng(1)
    kept = np.flatnonzero(rng.random(2000) >= loss)
    gaps = StampGaps()
    feed(gaps, 5.0 + kept / 30.0)
    missing = kept[-1] - kept[0] + 1 - len(kept)
    assert abs(gaps.period_ns() / 1e6 - 1000 / 30) < 0.01
    assert gaps.lost == missing   # a plain median period would miss most of it at 75%
    received, lost = gaps.window(0.01 * len(kept))
    assert abs(lost / (received + lost) - loss) < 0.05


def test_clock_jump_back_and_pause_are_not_loss():
    gaps = StampGaps()
    feed(gaps, np.arange(20) * 0.1 + 100.0)
    feed(gaps, np.arange(20) * 0.1 + 50.0)      # the bag looped: stamps 50 s earlier
    feed(gaps, np.arange(20) * 0.1 + 80.0)      # paused 28 s (stale input, not loss)
    feed(gaps, np.array([82.0, 82.1, 82.5]))    # then 3 frames lost
    assert gaps.jumps_back == 1 and gaps.lost == 3 and gaps.gaps == 1
    assert gaps.period_ns() == pytest.approx(1e8, rel=1e-6)


def test_statistics_report_failures_events_and_input_loss():
    stats = NodeStatistics()
    for index in range(30):
        if index % 4 != 3:                          # 7 of 30 frames lost
            stats.on_input(now_s=index * 0.05, camera=0, stamp_ns=index * 50_000_000)
        stats.on_input(now_s=index * 0.05, camera=1, stamp_ns=index * 50_000_000)
    stats.on_input(now_s=1.6, camera=1, stamp_ns=0)  # camera 1 jumps back
    stats.on_frame_error('RuntimeError', 'boom')
    assert stats.last_failure == 'RuntimeError: boom'
    stats.on_rejected('too_large')
    stats.on_events(('clock_jump_back', 'clock_jump_back', 'gap'))
    stats.on_worker_restart()
    values = stats.values(dropped=0, now_s=1.6)
    assert values['frame_errors'] == '1' and values['frame_errors.RuntimeError'] == '1'
    assert values['rejected.too_large'] == '1' and values['worker_restarts'] == '1'
    assert values['events.clock_jump_back'] == '2' and values['events.gap'] == '1'
    assert values['clock_jumps_back'] == '1'
    assert values['camera0.input_period_ms'] == '50.0' and values['input_lost'] == '7'
    assert values['camera1.input_loss_ratio'] == '0.000'
    assert float(values['camera0.input_loss_ratio']) == pytest.approx(7 / 30, abs=1e-3)
    assert stats.input_loss_ratio(now_s=1.6) == pytest.approx(7 / 61, abs=1e-3)
    stats.on_processed(5.0, 0.5, True)
    assert stats.last_failure == ''


def test_status_for_failures_and_loss():
    assert node_status('active', '', True, False, True, worker_failure='X: y')[0] == LEVEL_ERROR
    level, message = node_status('active', '', True, False, True, input_loss=0.3)
    assert level == LEVEL_WARN and '30% of the camera frames missing' in message
    assert node_status('active', '', True, False, True, input_loss=0.1)[0] == LEVEL_OK
    level, message = node_status('active', '', True, False, True, last_failure='too_large')
    assert level == LEVEL_WARN and 'too_large' in message


def test_error_kinds_name_the_class():
    import cv2
    assert error_kind(RuntimeError('x')) == 'RuntimeError'
    with pytest.raises(cv2.error) as info:
        cv2.cvtColor(np.zeros((2, 2, 5), np.uint8), cv2.COLOR_BGR2RGB)
    assert error_kind(info.value) == 'cv2.error'
