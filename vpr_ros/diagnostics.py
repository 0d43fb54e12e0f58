"""Node statistics and the ``/diagnostics`` message (diagnostic_updater is not in the wheels).

:class:`NodeStatistics` is updated from the subscription callbacks and the worker thread and
read by the diagnostics timer, so every access takes one lock.
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np

STALE_INPUT_S = 5.0
LEVEL_OK = DiagnosticStatus.OK
LEVEL_WARN = DiagnosticStatus.WARN
LEVEL_ERROR = DiagnosticStatus.ERROR


class RateMeter:
    """Events per second over a sliding window of ``window_s`` seconds."""

    def __init__(self, window_s: float = 5.0) -> None:
        self._window_s = window_s
        self._times: deque[float] = deque()

    def tick(self, now_s: float) -> None:
        """Record one event at monotonic time ``now_s``."""
        self._times.append(now_s)
        self._trim(now_s)

    def rate_hz(self, now_s: float) -> float:
        """Events per second in the window ending at ``now_s``."""
        self._trim(now_s)
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(now_s - self._times[0], 1e-6)

    def _trim(self, now_s: float) -> None:
        while self._times and self._times[0] < now_s - self._window_s:
            self._times.popleft()


@dataclass
class NodeStatistics:
    """Counters, rates and latencies of one node; thread-safe."""

    latency_window: int = 200
    received: int = 0
    processed: int = 0
    accepted: int = 0
    invalid_covariance: int = 0
    last_score: float = float('nan')
    last_input_s: float = float('nan')
    rejected: Counter = field(default_factory=Counter)
    match_rejections: Counter = field(default_factory=Counter)
    _latencies_ms: deque = field(default_factory=deque)
    _input_rate: RateMeter = field(default_factory=RateMeter)
    _processed_rate: RateMeter = field(default_factory=RateMeter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_input(self, now_s: float | None = None) -> None:
        """One message arrived from a camera."""
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            self.received += 1
            self.last_input_s = now_s
            self._input_rate.tick(now_s)

    def on_rejected(self, reason: str) -> None:
        """A message could not be used (bad encoding, size, payload...)."""
        with self._lock:
            self.rejected[reason] += 1

    def on_processed(self, latency_ms: float, score: float, accepted: bool, reason: str = '',
                     now_s: float | None = None) -> None:
        """The worker finished one frame ``latency_ms`` after it was received; ``reason``
        says why its match was not accepted."""
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            self.processed += 1
            self.accepted += int(accepted)
            if not accepted and reason:
                self.match_rejections[reason] += 1
            self.last_score = score
            self._processed_rate.tick(now_s)
            self._latencies_ms.append(latency_ms)
            while len(self._latencies_ms) > self.latency_window:
                self._latencies_ms.popleft()

    def on_invalid_covariance(self) -> None:
        """A pose prior was withheld because its covariance could not be repaired."""
        with self._lock:
            self.invalid_covariance += 1

    def latency_percentiles_ms(self) -> tuple[float, float]:
        """(p50, p95) of the recent processing latencies in ms; NaN before any frame."""
        with self._lock:
            values = np.asarray(self._latencies_ms, dtype=np.float64)
        if values.size == 0:
            return float('nan'), float('nan')
        p50, p95 = np.percentile(values, [50, 95])
        return float(p50), float(p95)

    def values(self, dropped: int, now_s: float | None = None) -> dict[str, str]:
        """Flat key -> text view of every statistic (``dropped`` comes from the slot)."""
        now_s = time.monotonic() if now_s is None else now_s
        p50, p95 = self.latency_percentiles_ms()
        with self._lock:
            values = {
                'input_rate_hz': f'{self._input_rate.rate_hz(now_s):.2f}',
                'processed_rate_hz': f'{self._processed_rate.rate_hz(now_s):.2f}',
                'received': str(self.received),
                'processed': str(self.processed),
                'dropped': str(dropped),
                'accepted': str(self.accepted),
                'latency_p50_ms': f'{p50:.1f}',
                'latency_p95_ms': f'{p95:.1f}',
                'last_score': f'{self.last_score:.4f}',
                'rejected_inputs': str(sum(self.rejected.values())),
                'invalid_covariance': str(self.invalid_covariance),
            }
            values.update({f'rejected.{k}': str(v) for k, v in sorted(self.rejected.items())})
            values.update({f'not_accepted.{k.replace(" ", "_")}': str(v)
                           for k, v in sorted(self.match_rejections.items())})
        return values

    def input_is_stale(self, now_s: float | None = None) -> bool:
        """True when no message arrived in the last :data:`STALE_INPUT_S` seconds."""
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            return not now_s - self.last_input_s < STALE_INPUT_S


def diagnostic_array(name: str, hardware_id: str, level: bytes, message: str,
                     values: dict[str, str], stamp) -> DiagnosticArray:
    """One ``DiagnosticArray`` holding a single status with ``values`` as key/value pairs."""
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=key, value=value) for key, value in values.items()]
    array = DiagnosticArray()
    array.header.stamp = stamp
    array.status = [status]
    return array


def node_status(state: str, error: str, enabled: bool, input_stale: bool,
                worker_alive: bool) -> tuple[bytes, str]:
    """(level, message) summarising a node: ERROR for a failed configure or a dead worker,
    WARN while active without images, OK otherwise."""
    if error:
        return LEVEL_ERROR, error
    if state != 'active':
        return LEVEL_OK, f'{state}: waiting for the lifecycle manager'
    if not worker_alive:
        return LEVEL_ERROR, 'active, but the worker thread is not running'
    if not enabled:
        return LEVEL_OK, 'active, processing disabled through ~/enable'
    if input_stale:
        return LEVEL_WARN, f'active, no images in the last {STALE_INPUT_S:.0f} s'
    return LEVEL_OK, 'active, localizing'
