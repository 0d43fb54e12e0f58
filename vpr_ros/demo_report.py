"""Score what the node published during the demo: recall@1, accepted-match precision, latency.

Ground truth is index alignment: the k-th winter frame shows the place of the k-th summer
frame, and a match counts when it is within ``tolerance`` frames (the project's Nordland rule).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
import json
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class DemoScore:
    """Numbers of one demo run (latencies in ms)."""

    frames_published: int
    frames_answered: int
    recall_at_1: float
    accepted: int
    accepted_correct: int
    accepted_precision: float
    accepted_recall: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_max_ms: float

    def table(self) -> str:
        """Human-readable summary lines."""
        return '\n'.join([
            f'frames replayed          {self.frames_published}',
            f'frames answered          {self.frames_answered}',
            f'recall@1 (top candidate) {self.recall_at_1:.3f}',
            f'accepted matches         {self.accepted} ({self.accepted_correct} correct)',
            f'accepted precision       {self.accepted_precision:.3f}',
            f'accepted recall          {self.accepted_recall:.3f}',
            f'latency publish -> candidates  p50 {self.latency_p50_ms:.1f} ms, '
            f'p95 {self.latency_p95_ms:.1f} ms, max {self.latency_max_ms:.1f} ms'])

    def write(self, path: Path, extra: dict) -> None:
        """``summary.json`` with these numbers and ``extra`` context."""
        path.write_text(json.dumps({**asdict(self), **extra}, indent=2, sort_keys=True) + '\n')


def position_of(stamps_ns: np.ndarray) -> dict[int, int]:
    """Bag image stamps [N] -> {stamp: position in the bag}."""
    return {int(stamp): index for index, stamp in enumerate(np.sort(stamps_ns))}


def nearest_position(stamp_ns: int, ordered: np.ndarray) -> int:
    """Position in ``ordered`` (sorted bag stamps) of the stamp nearest to ``stamp_ns``; the
    earlier one on a tie."""
    index = int(np.searchsorted(ordered, stamp_ns))
    if index == 0 or index == len(ordered):
        return min(index, len(ordered) - 1)
    return index if ordered[index] - stamp_ns < stamp_ns - ordered[index - 1] else index - 1


def score(published: dict[int, float], answers: dict[int, tuple[float, int]],
          accepted: list[tuple[int, int]], tolerance: int, queries: dict[int, int],
          places: dict[int, int]) -> tuple[DemoScore, dict]:
    """Score one run.

    ``published``: query stamp -> publish time (s, monotonic); ``answers``: query stamp ->
    (receipt time, best place stamp); ``accepted``: (query stamp, matched place stamp) of each
    published pose prior; ``queries`` / ``places``: stamp -> position in the winter / summer
    bag. Returns the score and per-frame arrays for the plot.
    """
    rows = [(queries[q], places[p], t - published[q]) for q, (t, p) in answers.items()
            if q in published]
    query_pos = np.array([r[0] for r in rows], dtype=int)
    best_pos = np.array([r[1] for r in rows], dtype=int)
    latency_ms = np.array([r[2] for r in rows]) * 1e3
    hits = np.abs(query_pos - best_pos) <= tolerance
    acc_query = np.array([queries[q] for q, _ in accepted], dtype=int)
    acc_place = np.array([places[p] for _, p in accepted], dtype=int)
    acc_ok = np.abs(acc_query - acc_place) <= tolerance
    total = max(len(published), 1)
    result = DemoScore(
        frames_published=len(published), frames_answered=len(rows),
        recall_at_1=float(hits.mean()) if len(rows) else 0.0,
        accepted=len(accepted), accepted_correct=int(acc_ok.sum()),
        accepted_precision=float(acc_ok.mean()) if len(accepted) else float('nan'),
        accepted_recall=float(acc_ok.sum()) / total,
        latency_p50_ms=_percentile(latency_ms, 50), latency_p95_ms=_percentile(latency_ms, 95),
        latency_max_ms=float(latency_ms.max()) if len(latency_ms) else float('nan'))
    arrays = {'query': query_pos, 'best': best_pos, 'hits': hits, 'latency_ms': latency_ms,
              'accepted_query': acc_query, 'accepted_place': acc_place, 'accepted_ok': acc_ok}
    return result, arrays


def _percentile(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else float('nan')


def plot(arrays: dict, result: DemoScore, path: Path, first_index: int = 0) -> None:
    """Matches against ground truth, and the latency histogram, into one PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    offset = first_index
    span = [offset, offset + max(arrays['query'].max(initial=0), 1)]
    left.plot(span, span, color='tab:blue', linewidth=1, alpha=0.4, zorder=1,
              label='ground truth (same index)')
    left.scatter(arrays['query'] + offset, arrays['best'] + offset, s=18, color='0.6',
                 zorder=2, label=f'top candidate (recall@1 {result.recall_at_1:.2f})')
    ok = arrays['accepted_ok']
    left.scatter(arrays['accepted_query'][ok] + offset, arrays['accepted_place'][ok] + offset,
                 s=5, color='tab:green', zorder=3, label='accepted, correct')
    left.scatter(arrays['accepted_query'][~ok] + offset,
                 arrays['accepted_place'][~ok] + offset, s=30, color='tab:red', marker='x',
                 zorder=4, label='accepted, wrong')
    left.set_xlabel('winter query (Nordland index)')
    left.set_ylabel('matched summer place (Nordland index)')
    left.set_title('vpr_node matches over DDS')
    left.legend(loc='upper left', fontsize=8)
    right.hist(arrays['latency_ms'], bins=40, color='tab:blue')
    right.axvline(result.latency_p50_ms, color='k', linestyle='--',
                  label=f'p50 {result.latency_p50_ms:.1f} ms')
    right.axvline(result.latency_p95_ms, color='tab:red', linestyle=':',
                  label=f'p95 {result.latency_p95_ms:.1f} ms')
    right.set_xlabel('image publish -> ~/candidates receipt (ms)')
    right.set_ylabel('frames')
    right.set_title('end-to-end latency')
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
