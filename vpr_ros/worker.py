"""Newest-frame-wins buffering and the worker thread that runs inference off the executor.

Subscription callbacks only call :meth:`LatestFrameSlot.put` (a dict assignment under a lock),
so the executor never waits for a model. The :class:`FrameWorker` thread takes the newest
frame of each camera in turn, throttled to ``max_rate_hz``; a frame overwritten before the
worker took it is counted as dropped.
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
