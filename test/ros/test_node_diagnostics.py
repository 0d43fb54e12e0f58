"""Statistics behind /diagnostics and the status summary."""
import math

from vpr_ros.diagnostics import (diagnostic_array, LEVEL_ERROR, LEVEL_OK, LEVEL_WARN,
                                 node_status, NodeStatistics, RateMeter)
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
