"""The loop detector's growing keyframe database: descriptors and bookkeeping, searched by prefix.

Rows are appended in stream order (previous sessions first), into arrays that double their
capacity when full, so adding a keyframe costs O(1) amortised and no index is rebuilt. The
keyframes a query may match are always a prefix of the rows: previous sessions, then this
session's keyframes older than the time gap and farther back along the travelled path than
the travel gap (both measures grow monotonically), so exclusion is two binary searches.

The search is the map's two-stage search over that prefix (:mod:`vpr_core.mapdb.index`'s
Hamming distances, selection and automatic re-rank depth): Hamming top-``depth`` on the
codes, then cosine re-rank on the floats; exact cosine when the prefix is no larger than the
re-rank depth; Hamming scores alone for a codes-only model.
"""
from __future__ import annotations

import numpy as np

from vpr_core.descriptors import Descriptors
from vpr_core.mapdb.index import hamming_distances, rerank_depth, top_k_smallest

_INITIAL_CAPACITY = 1024


class GrowingArray:
    """Rows of one dtype and width, appended one at a time; :attr:`rows` is a view."""

    def __init__(self, width: int | None, dtype, capacity: int = _INITIAL_CAPACITY) -> None:
        shape = (capacity,) if width is None else (capacity, width)
        self._data = np.zeros(shape, dtype=dtype)
        self.size = 0

    @property
    def rows(self) -> np.ndarray:
        """The stored rows (a view, valid until the next append)."""
        return self._data[:self.size]

    def extend(self, values: np.ndarray) -> None:
        """Append ``values`` (rows of the stored width)."""
        values = np.asarray(values, dtype=self._data.dtype)
        count = len(values)
        if self.size + count > len(self._data):
            capacity = max(2 * len(self._data), self.size + count)
            grown = np.zeros((capacity, *self._data.shape[1:]), dtype=self._data.dtype)
            grown[:self.size] = self._data[:self.size]
            self._data = grown
        self._data[self.size:self.size + count] = values
        self.size += count


class KeyframeStore:
    """Descriptors of keyframes plus, per row, the session clock and path length.

    ``elapsed_s``: seconds of this session's stream up to the keyframe (backward stamp jumps
    add nothing), ``travel_m``: odometry path length at the keyframe, or at the last keyframe
    that had odometry (a row without odometry stays eligible by time alone; -inf before any
    odometry), non-decreasing so that the travel gap is one binary search; rows of previous
    sessions carry -inf in both, so they are never excluded.
    """

    def __init__(self, descriptor_dim: int, code_bits: int) -> None:
        self.descriptor_dim = int(descriptor_dim)
        self.code_bits = int(code_bits)
        self.floats = GrowingArray(self.descriptor_dim, np.float32) if descriptor_dim else None
        self.codes = GrowingArray(self.code_bits // 8, np.uint8) if code_bits else None
        self.elapsed_s = GrowingArray(None, np.float64)
        self.travel_m = GrowingArray(None, np.float64)
        self.previous = 0           # rows of previous sessions (first in the store)

    @property
    def size(self) -> int:
        """Keyframes stored (previous sessions included)."""
        return self.elapsed_s.size

    def add(self, descriptors: Descriptors, elapsed_s: float | None = None,
            travel_m: float | None = None) -> None:
        """Append N rows; ``elapsed_s`` None marks them as rows of a previous session."""
        count = len(descriptors)
        if self.floats is not None:
            self.floats.extend(np.asarray(descriptors.floats, dtype=np.float32).reshape(
                count, self.descriptor_dim))
        if self.codes is not None:
            self.codes.extend(np.asarray(descriptors.codes, dtype=np.uint8).reshape(
                count, self.code_bits // 8))
        if elapsed_s is None:
            if self.previous != self.size:
                raise ValueError('rows of previous sessions must come before this session\'s')
            self.elapsed_s.extend(np.full(count, -np.inf))
            self.travel_m.extend(np.full(count, -np.inf))
            self.previous += count
            return
        self.elapsed_s.extend(np.full(count, float(elapsed_s)))
        last = self.travel_m.rows[-1] if self.travel_m.size > self.previous else -np.inf
        known = last if travel_m is None or np.isnan(travel_m) else max(last, float(travel_m))
        self.travel_m.extend(np.full(count, known))

    def rows(self, which: slice) -> Descriptors:
        """Descriptors of the rows ``which`` (views, valid until the next :meth:`add`)."""
        return Descriptors(None if self.floats is None else self.floats.rows[which],
                           None if self.codes is None else self.codes.rows[which])

    def eligible(self, elapsed_s: float, travel_m: float | None, min_time_gap_s: float,
                 min_travel_gap_m: float) -> int:
        """How many leading rows a query at ``elapsed_s`` / ``travel_m`` may match."""
        session = slice(self.previous, self.size)
        stop = self.previous + int(np.searchsorted(self.elapsed_s.rows[session],
                                                   elapsed_s - min_time_gap_s, side='right'))
        if travel_m is None or min_travel_gap_m <= 0:
            return stop
        return self.previous + int(np.searchsorted(self.travel_m.rows[self.previous:stop],
                                                   travel_m - min_travel_gap_m, side='right'))

    def search(self, query: Descriptors, stop: int, k: int, rerank_k: int = 0
               ) -> tuple[np.ndarray, np.ndarray]:
        """Best ``k`` rows among the first ``stop`` for one query row, best first:
        (indices [k'], scores [k'])."""
        stop = min(int(stop), self.size)
        if stop <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        if self.floats is None:
            return self._search_codes(query, stop, k)
        floats = self.floats.rows[:stop]
        vector = np.asarray(query.floats, dtype=np.float32).reshape(-1)
        depth = int(rerank_k) if rerank_k else rerank_depth(self.code_bits, stop) \
            if self.codes is not None else stop
        if self.codes is None or stop <= max(depth, k):
            scores = floats @ vector
            best = top_k_smallest(-scores[None, :], k)[0]
            return best.astype(np.int64), scores[best].astype(np.float64)
        distances = hamming_distances(np.asarray(query.codes).reshape(1, -1),
                                      self.codes.rows[:stop])
        rows = top_k_smallest(distances, max(depth, k))[0]
        scores = floats[rows] @ vector
        order = top_k_smallest(-scores[None, :], k)[0]
        return rows[order].astype(np.int64), scores[order].astype(np.float64)

    def _search_codes(self, query: Descriptors, stop: int, k: int
                      ) -> tuple[np.ndarray, np.ndarray]:
        distances = hamming_distances(np.asarray(query.codes).reshape(1, -1),
                                      self.codes.rows[:stop])
        best = top_k_smallest(distances, k)[0]
        return best.astype(np.int64), 1.0 - 2.0 * distances[0, best] / self.code_bits
