"""Newest-frame-wins buffering and the worker thread that runs inference off the executor.

Subscription callbacks only call :meth:`LatestFrameSlot.put` (a dict assignment under a lock),
so the executor never waits for a model. The :class:`FrameWorker` thread takes the newest
frame of each camera in turn, throttled to ``max_rate_hz``; a frame overwritten before the
worker took it is counted as dropped. :class:`SupervisedWorker` restarts a worker whose
thread stopped on an error and says so.
"""
from __future__ import annotations

from dataclasses import dataclass
import threading
import time
from typing import Any, Callable


@dataclass(frozen=True)
class Frame:
    """One received message waiting for the worker.

    ``camera`` is the index of the input topic, ``message`` the ROS message as received and
    ``received_s`` the monotonic receive time (for latency).
    """

    camera: int
    message: Any
    received_s: float


class LatestFrameSlot:
    """One slot per camera; a new frame replaces the unprocessed one and counts a drop."""

    def __init__(self, cameras: int = 1) -> None:
        if cameras < 1:
            raise ValueError(f'need at least one camera, got {cameras}')
        self._cameras = cameras
        self._frames: dict[int, Frame] = {}
        self._next_camera = 0
        self._dropped = 0
        self._ready = threading.Condition()

    @property
    def dropped(self) -> int:
        """Frames overwritten (or cleared) before the worker took them."""
        with self._ready:
            return self._dropped

    def put(self, frame: Frame) -> None:
        """Store ``frame`` as the newest of its camera; never blocks on the worker."""
        with self._ready:
            if frame.camera in self._frames:
                self._dropped += 1
            self._frames[frame.camera] = frame
            self._ready.notify()

    def take(self, timeout_s: float) -> Frame | None:
        """Newest pending frame, cameras served round-robin; None after ``timeout_s``."""
        with self._ready:
            if not self._frames:
                self._ready.wait(timeout_s)
            for offset in range(self._cameras):
                camera = (self._next_camera + offset) % self._cameras
                frame = self._frames.pop(camera, None)
                if frame is not None:
                    self._next_camera = (camera + 1) % self._cameras
                    return frame
            return None

    def clear(self) -> None:
        """Discard pending frames (counted as dropped), e.g. on deactivate."""
        with self._ready:
            self._dropped += len(self._frames)
            self._frames.clear()

    def wake(self) -> None:
        """Wake a waiting :meth:`take` (used when stopping)."""
        with self._ready:
            self._ready.notify_all()


class FrameWorker:
    """A thread that hands the newest frame to ``handle``, at most ``max_rate_hz`` times/s.

    ``handle`` must catch the errors it expects (bad frames); anything it raises stops the
    worker, is kept in :attr:`error`, passed to ``on_error`` (the node logs it) and re-raised
    in the thread so it is never silent.
    """

    def __init__(self, slot: LatestFrameSlot, handle: Callable[[Frame], None], *,
                 max_rate_hz: float = 0.0, name: str = 'vpr_worker',
                 on_error: Callable[[BaseException], None] | None = None) -> None:
        self._slot = slot
        self._handle = handle
        self._on_error = on_error
        self._period_s = 0.0
        self.set_max_rate(max_rate_hz)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.error: BaseException | None = None

    def set_max_rate(self, max_rate_hz: float) -> None:
        """Throttle to ``max_rate_hz`` frames per second (0 = as fast as frames come)."""
        if max_rate_hz < 0:
            raise ValueError(f'max_rate_hz must be >= 0, got {max_rate_hz}')
        self._period_s = 1.0 / max_rate_hz if max_rate_hz > 0 else 0.0

    @property
    def alive(self) -> bool:
        """True while the thread runs."""
        return self._thread.is_alive()

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Ask the thread to finish its current frame and exit; True when it has exited."""
        self._stop.set()
        self._slot.wake()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        next_start = 0.0
        while not self._stop.is_set():
            delay_s = next_start - time.monotonic()
            if delay_s > 0 and self._stop.wait(delay_s):
                break
            frame = self._slot.take(timeout_s=0.1)
            if frame is None or self._stop.is_set():
                continue
            next_start = time.monotonic() + self._period_s
            try:
                self._handle(frame)
            except BaseException as exc:
                self.error = exc
                if self._on_error is not None:
                    self._on_error(exc)
                raise


class SupervisedWorker:
    """A :class:`FrameWorker` that is started again when its thread stops on an exception.

    ``handle`` is expected to catch every per-frame error; whatever still stops the thread is
    kept in :attr:`failure` (until :meth:`served` reports a frame done) and passed, on the
    dying thread, to ``on_stopped(exc, restarted)``. The worker is restarted up to
    ``max_restarts`` times in a row without a frame served in between; then it stays down
    and ``on_stopped`` gets ``restarted=False`` (the owner decides what failing means).
    """

    def __init__(self, slot: LatestFrameSlot, handle: Callable[[Frame], None], *,
                 on_stopped: Callable[[BaseException, bool], None], max_rate_hz: float = 0.0,
                 max_restarts: int = 3) -> None:
        self._slot = slot
        self._handle = handle
        self._on_stopped = on_stopped
        self._max_rate_hz = max_rate_hz
        self._max_restarts = max_restarts
        self._lock = threading.Lock()
        self._worker: FrameWorker | None = None
        self._running = False
        self._without_frame = 0
        self.failure = ''
        self.restarts = 0

    @property
    def alive(self) -> bool:
        """True while a worker thread runs."""
        worker = self._worker
        return worker is not None and worker.alive

    def start(self) -> None:
        """Start the first worker thread."""
        with self._lock:
            self._running = True
            self._spawn()

    def stop(self, timeout_s: float = 10.0) -> bool:
        """Stop for good (no restart after this); True when the thread has exited."""
        with self._lock:
            self._running = False
            worker, self._worker = self._worker, None
        return worker.stop(timeout_s) if worker is not None else True

    def set_max_rate(self, max_rate_hz: float) -> None:
        """Throttle this and every restarted worker to ``max_rate_hz``."""
        with self._lock:
            self._max_rate_hz = max_rate_hz
            if self._worker is not None:
                self._worker.set_max_rate(max_rate_hz)

    def served(self) -> None:
        """A frame was served: the worker is healthy again."""
        self.failure = ''
        self._without_frame = 0

    def check(self) -> None:
        """Watchdog: a thread that ended without an error while running is restarted too."""
        worker = self._worker
        if self._running and worker is not None and not worker.alive and worker.error is None:
            self._stopped(RuntimeError('the worker thread ended'))

    def _spawn(self) -> None:
        self._worker = FrameWorker(self._slot, self._handle, max_rate_hz=self._max_rate_hz,
                                   on_error=self._stopped)
        self._worker.start()

    def _stopped(self, exc: BaseException) -> None:
        with self._lock:
            if not self._running:
                return  # being stopped anyway
            self.failure = f'{type(exc).__name__}: {exc}'[:200]
            self._without_frame += 1
            restart = self._without_frame <= self._max_restarts
            if restart:
                self._spawn()
                self.restarts += 1
            else:
                self._running = False
                self._worker = None
        self._on_stopped(exc, restart)
