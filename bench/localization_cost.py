"""Per-frame localization cost after search does not grow with the map.

Claim (issue 18): the work ``PlaceRecognizer.process`` does per frame besides the map search
(sequence tracker, gate, pose prior, records) costs at 1 M places at most 1.5x what it costs
at 10 k places. Synthetic maps: random unit 256-d float16 descriptors with 256-bit codes
(signs of the floats), places 1 m apart along a line; a stream of query frames near a route
(place descriptors plus noise) with odometry. ``map_db.search_hits`` is timed on its own and
subtracted from each frame's time; each map runs ``--rounds`` times, interleaved, and the
fastest round's median counts.

    .venv/bin/python bench/localization_cost.py                # 10k, 100k, 1M places
    .venv/bin/python bench/localization_cost.py --sizes 10000,100000 --frames 200
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from vpr_core.descriptors import Descriptors, pack_codes
from vpr_core.localization.config import LocalizationConfig
from vpr_core.localization.recognizer import PlaceRecognizer
from vpr_core.mapdb.database import MapDatabase
from vpr_core.mapdb.index import SearchConfig
from vpr_core.mapdb.manifest import MapManifest
from vpr_core.mapdb.pose import Pose, quaternions_from_yaw

DIM = 256
TARGET_RATIO = 1.5


def unit_rows(rng: np.random.Generator, count: int, dim: int = DIM, bits: int = DIM,
              chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
    """[count, dim] float16 unit rows and their packed codes (signs of the first ``bits``
    dimensions), made in chunks (no float32 copy of a 1 M map)."""
    if not 0 < bits <= dim or bits % 8:
        raise ValueError(f'bits must be a multiple of 8 in (0, dim={dim}], got {bits}')
    out = np.empty((count, dim), dtype=np.float16)
    codes = np.empty((count, bits // 8), dtype=np.uint8)
    for start in range(0, count, chunk):
        rows = rng.standard_normal((min(chunk, count - start), dim), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        out[start:start + len(rows)] = rows
        codes[start:start + len(rows)] = pack_codes(rows[:, :bits])
    return out, codes


def synthetic_map(count: int, seed: int = 0, dim: int = DIM, bits: int = DIM) -> MapDatabase:
    """``count`` places 1 m apart along x, float16 floats (``dim``) and ``bits``-bit codes."""
    floats, codes = unit_rows(np.random.default_rng(seed), count, dim, bits)
    positions = np.zeros((count, 3))
    positions[:, 0] = np.arange(count, dtype=np.float64)
    manifest = MapManifest(model_fingerprint='bench', descriptor_dim=dim, code_bits=bits,
                           num_places=count, float_dtype='float16')
    return MapDatabase(manifest, Descriptors(floats, codes), positions,
                       quaternions_from_yaw(np.zeros(count)),
                       np.arange(count, dtype=np.int64) * 1_000_000_000)


def query_stream(map_db: MapDatabase, frames: int, seed: int = 1
                 ) -> list[tuple[Descriptors, int, Pose]]:
    """Frames along a route through the middle of the map: (descriptors, stamp ns, odometry)."""
    rng = np.random.default_rng(seed)
    start = map_db.size // 2
    stream = []
    for frame in range(frames):
        row = start + frame
        noisy = map_db.floats[row].astype(np.float32) + \
            0.05 * rng.standard_normal(map_db.floats.shape[1])
        noisy = (noisy / np.linalg.norm(noisy)).astype(np.float32)[None, :]
        odometry = Pose((float(frame), 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
        codes = pack_codes(noisy[:, :map_db.manifest.code_bits])
        stream.append((Descriptors(noisy, codes), frame * 100_000_000, odometry))
    return stream


class TimedSearch:
    """Wraps ``map_db.search_hits`` and adds up the seconds it takes."""

    def __init__(self, map_db: MapDatabase) -> None:
        self.inner = map_db.search_hits
        self.seconds = 0.0
        map_db.search_hits = self

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def run_round(recognizer: PlaceRecognizer, search: TimedSearch, stream: list) -> np.ndarray:
    """Per-frame seconds of ``process`` minus its search, one pass over ``stream``."""
    recognizer.reset()
    costs = []
    for descriptors, stamp_ns, odometry in stream:
        search.seconds = 0.0
        start = time.perf_counter()
        recognizer.process(descriptors, stamp_ns, odometry)
        costs.append(time.perf_counter() - start - search.seconds)
    return np.asarray(costs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--sizes', default='10000,100000,1000000')
    parser.add_argument('--frames', type=int, default=300)
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(',')]
    # a fixed re-rank depth keeps the (subtracted) search short; it does not change the rest
    config = LocalizationConfig(search=SearchConfig(rerank_k=200))
    runs = []
    for size in sizes:
        map_db = synthetic_map(size)
        search = TimedSearch(map_db)
        runs.append((size, PlaceRecognizer(map_db, config=config), search,
                     query_stream(map_db, args.frames)))
    best = {size: np.inf for size in sizes}
    accepted = {}
    for _ in range(args.rounds):
        for size, recognizer, search, stream in runs:
            costs = run_round(recognizer, search, stream)
            best[size] = min(best[size], float(np.median(costs)))
            accepted[size] = recognizer.state.accepted_index is not None
    print(f'{"places":>10} {"median ms/frame after search":>30} {"ratio to smallest":>18} '
          f'{"accepted":>9}')
    base = best[sizes[0]]
    for size in sizes:
        print(f'{size:>10} {1e3 * best[size]:>30.3f} {best[size] / base:>18.2f} '
              f'{str(accepted[size]):>9}')
    ratio = best[sizes[-1]] / base
    print(f'cost {sizes[-1]} / {sizes[0]} places: {ratio:.2f}x (target <= {TARGET_RATIO}x)')
    if ratio > TARGET_RATIO:
        print('CLAIM FAILED: per-frame cost after search grows with the map')
        return 1
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
