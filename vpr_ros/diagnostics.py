"""Node statistics and the ``/diagnostics`` message (diagnostic_updater is not in the wheels).

:class:`NodeStatistics` is updated from the subscription callbacks and the worker thread and
read by the diagnostics timer, so every access takes one lock.

Frames are lost in three places, reported apart: before the node (transport, camera driver:
``input_lost``, ``input_gaps`` and ``input_loss_ratio``, inferred from gaps in the header
stamps by :class:`StampGaps`), in the node's newest-frame slot (``dropped``: the worker was
busy) and in the worker (``rejected.<reason>`` for undecodable images,
``frame_errors.<exception>`` for unexpected failures).
"""
from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
import numpy as np
from vpr_core.localization import FramePeriod

STALE_INPUT_S = 5.0
# Input loss above this share of the expected frames (over LOSS_WINDOW_S) makes a WARN.
MAX_INPUT_LOSS = 0.2
LOSS_WINDOW_S = 10.0
MIN_LOSS_FRAMES = 10  # fewer expected frames in the window are too few to judge
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


class StampGaps:
    """Frames missing from one camera's stream, inferred from its header stamps.

    The nominal period is the tracker's estimator,
    :class:`~vpr_core.localization.period.FramePeriod` (the median of the shortest recent stamp
    gaps, those within ``gap_factor`` of the 5th percentile: it holds under heavy loss, which a
    plain median would hide). A gap longer than ``gap_factor`` periods counts ``round(gap /
    period) - 1`` frames lost. A stamp earlier than the previous one is a clock jump back (bag
    loop, sim time reset): counted, and the period is learnt again. Gaps over ``pause_s`` are a
    paused stream (the stale-input warning covers it), not lost frames. No estimate before
    ``min_history`` gaps; repeated stamps are ignored.
    """

    def __init__(self, history: int = 100, min_history: int = 8, gap_factor: float = 1.5,
                 window_s: float = LOSS_WINDOW_S, pause_s: float = STALE_INPUT_S) -> None:
        self._gaps_ns = FramePeriod(history, min_history, gap_factor)
        self._gap_factor = gap_factor
        self._window_s = window_s
        self._pause_ns = int(pause_s * 1e9)
        self._last_ns: int | None = None
        self._recent: deque[tuple[float, int]] = deque()  # (monotonic s, frames lost before)
        self.gaps = 0
        self.lost = 0
        self.jumps_back = 0

    def add(self, stamp_ns: int, now_s: float) -> None:
        """One frame stamped ``stamp_ns`` arrived at monotonic time ``now_s``."""
        lost, last = 0, self._last_ns
        if last is not None and stamp_ns < last:
            self.jumps_back += 1
            self._gaps_ns.clear()
        elif last is not None and stamp_ns - last > self._pause_ns:
            self._gaps_ns.clear()
        elif last is not None and stamp_ns > last:
            learnt = self.period_ns() is not None
            self._gaps_ns.add(stamp_ns - last)
            period_ns = self.period_ns()
            if period_ns is not None:  # once learnt, the gaps seen while learning count too
                for gap_ns in (stamp_ns - last,) if learnt else self._gaps_ns:
                    missing = round(gap_ns / period_ns) - 1
                    if gap_ns > self._gap_factor * period_ns:
                        self.gaps += 1
                        lost += max(1, missing)
                self.lost += lost
        self._last_ns = stamp_ns
        self._recent.append((now_s, lost))
        self._trim(now_s)

    def period_ns(self) -> float | None:
        """The nominal stamp period (ns), None until ``min_history`` gaps were seen."""
        return self._gaps_ns.estimate()

    def window(self, now_s: float) -> tuple[int, int]:
        """(frames received, frames lost) in the last ``window_s`` seconds."""
        self._trim(now_s)
        return len(self._recent), sum(lost for _, lost in self._recent)

    def _trim(self, now_s: float) -> None:
        while self._recent and self._recent[0][0] < now_s - self._window_s:
            self._recent.popleft()


@dataclass
class NodeStatistics:
    """Counters, rates and latencies of one node; thread-safe."""

    latency_window: int = 200
    received: int = 0
    processed: int = 0
    accepted: int = 0
    invalid_covariance: int = 0
    worker_restarts: int = 0
    last_score: float = float('nan')
    last_input_s: float = float('nan')
    last_failure: str = ''
    rejected: Counter = field(default_factory=Counter)
    frame_errors: Counter = field(default_factory=Counter)
    events: Counter = field(default_factory=Counter)
    match_rejections: Counter = field(default_factory=Counter)
    cameras: dict = field(default_factory=dict)
    _latencies_ms: deque = field(default_factory=deque)
    _input_rate: RateMeter = field(default_factory=RateMeter)
    _processed_rate: RateMeter = field(default_factory=RateMeter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def on_input(self, now_s: float | None = None, camera: int = 0,
                 stamp_ns: int | None = None) -> None:
        """One message stamped ``stamp_ns`` arrived from camera ``camera``."""
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            self.received += 1
            self.last_input_s = now_s
            self._input_rate.tick(now_s)
            if stamp_ns is not None:
                self.cameras.setdefault(camera, StampGaps()).add(stamp_ns, now_s)

    def reset_input_tracking(self) -> None:
        """Forget the cameras' stamps (on activate: a gap while inactive is no loss)."""
        with self._lock:
            self.cameras = {}

    def on_rejected(self, reason: str, detail: str = '') -> None:
        """A message could not be used (bad encoding, size, payload...)."""
        with self._lock:
            self.rejected[reason] += 1
            self.last_failure = f'rejected ({reason}){": " + detail if detail else ""}'

    def on_frame_error(self, kind: str, detail: str = '') -> None:
        """The worker failed on a frame with an unexpected exception of class ``kind``."""
        with self._lock:
            self.frame_errors[kind] += 1
            self.last_failure = f'{kind}{": " + detail if detail else ""}'

    def on_events(self, names: tuple[str, ...]) -> None:
        """Events the engine reported with a result (e.g. a tracker reset)."""
        with self._lock:
            self.events.update(names)

    def on_worker_restart(self) -> None:
        """The worker thread stopped and was started again."""
        with self._lock:
            self.worker_restarts += 1

    def on_processed(self, latency_ms: float, score: float, accepted: bool, reason: str = '',
                     now_s: float | None = None) -> None:
        """The worker finished one frame ``latency_ms`` after it was received; ``reason``
        says why its match was not accepted."""
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            self.processed += 1
            self.last_failure = ''
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
                'frame_errors': str(sum(self.frame_errors.values())),
                'worker_restarts': str(self.worker_restarts),
                'invalid_covariance': str(self.invalid_covariance),
                **self._input_values(now_s),
            }
            values.update({f'rejected.{k}': str(v) for k, v in sorted(self.rejected.items())})
            values.update({f'frame_errors.{k}': str(v)
                           for k, v in sorted(self.frame_errors.items())})
            values.update({f'events.{k}': str(v) for k, v in sorted(self.events.items())})
            values.update({f'not_accepted.{k.replace(" ", "_")}': str(v)
                           for k, v in sorted(self.match_rejections.items())})
        return values

    def input_loss_ratio(self, now_s: float | None = None) -> float:
        """Share of the expected frames (all cameras) missing in the last LOSS_WINDOW_S;
        0 while fewer than MIN_LOSS_FRAMES were expected."""
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            ratio, expected = self._loss(now_s)
        return ratio if expected >= MIN_LOSS_FRAMES else 0.0

    def _loss(self, now_s: float) -> tuple[float, int]:
        windows = [gaps.window(now_s) for gaps in self.cameras.values()]
        received = sum(w[0] for w in windows)
        lost = sum(w[1] for w in windows)
        return (lost / (received + lost) if received + lost else 0.0), received + lost

    def _input_values(self, now_s: float) -> dict[str, str]:
        cameras = self.cameras
        values = {
            'input_loss_ratio': f'{self._loss(now_s)[0]:.3f}',
            'input_lost': str(sum(c.lost for c in cameras.values())),
            'input_gaps': str(sum(c.gaps for c in cameras.values())),
            'clock_jumps_back': str(sum(c.jumps_back for c in cameras.values())),
        }
        for camera, gaps in sorted(cameras.items()):
            prefix = '' if len(cameras) == 1 else f'camera{camera}.'
            period_ns = gaps.period_ns()
            values[f'{prefix}input_period_ms'] = 'nan' if period_ns is None else \
                f'{period_ns / 1e6:.1f}'
            if prefix:
                received, lost = gaps.window(now_s)
                values[f'{prefix}input_loss_ratio'] = \
                    f'{lost / (received + lost) if received + lost else 0.0:.3f}'
        return values

    def input_is_stale(self, now_s: float | None = None) -> bool:
        """True when no message arrived in the last :data:`STALE_INPUT_S` seconds."""
        now_s = time.monotonic() if now_s is None else now_s
        with self._lock:
            return not now_s - self.last_input_s < STALE_INPUT_S


def error_kind(exc: BaseException) -> str:
    """Diagnostics name of an exception's class: ``RuntimeError``; ``cv2.error`` for
    extension errors named just ``error``."""
    name = type(exc).__name__
    if name == 'error':
        return f'{type(exc).__module__.split(".")[0]}.{name}'
    return name


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
                worker_alive: bool, *, worker_failure: str = '', input_loss: float = 0.0,
                last_failure: str = '', activity: str = 'localizing') -> tuple[bytes, str]:
    """(level, message) summarising a node.

    ERROR: a failed configure, a dead worker, or a worker that stopped (``worker_failure``)
    and has served no frame since its restart. WARN while active without images, with more
    than MAX_INPUT_LOSS of the expected frames missing, or while the last frame failed
    (``last_failure``). OK otherwise (``activity``: what the node does, e.g. 'localizing'
    or, in SLAM mode, 'detecting loops').
    """
    if error:
        return LEVEL_ERROR, error
    if state != 'active':
        return LEVEL_OK, f'{state}: waiting for the lifecycle manager'
    if worker_failure:
        return LEVEL_ERROR, (f'active, the worker thread stopped ({worker_failure}) and was '
                             'restarted; no frame served since')
    if not worker_alive:
        return LEVEL_ERROR, 'active, but the worker thread is not running'
    if not enabled:
        return LEVEL_OK, 'active, processing disabled through ~/enable'
    if input_stale:
        return LEVEL_WARN, f'active, no images in the last {STALE_INPUT_S:.0f} s'
    if input_loss > MAX_INPUT_LOSS:
        return LEVEL_WARN, (f'active, {input_loss:.0%} of the camera frames missing over '
                            f'the last {LOSS_WINDOW_S:.0f} s (gaps in the header stamps): '
                            'check the transport (QoS, bandwidth) and the driver')
    if last_failure:
        return LEVEL_WARN, f'active, the last frame failed: {last_failure}'
    return LEVEL_OK, f'active, {activity}'
