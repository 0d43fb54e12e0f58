"""The one-slot buffer and the worker thread (newest frame wins, drops counted, throttling)."""
import threading
import time

import pytest

from vpr_ros.worker import Frame, FrameWorker, LatestFrameSlot, SupervisedWorker


def frame(camera, value):
    return Frame(camera, value, time.monotonic())


def test_newest_frame_wins_and_drops_are_counted():
    slot = LatestFrameSlot(1)
    for value in range(5):
        slot.put(frame(0, value))
    assert slot.take(0.0).message == 4 and slot.dropped == 4
    assert slot.take(0.01) is None
    slot.put(frame(0, 9))
    slot.clear()
    assert slot.dropped == 5 and slot.take(0.0) is None


def test_cameras_are_served_round_robin():
    slot = LatestFrameSlot(3)
    for camera in (0, 1, 2):
        slot.put(frame(camera, camera))
    order = [slot.take(0.0).camera for _ in range(3)]
    assert order == [0, 1, 2]
    slot.put(frame(2, 'a'))
    slot.put(frame(0, 'b'))
    assert [slot.take(0.0).camera for _ in range(2)] == [0, 2]


def test_worker_takes_the_newest_frame_after_a_slow_one():
    slot = LatestFrameSlot(1)
    seen, gate, started = [], threading.Event(), threading.Event()

    def handle(item):
        seen.append(item.message)
        started.set()
        assert gate.wait(10.0)
    worker = FrameWorker(slot, handle)
    worker.start()
    slot.put(frame(0, 0))
    assert started.wait(10.0)
    for value in range(1, 40):
        slot.put(frame(0, value))
    gate.set()
    deadline = time.monotonic() + 10.0
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop() and not worker.alive
    assert seen == [0, 39] and slot.dropped == 38


def test_worker_throttles_to_max_rate():
    slot = LatestFrameSlot(1)
    times = []
    worker = FrameWorker(slot, lambda item: times.append(time.monotonic()), max_rate_hz=20.0)
    worker.start()
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline:
        slot.put(frame(0, 1))
        time.sleep(0.002)
    worker.stop()
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert 2 <= len(times) <= 11 and min(gaps) >= 0.045
    with pytest.raises(ValueError):
        worker.set_max_rate(-1.0)


def test_an_unexpected_error_stops_the_worker_loudly():
    slot = LatestFrameSlot(1)
    errors = []
    hook_calls = []
    previous_hook = threading.excepthook
    threading.excepthook = hook_calls.append
    try:
        worker = FrameWorker(slot, lambda item: 1 / 0, on_error=errors.append)
        worker.start()
        slot.put(frame(0, 1))
        deadline = time.monotonic() + 2.0
        while worker.alive and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        threading.excepthook = previous_hook
    assert not worker.alive and isinstance(worker.error, ZeroDivisionError)
    assert len(errors) == 1 and len(hook_calls) == 1


class Killer(BaseException):
    """Passes a handler's ``except Exception``: stops the worker thread."""


def wait_until(predicate, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def test_a_supervised_worker_is_restarted_and_recovers(monkeypatch):
    monkeypatch.setattr(threading, 'excepthook', lambda args: None)
    slot, served, stops = LatestFrameSlot(1), [], []

    def handle(item):
        if item.message == 'poison':
            raise Killer('poison')
        served.append(item.message)
        supervisor.served()
    supervisor = SupervisedWorker(slot, handle, on_stopped=lambda e, r: stops.append((e, r)))
    supervisor.start()
    slot.put(frame(0, 'poison'))
    assert wait_until(lambda: stops)
    assert supervisor.failure == 'Killer: poison' and supervisor.restarts == 1
    assert stops[0][1] is True and wait_until(lambda: supervisor.alive)
    slot.put(frame(0, 'good'))
    assert wait_until(lambda: served == ['good'])
    assert supervisor.failure == ''
    assert supervisor.stop() and not supervisor.alive


def test_a_supervised_worker_gives_up_after_restarts_without_a_frame(monkeypatch):
    monkeypatch.setattr(threading, 'excepthook', lambda args: None)
    slot, stops = LatestFrameSlot(1), []

    def handle(item):
        raise Killer(item.message)
    supervisor = SupervisedWorker(slot, handle, max_restarts=2,
                                  on_stopped=lambda e, r: stops.append(r))
    supervisor.start()
    for value in range(5):
        if False in stops:
            break
        slot.put(frame(0, value))
        assert wait_until(lambda: len(stops) > value)
    assert stops == [True, True, False] and supervisor.restarts == 2
    assert not supervisor.alive and supervisor.failure == 'Killer: 2'
    supervisor.stop()


def test_a_stopped_supervised_worker_is_not_restarted():
    slot, stops = LatestFrameSlot(1), []
    supervisor = SupervisedWorker(slot, lambda item: None, on_stopped=lambda e, r: stops.append(r))
    supervisor.start()
    assert supervisor.alive and supervisor.stop()
    supervisor.check()
    assert not supervisor.alive and stops == []


def test_a_worker_thread_that_ended_silently_is_restarted_by_the_watchdog():
    slot, stops, served = LatestFrameSlot(1), [], []
    supervisor = SupervisedWorker(slot, lambda item: served.append(item.message),
                                  on_stopped=lambda e, r: stops.append((str(e), r)))
    supervisor.start()
    supervisor._worker.stop()  # the thread ends without an error: a bug in the loop
    supervisor.check()
    assert stops == [('the worker thread ended', True)] and supervisor.alive
    slot.put(frame(0, 'after'))
    assert wait_until(lambda: served == ['after'])
    supervisor.stop()
